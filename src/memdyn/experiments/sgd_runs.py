"""Replicated training runs of a small denoiser continued from a common pre-trained state, measured
by :mod:`memdyn.protocol`: what ``diffusion-temperature`` and ``diffusion-episodes`` share.

Each of ``replicates`` independent runs (its own digits, initial weights and probes) is pre-trained
(:func:`pretrain`) for ``pretrain_time`` in t = lr x steps, so that memorization has set in; from that
state every setting continues (:func:`continue_runs`, one vectorised ensemble per learning rate,
fresh batches per setting) for ``burn_time`` and then ``window_time`` in t, every probe labelled at
every step of the window. :func:`measure` turns one setting's runs into its row: f_mem's counting
window (MSER) and whether its halves agree, and the mean memorizing episode length L at the
checkpoint spacings ``factors``, with paired bootstrap draws over runs and probes (the settings
share their runs, so differences between settings keep their correlation).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import pandas as pd
from pydantic import Field

from ..protocol import resolution, stationarity
from .base import ConfigError, TorchConfig

BOOT = 400  # bootstrap draws over runs and probes


class SGDRunsConfig(TorchConfig):
    dataset: str = Field("mnist5k-7", pattern="^(mnist5k|mnist5k-14|mnist5k-7|digits8)$", description="image dataset")
    n: int = Field(8, ge=4, le=256, description="training digits per run")
    width: int = Field(64, ge=8, le=1024, description="MLP width")
    replicates: int = Field(8, ge=2, le=64, description=(
        "independent training runs (own digits, initial weights and probes; shared by all settings)"))
    probes: int = Field(16, ge=4, le=512, description="probes per run")
    sample_steps: int = Field(5, ge=2, le=200, description="DDIM steps per sample")
    pretrain_lr: float = Field(0.1, gt=0, le=1, description="SGD learning rate of the common pre-training")
    pretrain_batch: int = Field(16, ge=1, le=4096, description="batch size of the common pre-training")
    pretrain_time: float = Field(1500.0, ge=0, le=1e6, description="pre-training length in lr * steps")
    burn_time: float = Field(20.0, gt=0, le=1e6, description="burn-in per setting, in lr * steps")
    window_time: float = Field(30.0, gt=0, le=1e6, description="counting window per setting, in lr * steps")
    factors: list[int] = Field([1, 2, 4], min_length=2, max_length=5, description=(
        "checkpoint spacings (steps) at which the episode length is measured, finest first, from 1"))
    min_exits: int = Field(20, ge=2, le=10**6, description=(
        "exits a setting's window must see to enter the claims on episode lengths (ln L is then known to about "
        "1 / sqrt(min_exits))"))


def check_runs(cfg, name: str, lr_max: float) -> None:
    """The checks every :class:`SGDRunsConfig` needs: spacings from 1, increasing, and a window of at
    least 64 steps at the largest learning rate."""
    f = cfg.factors
    if f[0] != 1 or any(b <= a for a, b in zip(f, f[1:])):
        raise ConfigError(f"invalid value for {name}.factors={f}: start at 1 and increase")
    k = round(cfg.window_time / lr_max)
    if k < 64:  # the settling check needs 32 checkpoints after a burn-in of up to half the window
        raise ConfigError(f"invalid value for {name}.window_time={cfg.window_time}: at lr={lr_max:g} the window has "
                          f"{k} steps; need at least 64 (window_time >= {64 * lr_max:g})")


def log_time(lr: float, steps: float) -> float:
    """ln(lr L): the episode length L (steps) in the time t = lr x steps (NaN when none was measured)."""
    return math.log(lr * steps) if steps > 0 and math.isfinite(steps) else math.nan


def nullable(df: pd.DataFrame) -> pd.DataFrame:
    """NA where nothing was measured (no exit in a window, no fit for too few settings)."""
    for c in df.columns:
        if df[c].dtype == float and not np.isfinite(df[c]).all():
            df[c] = pd.array([v if math.isfinite(v) else None for v in df[c]], dtype="Float64")
    return df


def _models(cfg, shape):
    from ..diffusion import ResidualMLP

    return lambda: ResidualMLP(shape, width=cfg.width)


def _data(cfg, ctx):
    import torch

    from ..diffusion import load_dataset

    return torch.stack([load_dataset(cfg.dataset, cfg.n, seed=ctx.seed_for("digits", r) % 2**31).train
                        for r in range(cfg.replicates)])


def pretrain(cfg, ctx, opt: str = "sgd", scale: float = 1.0) -> dict:
    """Each run's common pre-training (its own digits and initial weights) by ``opt`` at
    ``pretrain_lr * scale`` for ``pretrain_time * scale`` in t: the stacked weights."""
    from ..diffusion.ensemble import train_ensemble

    data = _data(cfg, ctx)
    lr = cfg.pretrain_lr * scale
    steps = round(cfg.pretrain_time * scale / lr)
    res = train_ensemble(_models(cfg, data.shape[2:]), data, steps=steps, lrs=lr, batch_sizes=cfg.pretrain_batch,
                         weights_seeds=[ctx.seed_for("weights", r) % 2**31 for r in range(cfg.replicates)],
                         batch_seeds=[ctx.seed_for("pretrain", opt, r) % 2**31 for r in range(cfg.replicates)],
                         optimizer=opt, every=1, start=steps + 1, probes=1, progress=False)
    return {f"w{i}": w.detach().numpy() for i, w in enumerate(res.model.weights)}


def continue_runs(cfg, ctx, opt: str, lr: float, scale: float, pre: dict, settings: list[tuple[int, float]],
                  after: Callable | None = None, coordinate: int | None = None) -> dict:
    """Every setting (batch size, EMA decay) at one learning rate, from each run's pre-trained state:
    the core-set labels and the memorized indicator (d1/d2 < 1/3) at every step of the window
    (members x probes x steps; member j * replicates + r is setting j of run r).

    Settings that differ only in their EMA decay share their batches: the same trajectory, sampled
    from its weights or from their average. ``after(result, members)``, if given, adds its entries
    to the output (computed from the trained ensemble, e.g. per-member measurements). ``coordinate``,
    a setting's index, adds that setting's ln(d1/d2) at every step of the window ("log_ratio", runs x
    probes x steps, float32: the coordinate :mod:`memdyn.kinetics` fits)."""
    import torch

    from ..diffusion.ensemble import train_ensemble

    data = _data(cfg, ctx)
    build = _models(cfg, data.shape[2:])
    start = round(cfg.burn_time * scale / lr)
    steps = start + round(cfg.window_time * scale / lr)
    R = cfg.replicates
    pretrained = []  # run r's pre-trained model; every setting starts from a copy of it
    for r in range(R):
        m = build()
        with torch.no_grad():
            for i, p in enumerate(m.parameters()):
                p.copy_(torch.from_numpy(pre[f"w{i}"][r]))
        pretrained.append(m)
    members = [(b, d, r) for b, d in settings for r in range(R)]
    res = train_ensemble(build, data.repeat(len(settings), *([1] * (data.ndim - 1))), steps=steps, lrs=lr,
                         batch_sizes=[b for b, _, _ in members], weights_seeds=None,
                         batch_seeds=[ctx.seed_for("batches", opt, lr, b, r) % 2**31 for b, _, r in members],
                         probe_seeds=[ctx.seed_for("probes", r) % 2**31 for _, _, r in members],
                         optimizer=opt, every=1, start=start, probes=cfg.probes, sample_steps=cfg.sample_steps,
                         progress=False, start_from=[pretrained[r] for _, _, r in members],
                         ema=[d for _, d, _ in members])
    states = np.stack([mo.states() for mo in res.monitors]).astype(np.int16)
    memorized = np.stack([mo.history()["memorized"].to_numpy().reshape(-1, cfg.probes).T for mo in res.monitors])
    out = {"states": states, "memorized": memorized.astype(np.int8)}
    if coordinate is not None:
        mons = res.monitors[coordinate * R:(coordinate + 1) * R]
        out["log_ratio"] = np.stack([np.log(np.maximum(mo.history()["ratio"].to_numpy(), 1e-12)).reshape(-1, cfg.probes).T
                                     for mo in mons]).astype(np.float32)
    if after is not None:
        out.update(after(res, members))
    return out


def measure(cfg, lr: float, runs, mem, /, **keys) -> tuple[dict, np.ndarray]:
    """One setting's row (``keys`` first) and the paired bootstrap draws of ln(lr L) at every spacing
    (BOOT x spacings), from its runs' core labels ``runs`` and memorized indicators ``mem`` (one
    probes x steps array per run).

    L is the mean episode length at the finest spacing; the library's convergence rule (the two
    finest spacings agree within Z_TOL errors of their paired difference) is reported, not used to
    drop the setting: the experiments check the resolution on their results."""
    fm = f_mem(mem)
    row = dict(keys)
    st = stationarity(fm, runs=mem, n_boot=BOOT, seed=0)
    row.update({"f_mem": float(fm[st.start:].mean()), "window_start": st.start, "halves_z": st.z,
                "halves_diff": st.halves[1] - st.halves[0], "halves_se": st.se, "settled": st.settled})
    try:
        rz = resolution(runs, 1.0, factors=cfg.factors, free=cfg.n, n_boot=BOOT, seed=0)
    except ValueError:  # no completed episode at some spacing: nothing to measure
        row.update({"mean_length": math.nan, "exits": 0, "converged": False,
                    "log_time": math.nan, "log_time_se": math.nan})
        return row, np.full((BOOT, len(cfg.factors)), np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        boot = np.log(lr * rz.boot)
    row.update({"mean_length": float(rz.mean[0]), "mean_length_se": float(rz.se[0]), "exits": int(rz.exits[0]),
                "converged": rz.converged,
                "resolution_z": rz.difference_z, "log_time": log_time(lr, rz.mean[0]),
                "log_time_se": float(np.nanstd(boot[:, 0], ddof=1)),
                **{f"length_at_{int(s)}": float(m) for s, m in zip(rz.spacings, rz.mean)}})
    return row, boot


def f_mem(mem) -> np.ndarray:
    """f_mem at every step of the window: the memorized share over the runs' probes."""
    return np.mean([m.mean(axis=0) for m in mem], axis=0)
