"""The monitor inside Lightning and diffusers training, with the real packages."""

import importlib.util
from pathlib import Path

import pytest
import torch

from memdyn.diffusion import NoiseSchedule, ResidualMLP, ddim_sampler, load_dataset
from memdyn.monitor import MemorizationMonitor

ROOT = Path(__file__).resolve().parents[1]


def _lightning_fit(monitor, tmp_path, steps=6):
    import lightning.pytorch as pl

    from memdyn.diffusion import MemorizationCallback

    data = load_dataset("digits8", 16).train
    sched = NoiseSchedule()

    class Module(pl.LightningModule):
        prediction = "x0"

        def __init__(self):
            super().__init__()
            self.net = ResidualMLP(data.shape[1:], width=32)

        def forward(self, x, t):
            return self.net(x, t)

        def training_step(self, batch, _):
            x0 = batch[0]
            t = torch.randint(0, sched.steps, (x0.shape[0],))
            eps = torch.randn_like(x0)
            a, s = sched.coefficients(t, x0)
            return (self(a * x0 + s * eps, t) - x0).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-3)

    pl.seed_everything(0, verbose=False)
    module = Module()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data), batch_size=4, shuffle=True)
    callbacks = [MemorizationCallback(monitor)] if monitor is not None else []
    trainer = pl.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
                         default_root_dir=tmp_path)
    trainer.fit(module, loader)
    return module


def test_lightning_callback(tmp_path):
    pytest.importorskip("lightning")
    data = load_dataset("digits8", 16).train
    mon = MemorizationMonitor(data, ddim_sampler(steps=3), probes=4, every=3)
    with_monitor = _lightning_fit(mon, tmp_path)
    without = _lightning_fit(None, tmp_path)
    for a, b in zip(with_monitor.state_dict().values(), without.state_dict().values()):
        assert torch.equal(a, b)
    assert mon.history()["step"].unique().tolist() == [0, 3, 6]


def test_lightning_callback_rejects_a_bad_sampler_before_training(tmp_path):
    pytest.importorskip("lightning")
    data = load_dataset("digits8", 16).train
    mon = MemorizationMonitor(data, lambda m, z: z[:, 0], probes=4, every=3)
    with pytest.raises(ValueError, match="sampler returned shape"):
        _lightning_fit(mon, tmp_path)


def _example():
    spec = importlib.util.spec_from_file_location("diffusers_mnist", ROOT / "examples" / "diffusers_mnist.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_diffusers_training_loop_is_unchanged_by_the_monitor(tmp_path):
    pytest.importorskip("diffusers")
    ex = _example()
    a, mon = ex.main(steps=4, every=2, out=tmp_path, sample_steps=3, probes=3)
    b, none = ex.main(steps=4, every=2, monitor=False)
    assert none is None
    for p, q in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(p, q)
    hist = mon.history()
    assert hist["step"].unique().tolist() == [0, 2, 4] and (tmp_path / "history.parquet").exists()


def test_diffusers_sampler_leaves_the_scheduler_alone_and_is_deterministic():
    diffusers = pytest.importorskip("diffusers")
    from memdyn.diffusion import diffusers_sampler

    sched = diffusers.DDPMScheduler(num_train_timesteps=100)
    before = dict(sched.config)
    model = diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
                                  block_out_channels=(8, 16), norm_num_groups=4,
                                  down_block_types=("DownBlock2D", "DownBlock2D"),
                                  up_block_types=("UpBlock2D", "UpBlock2D")).eval()
    sampler = diffusers_sampler(sched, num_inference_steps=4)
    z = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        x1, x2 = sampler(model, z), sampler(model, z)
    assert torch.equal(x1, x2) and x1.shape == z.shape
    assert dict(sched.config) == before and sched.num_inference_steps is None
    with pytest.raises(ValueError, match="num_inference_steps"):
        diffusers_sampler(sched, num_inference_steps=0)
