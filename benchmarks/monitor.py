"""The memorization monitor's cost: its share of training time, and its nearest-neighbour search
against faiss.

Reproduce with (from the repository root, after `make test` built .venv):

    .venv/bin/python benchmarks/monitor.py

(1) Overhead: the `memdyn diffusion train` default model (residual MLP, width 256, x0 prediction,
    Adam, batch 64) on 64 MNIST digits at 28 x 28, trained for --steps steps with and without the
    monitor at its default settings (64 probes, DDIM with 20 steps; `every` as given, default 500
    like the monitor's own default). Printed: the training time, the time of the monitor's updates
    alone and their share (target <= 5 %), and the end-to-end difference (which on a shared
    2-core machine carries a few per cent of timing noise).
(2) Search: the monitor's d1/d2 needs the two nearest training items of each sample. memdyn's
    chunked torch search (`memdyn.metrics.knn`, backend 'torch') is timed against faiss
    `IndexFlatL2` (exact search, same data, float32) for 64 probes and for 4,096 queries against
    5,000 MNIST digits; printed: seconds per call and the ratio torch / faiss (target <= 1.5).
(3) History: writing ``history.parquet`` at a checkpoint, timed at the 10th and at the 8,000th
    checkpoint of 64 probes (a monitor resumed from a synthetic history, a stand-in sampler):
    the cost stays flat, since only the last part file is rewritten.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def overhead(steps: int, every: int, repeats: int) -> None:
    from memdyn.diffusion import NoiseSchedule, ResidualMLP, ddim_sampler, load_dataset, train
    from memdyn.monitor import MemorizationMonitor

    data = load_dataset("mnist5k", 64).train
    sched = NoiseSchedule()

    def run(with_monitor: bool) -> float:
        torch.manual_seed(0)
        model = ResidualMLP(data.shape[1:], width=256)
        mon = MemorizationMonitor(data, ddim_sampler(sched, steps=20), probes=64, every=every) if with_monitor else None
        t = time.perf_counter()
        train(model, data, steps=steps, lr=1e-3, schedule=sched, monitor=mon, progress=False)
        return time.perf_counter() - t

    run(False)  # warm-up
    plain = min(run(False) for _ in range(repeats))
    monitored = min(run(True) for _ in range(repeats))
    # the monitor's own time, measured alone: its updates at the checkpoints of a run
    torch.manual_seed(0)
    model = ResidualMLP(data.shape[1:], width=256)
    mon = MemorizationMonitor(data, ddim_sampler(sched, steps=20), probes=64, every=every)
    checkpoints = steps // every + 1
    t = time.perf_counter()
    for k in range(checkpoints):
        mon.update(k * every, model)
    alone = time.perf_counter() - t
    print(f"overhead: {steps} steps, monitor every {every} ({checkpoints} checkpoints): training {plain:.2f} s; the "
          f"monitor's updates alone {alone:.2f} s = {alone / plain:.1%} of training (target <= 5%); end to end with "
          f"the monitor {monitored:.2f} s ({(monitored - plain) / plain:+.1%}, includes timing noise)")


def search(repeats: int) -> None:
    import faiss

    from memdyn.diffusion import load_dataset
    from memdyn.metrics import knn

    d = load_dataset("mnist5k", 4900, held_out=100)
    train = d.train.reshape(4900, -1)
    for queries in (64, 4096):
        g = torch.Generator().manual_seed(0)
        x = train[torch.randint(0, 4900, (queries,), generator=g)] + 0.3 * torch.randn(queries, 784, generator=g)

        def ours():
            return knn(x, train, 2, backend="torch")

        def theirs():
            index = faiss.IndexFlatL2(784)
            index.add(np.ascontiguousarray(train.numpy()))
            return index.search(np.ascontiguousarray(x.numpy()), 2)

        ours(), theirs()
        t_ours = min(_timed(ours) for _ in range(repeats))
        t_faiss = min(_timed(theirs) for _ in range(repeats))
        same = np.array_equal(ours()[0], theirs()[1])
        print(f"search: {queries} queries x 4900 digits: memdyn torch {t_ours * 1e3:.1f} ms, faiss IndexFlatL2 "
              f"{t_faiss * 1e3:.1f} ms, ratio {t_ours / t_faiss:.2f} (target <= 1.5); same neighbours: {same}")


def history_writes(repeats: int) -> None:
    import tempfile

    from memdyn.monitor import MemorizationMonitor

    data = torch.rand(32, 1, 8, 8) * 2 - 1

    def sampler(model, noise):
        return noise.clamp(-1, 1)

    for k in (10, 8000):
        with tempfile.TemporaryDirectory() as d:
            mon = MemorizationMonitor(data, sampler, probes=64, every=1, out=d)
            for step in range(min(k, 300)):  # real rows, then repeated to k checkpoints
                mon.update(step, None)
            state = mon.state_dict()
            rows = [dict(state["rows"][i % len(state["rows"])], step=np.full(64, i)) for i in range(k)]
            mon.load_state_dict({**state, "rows": rows, "labels": [state["labels"][0]] * k})
            mon.update(k, None)  # writes every part once
            t = min(_timed(lambda: mon.update(k + 1 + r, None)) for r in range(repeats))
            print(f"history: checkpoint {k + 1} of 64 probes: update incl. write {t * 1e3:.1f} ms")


def _timed(f) -> float:
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--every", type=int, default=500)
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args()
    search(max(3, a.repeats))
    history_writes(max(3, a.repeats))
    overhead(a.steps, a.every, a.repeats)
