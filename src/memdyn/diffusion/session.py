"""One monitored training run, as ``memdyn diffusion train`` runs it: a validated config, the
training with the monitor attached, resumable checkpoints, and a report (f_mem over training with
its CI, the memorization raster of the probes, sample grids beside their nearest training items).
"""

from __future__ import annotations

import base64
import html
import json
import time
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..store import RunStore, atomic_write
from .data import DATASETS, load_dataset
from .models import EmpiricalOptimalDenoiser, ResidualMLP, SmallUNet
from .schedule import NoiseSchedule, ddim_sampler

__all__ = ["TrainConfig", "TrainRun", "train_run"]


class TrainConfig(BaseModel):
    """Settings of a monitored training run (every field validated; unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: Literal[tuple(DATASETS)] = Field("mnist5k", description="offline dataset")
    n: int = Field(64, ge=2, description="training items (class balanced)")
    model: Literal["mlp", "unet", "optimal"] = Field("mlp", description="residual MLP, small U-Net, or the "
                                                    "empirical-optimal denoiser (no training)")
    prediction: Literal["x0", "v", "eps"] = Field("x0", description="what the network predicts")
    width: int = Field(256, ge=8, description="MLP width / U-Net base channels")
    steps: int = Field(1500, ge=0, description="optimizer steps")
    lr: float = Field(1e-3, gt=0, description="constant learning rate")
    optimizer: Literal["adam", "sgd"] = "adam"
    batch: int = Field(64, ge=1, description="batch size")
    ema: Optional[float] = Field(None, gt=0, lt=1, description="EMA decay (the monitor samples the EMA model)")
    every: int = Field(100, ge=1, description="steps between checkpoints of the monitor")
    probes: int = Field(64, ge=1, description="probe noises")
    sample_steps: int = Field(20, ge=1, le=1000, description="DDIM steps per sample")
    seed: int = Field(0, ge=0, description="seeds the data subset, the initial weights, batches and probes")


def config_error(e: ValidationError) -> str:
    """One line naming each bad field and what is allowed."""
    parts = []
    for err in e.errors():
        key = ".".join(str(p) for p in err["loc"])
        parts.append(f"{key}: {err['msg']} (got {err.get('input')!r})")
    return "; ".join(parts)


class TrainRun:
    """The result of :func:`train_run`: the run directory and the monitor's tables."""

    def __init__(self, out: Path, monitor, losses: list, seconds: float):
        self.out, self.monitor, self.losses, self.seconds = out, monitor, losses, seconds

    @property
    def f_mem(self):
        return self.monitor.f_mem()


def _build(cfg: TrainConfig, data):
    schedule = NoiseSchedule()
    if cfg.model == "optimal":
        return EmpiricalOptimalDenoiser(data.train, schedule), schedule
    if cfg.model == "unet" and len(data.shape) != 3:
        raise ValueError(f"model 'unet' needs image data; dataset {cfg.dataset!r} has items shaped {data.shape}")
    with torch.random.fork_rng(devices=[]):  # initial weights from the seed, the caller's generator untouched
        torch.manual_seed(cfg.seed)
        if cfg.model == "unet":
            return SmallUNet(data.shape, base=cfg.width, prediction=cfg.prediction), schedule
        return ResidualMLP(data.shape, width=cfg.width, prediction=cfg.prediction), schedule


def train_run(cfg: TrainConfig, out, *, progress: bool = True) -> TrainRun:
    """Train with the memorization monitor attached and write the run directory.

    ``out`` receives config.json, checkpoint.pt (resumed when the same config is run again),
    history.parquet (one row per probe and checkpoint), f_mem.parquet, episodes.parquet,
    figures and report.html.
    """
    from ..monitor import MemorizationMonitor
    from .train import train

    store = RunStore(out)
    old = store.read_json("config.json")
    if old is not None and old != cfg.model_dump():
        changed = sorted(k for k in old if old.get(k) != cfg.model_dump().get(k))
        raise ValueError(f"{out} holds a run with other settings ({', '.join(changed)}); use another --out")
    store.write_json("config.json", cfg.model_dump())
    data = load_dataset(cfg.dataset, cfg.n, seed=cfg.seed)
    model, schedule = _build(cfg, data)
    monitor = MemorizationMonitor(data.train, ddim_sampler(schedule, steps=cfg.sample_steps), probes=cfg.probes,
                                  every=cfg.every, seed=cfg.seed, out=store.root, keep_samples=_shown_steps(cfg))
    monitor.check(model)
    t0 = time.perf_counter()
    if cfg.model == "optimal":
        monitor.update(0, model)
        losses = []
    else:
        res = train(model, data.train, steps=cfg.steps, lr=cfg.lr, schedule=schedule, optimizer=cfg.optimizer,
                    batch_size=cfg.batch, ema=cfg.ema, seed=cfg.seed, monitor=monitor,
                    checkpoint=store.path("checkpoint.pt"), checkpoint_every=cfg.every, progress=progress)
        losses = res.losses
    seconds = time.perf_counter() - t0
    run = TrainRun(store.root, monitor, losses, seconds)
    _write_outputs(store, cfg, data, run)
    return run


def _shown_steps(cfg: TrainConfig) -> list[int]:
    """Checkpoints whose samples the report shows: about a third, two thirds and all of training."""
    last = cfg.steps // cfg.every * cfg.every
    return sorted({round(last * f / cfg.every) * cfg.every for f in (1 / 3, 2 / 3, 1.0)})


def _write_outputs(store: RunStore, cfg: TrainConfig, data, run: TrainRun) -> None:
    mon = run.monitor
    fm = mon.f_mem()
    store.write_table("f_mem.parquet", fm)
    store.write_table("episodes.parquet", mon.episodes().to_frame())
    figs = [("f_mem.png", _f_mem_figure(fm), "Share of probes whose sample copies a training item (d1/d2 < 1/3) at "
                                            "each checkpoint, with a 95% bootstrap interval over probes."),
            ("raster.png", _raster_figure(mon, cfg), "Memorization raster: one row per probe, one column per "
                                                    "checkpoint; coloured while the probe's sample sits in the core "
                                                    "of a training item (colour = which item), white while free."),
            ("samples.png", _samples_figure(mon, data), "The first probes' samples at three checkpoints (top of "
                                                       "each pair of rows) above their nearest training items "
                                                       "(bottom); a red frame marks a memorized sample.")]
    import matplotlib.pyplot as plt

    for name, fig, _ in figs:
        store.write_figure(name, fig)
        plt.close(fig)
    ep = mon.episodes()
    n = cfg.n
    mem = ep.state < n
    summary = {"checkpoints": int(len(fm)), "f_mem_final": float(fm["f_mem"].iloc[-1]) if len(fm) else None,
               "f_mem_first": float(fm["f_mem"].iloc[0]) if len(fm) else None, "seconds": run.seconds,
               "memorized_episodes": int(mem.sum()), "mean_memorized_episode_checkpoints":
               float(ep.length[mem].mean()) if mem.any() else None}
    store.write_json("summary.json", summary)
    _write_report(store, cfg, summary, figs)


def _f_mem_figure(fm):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    ax.fill_between(fm["step"], fm["ci_low"], fm["ci_high"], alpha=0.25, color="C0", label="95% CI")
    ax.plot(fm["step"], fm["f_mem"], "o-", color="C0", ms=3, label="f_mem")
    ax.set(xlabel="training step", ylabel="share of probes memorized", ylim=(-0.02, 1.02))
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def _raster_figure(mon, cfg):
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    S = mon.states().astype(float)
    S[(S < 0) | (S >= cfg.n)] = np.nan
    steps = mon.history()["step"].unique()
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    cmap = ListedColormap(plt.get_cmap("tab20")(np.linspace(0, 1, 20)))
    cmap.set_bad("white")
    ext = (steps[0] - mon.every / 2, steps[-1] + mon.every / 2, S.shape[0] - 0.5, -0.5) if len(steps) else None
    ax.imshow(np.ma.masked_invalid(S % 20), aspect="auto", interpolation="nearest", cmap=cmap, vmin=0, vmax=19,
              extent=ext)
    ax.set(xlabel="training step", ylabel="probe")
    fig.tight_layout()
    return fig


def _samples_figure(mon, data, show: int = 16):
    import matplotlib.pyplot as plt

    hist = mon.history()
    shown = sorted(mon.samples) or [int(hist["step"].max())]
    k = min(show, mon.probes)
    fig, axes = plt.subplots(2 * len(shown), k, figsize=(0.75 * k, 1.75 * len(shown)), squeeze=False)
    for row, step in enumerate(shown):
        samples = mon.samples.get(step, mon.last_samples)
        at = hist[hist["step"] == step]
        axes[2 * row, 0].set_ylabel(f"step {step}", fontsize=7)
        for i in range(k):
            _pair(axes[2 * row:2 * row + 2, i], samples[i], data.train[int(at["nearest"].iloc[i])],
                  bool(at["memorized"].iloc[i]))
    fig.tight_layout(pad=0.2)
    return fig


def _pair(axes, sample, nearest, memorized: bool) -> None:
    """A sample above its nearest training item; a red frame when memorized."""
    for r, img in enumerate((sample, nearest)):
        a = axes[r]
        arr = img.numpy()
        arr = arr[0] if arr.ndim == 3 and arr.shape[0] == 1 else (arr.transpose(1, 2, 0) if arr.ndim == 3 else
                                                                  arr.reshape(1, -1))
        a.imshow((arr + 1) / 2, cmap="gray", vmin=0, vmax=1, interpolation="nearest", aspect="auto")
        a.set_xticks([])
        a.set_yticks([])
        if r == 0 and memorized:
            for s in a.spines.values():
                s.set_color("red")
                s.set_linewidth(2)


def _write_report(store: RunStore, cfg: TrainConfig, summary: dict, figs) -> None:
    from ..report import _CSS

    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>memdyn diffusion run</title><style>{_CSS}"
             "</style></head><body><h1>memdyn: memorization during diffusion training</h1>",
             f"<p class='sub'>{html.escape(str(store.root.resolve()))} &middot; {cfg.dataset}, n = {cfg.n}, "
             f"{cfg.model} ({cfg.prediction}), {cfg.steps} steps at lr {cfg.lr:g} &middot; {summary['seconds']:.1f} s</p>",
             "<p>Each probe is a fixed noise turned into a sample by deterministic DDIM at every checkpoint, so a "
             "change of a probe's sample is a change of the model. A sample is memorized when its distance to the "
             "nearest training item is below a third of its distance to the second nearest (d1/d2 &lt; 1/3). "
             f"f_mem went from {summary['f_mem_first']:.2f} at the first checkpoint to {summary['f_mem_final']:.2f} "
             f"at the last; {summary['memorized_episodes']} episodes on a training item were seen.</p>"]
    for name, _, caption in figs:
        data = base64.b64encode(store.path(name).read_bytes()).decode()
        parts.append(f"<figure><img alt='{name}' src='data:image/png;base64,{data}'><figcaption>"
                     f"{html.escape(caption)}</figcaption></figure>")
    parts.append("<h2>Configuration</h2><pre>" + html.escape(json.dumps(cfg.model_dump(), indent=2)) + "</pre>")
    parts.append("</body></html>")
    atomic_write(store.path("report.html"), "\n".join(parts).encode())
