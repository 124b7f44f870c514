"""The memorization monitor: results, no side effects on training, errors, resume, rank 0 only."""

import random

import numpy as np
import pandas as pd
import pytest
import torch

from memdyn.diffusion import ResidualMLP, ddim_sampler, load_dataset
from memdyn.episodes import detect
from memdyn.monitor import MemorizationMonitor


def _noisy_sampler(model, noise):
    # a sampler that reads every global generator: the monitor must put them back
    torch.rand(3)
    np.random.rand(3)
    random.random()
    return model(noise, torch.full((noise.shape[0],), 500, dtype=torch.int64)).clamp(-1, 1)


class Dropping(torch.nn.Module):
    """A denoiser with dropout, so that train/eval mode changes its output."""

    prediction = "x0"

    def __init__(self, shape):
        super().__init__()
        self.net = ResidualMLP(shape, width=32)
        self.drop = torch.nn.Dropout(0.2)

    def forward(self, x, t):
        return self.drop(self.net(x, t))


def _loop(data, monitor=None, steps=12):
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    model = Dropping(data.shape[1:])
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    for step in range(steps + 1):
        if monitor is not None:
            monitor.update(step, model)
        if step == steps:
            break
        x = data[torch.randint(0, data.shape[0], (8,))] + 0.1 * float(np.random.rand()) * random.random()
        loss = (model(x + torch.randn_like(x), torch.randint(0, 1000, (8,))) - x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def test_training_is_bit_identical_with_and_without_the_monitor(tmp_path):
    data = load_dataset("digits8", 16).train
    mon = MemorizationMonitor(data, _noisy_sampler, probes=5, every=4, out=tmp_path)
    a, b = _loop(data, mon), _loop(data)
    for p, q in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(p, q)
    assert a.training  # mode restored
    hist = mon.history()
    assert list(hist.columns) == ["step", "probe", "nearest", "d1", "d2", "ratio", "memorized", "state", "moved"]
    assert hist["step"].unique().tolist() == [0, 4, 8, 12] and len(hist) == 20
    assert np.allclose(hist["ratio"], hist["d1"] / hist["d2"])
    assert hist.loc[hist.step == 0, "moved"].isna().all() and (hist.loc[hist.step > 0, "moved"] >= 0).all()
    stored = pd.read_parquet(tmp_path / "history.parquet")
    assert len(stored) == 20 and np.array_equal(stored["nearest"], hist["nearest"])


def test_history_is_written_in_parts_that_read_back_whole(tmp_path, monkeypatch):
    """Checkpoints beyond one part: each checkpoint rewrites only the last part (earlier parts keep
    their mtime), the directory reads back as the whole history in order, a resume into a fresh
    directory writes every part, and a single-file history left by an older version is replaced."""
    import os

    import memdyn.monitor as monitor_mod

    monkeypatch.setattr(monitor_mod, "HISTORY_CHUNK", 2)
    data = load_dataset("digits8", 16).train
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "history.parquet").write_bytes(b"old single file")
    mon = MemorizationMonitor(data, _noisy_sampler, probes=3, every=2, out=tmp_path / "a")
    model = _loop(data, mon, steps=6)  # checkpoints 0, 2, 4, 6: parts {0, 2} and {4, 6}
    part0 = tmp_path / "a" / "history.parquet" / "part-000000.parquet"
    before = os.stat(part0).st_mtime_ns
    mon.update(8, model)  # a third part
    assert os.stat(part0).st_mtime_ns == before
    assert sorted(p.name for p in (tmp_path / "a" / "history.parquet").iterdir()) == [
        "part-000000.parquet", "part-000001.parquet", "part-000002.parquet"]
    hist = mon.history()
    hist["moved"] = hist["moved"].fillna(-1.0)
    assert pd.read_parquet(tmp_path / "a" / "history.parquet").equals(hist)
    fresh = MemorizationMonitor(data, _noisy_sampler, probes=3, every=2, out=tmp_path / "b")
    fresh.load_state_dict(mon.state_dict())
    fresh.update(10, model)
    back = pd.read_parquet(tmp_path / "b" / "history.parquet")
    assert back["step"].unique().tolist() == [0, 2, 4, 6, 8, 10] and len(back) == 18


def test_eval_mode_is_kept_and_samples_are_deterministic():
    data = load_dataset("digits8", 16).train
    torch.manual_seed(1)
    model = Dropping(data.shape[1:]).eval()
    mon = MemorizationMonitor(data, _noisy_sampler, probes=6, every=1)
    r1 = mon.update(0, model)
    r2 = mon.update(1, model)
    assert not model.training
    assert np.array_equal(r1["d1"], r2["d1"]) and np.allclose(r2["moved"], 0)


def test_memorized_probes_give_episodes_on_training_items():
    data = load_dataset("digits8", 10).train

    class Switch(torch.nn.Module):
        """Copies training item `target` for probes 0-2 and outputs noise otherwise."""

        def __init__(self):
            super().__init__()
            self.target = 0

        def forward(self, noise):
            out = noise.clamp(-1, 1).clone()
            out[:3] = data[self.target]
            return out

    model = Switch()
    mon = MemorizationMonitor(data, lambda m, z: m(z), probes=6, every=10)
    for step, target in zip(range(0, 60, 10), [0, 0, 0, 4, 4, 4]):
        model.target = target
        mon.update(step, model)
    assert (mon.f_mem()["f_mem"] == 0.5).all()
    ep = mon.episodes()
    assert len(ep) == len(detect(mon.states()))
    # the history's state column is the milestoned trace, checkpoint by checkpoint
    assert np.array_equal(mon.history()["state"].to_numpy().reshape(-1, 6).T, mon.states())
    mem = ep.state < 10
    assert sorted(set(ep.state[mem].tolist())) == [0, 4]
    assert (ep.length[mem] == 3).all()
    assert np.array_equal(mon.history()["nearest"].to_numpy()[:3], [0, 0, 0])
    assert mon.history()["d1"].to_numpy()[:3] == pytest.approx(0.0)


@pytest.mark.parametrize("kwargs, err, needle", [
    ({"probes": torch.zeros(4, 1, 7, 7)}, ValueError, "probes must be noise shaped"),
    ({"probes": 0}, ValueError, "probes must be"),
    ({"every": 0}, ValueError, "every must be an integer >= 1"),
    ({"every": -3}, ValueError, "every must be"),
    ({"train_data": torch.zeros(0, 1, 8, 8)}, ValueError, "at least 2 items"),
    ({"train_data": torch.zeros(1, 1, 8, 8)}, ValueError, "at least 2 items"),
    ({"sampler": "ddim"}, TypeError, "sampler must be callable"),
])
def test_bad_input_fails_before_training(kwargs, err, needle):
    args = {"train_data": torch.rand(5, 1, 8, 8), "sampler": lambda m, z: z, **kwargs}
    with pytest.raises(err, match=needle):
        MemorizationMonitor(args.pop("train_data"), args.pop("sampler"), **args)


def test_sampler_with_wrong_shape_fails_in_check():
    mon = MemorizationMonitor(torch.rand(5, 1, 8, 8), lambda m, z: z.reshape(z.shape[0], -1), probes=3)
    with pytest.raises(ValueError, match=r"sampler returned shape \(1, 64\); expected \(1, 1, 8, 8\)"):
        mon.check(torch.nn.Identity())
    with pytest.raises(ValueError, match="sampler returned shape"):
        mon.update(0, torch.nn.Identity())


def test_resume_from_state_dict_gives_the_same_history(tmp_path):
    data = load_dataset("digits8", 12).train
    torch.manual_seed(0)
    model = ResidualMLP(data.shape[1:], width=16)
    sampler = ddim_sampler(steps=3)
    full = MemorizationMonitor(data, sampler, probes=4, every=5)
    half = MemorizationMonitor(data, sampler, probes=4, every=5)
    for step in range(0, 31):
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(0.97)
        full.update(step, model)
        half.update(step, model)
        if step == 15:
            state = half.state_dict()
            half = MemorizationMonitor(data, sampler, probes=4, every=5)
            half.load_state_dict(state)
    pd.testing.assert_frame_equal(full.history(), half.history())
    with pytest.raises(ValueError, match="monitor state is for 4 probes every 5"):
        MemorizationMonitor(data, sampler, probes=3, every=5).load_state_dict(state)


def test_tensorboard_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    data = load_dataset("digits8", 8).train
    mon = MemorizationMonitor(data, lambda m, z: z.clamp(-1, 1), probes=3, every=1, out=tmp_path, tensorboard=True)
    for s in range(3):
        mon.update(s, torch.nn.Identity())
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents*"))


def _rank_worker(rank, port, out):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        data = torch.linspace(-1, 1, 4 * 16).reshape(4, 1, 4, 4)
        mon = MemorizationMonitor(data, lambda m, z: z.clamp(-1, 1), probes=3, every=2, out=f"{out}/rank{rank}")
        rows = [mon.update(s, torch.nn.Identity()) for s in range(5)]
        torch.save({"sampled": [r is not None for r in rows], "n": len(mon.history())}, f"{out}/result{rank}.pt")
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_only_rank_zero_samples_and_writes(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_rank_worker, args=(port, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = torch.load(tmp_path / "result0.pt"), torch.load(tmp_path / "result1.pt")
    assert r0 == {"sampled": [True, False, True, False, True], "n": 9}
    assert r1 == {"sampled": [False] * 5, "n": 0}
    assert (tmp_path / "rank0" / "history.parquet").exists() and not (tmp_path / "rank1").exists()


def test_between_cores_a_probe_keeps_its_last_core():
    train = 4.0 * torch.eye(4)  # four items, each pair 4 sqrt(2) apart
    path = [0.2, 0.3, 0.3, 0.45, 0.3, 0.1]  # fraction of the way from item 0 to item 1

    class Walk(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.f = 0.0

        def forward(self, noise):
            return ((1 - self.f) * train[0] + self.f * train[1]).expand(noise.shape[0], 4).clone()

    walk = Walk()
    mon = MemorizationMonitor(train, lambda m, z: m(z), probes=1, every=1)
    for step, f in enumerate(path):
        walk.f = f
        mon.update(step, walk)
    hist = mon.history()
    # d1/d2 = f / (1 - f): 0.25 core, 0.43 between, 0.82 free, 0.11 core
    assert hist["state"].tolist() == [0, 0, 0, 4, 4, 0]
    assert hist["memorized"].tolist() == [True, False, False, False, False, True]
    assert np.array_equal(mon.states()[0], hist["state"].to_numpy())
