"""A memorization monitor for any PyTorch training loop.

At every ``every``-th step the monitor turns a fixed set of probe noises into samples with the
user's ``sampler(model, noise)``, measures each sample against the training set with the same
nearest-neighbour ratio and core sets that label simulated chains
(:func:`memdyn.memorization.probe_states`), and keeps one row per probe and checkpoint. The
trace of core-set states, probes x checkpoints, goes through the same episode detection as a
simulation (:func:`memdyn.episodes.detect`), so training-time memorization episodes and their
dwell statistics come out of one pipeline.

The monitor has no side effects on training: it samples under ``torch.no_grad()``, restores the
model's train/eval mode, and saves and restores the global torch, CUDA, NumPy and Python random
states around the sampler, so a run with the monitor is bit-identical to one without. Under
``torch.distributed`` only rank 0 samples and writes.

Example
-------
>>> import torch
>>> from memdyn.monitor import MemorizationMonitor
>>> train = torch.rand(16, 1, 7, 7) * 2 - 1
>>> def sampler(model, noise):      # a stand-in for a diffusion sampler
...     return model(noise)
>>> mon = MemorizationMonitor(train, sampler, probes=8, every=10)
>>> model = torch.nn.Identity()
>>> for step in range(0, 31):
...     _ = mon.update(step, model)  # samples at steps 0, 10, 20, 30
>>> mon.history()["step"].unique().tolist()
[0, 10, 20, 30]
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .episodes import Episodes, core_sets, detect
from .memorization.probes import probe_states
from .stats import bootstrap_ci

__all__ = ["MemorizationMonitor"]

_COLUMNS = ("step", "probe", "nearest", "d1", "d2", "ratio", "memorized", "state", "moved")
#: checkpoints per part file of history.parquet: a checkpoint rewrites only the last part, so writing
#: the history costs the same at the 10,000th checkpoint as at the first
HISTORY_CHUNK = 256


def _rank() -> int:
    dist = torch.distributed
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class _RandomState:
    """Saves every global random state on entry and puts it back on exit."""

    def __enter__(self):
        self.torch = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
        self.numpy = np.random.get_state()
        self.python = random.getstate()

    def __exit__(self, *exc):
        torch.set_rng_state(self.torch)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)
        np.random.set_state(self.numpy)
        random.setstate(self.python)
        return False


class MemorizationMonitor:
    """Tracks which probes' samples copy a training item, checkpoint by checkpoint.

    Parameters
    ----------
    train_data : Tensor (n >= 2, ...)
        The training items, shaped as the sampler's outputs.
    sampler : callable
        ``sampler(model, noise)`` -> Tensor (probes, ...) of samples, deterministic given the noise
        (e.g. :func:`memdyn.diffusion.ddim_sampler`, :func:`memdyn.diffusion.diffusers_sampler`).
    probes : int or Tensor
        Number of probes (their noise is :func:`memdyn.diffusion.probe_noise` of ``seed``, shaped
        like one training item), or the noise itself, (probes, *item shape).
    every : int
        Sample when ``step`` is a multiple of this (>= 1).
    seed : int
        Seed of the probe noise.
    out : path, optional
        Directory for ``history.parquet`` and, with ``tensorboard=True``, TensorBoard scalars
        (f_mem, median d1/d2). ``history.parquet`` is a Parquet dataset (a directory of part files
        of HISTORY_CHUNK checkpoints each; ``pandas.read_parquet`` reads it whole): a checkpoint
        atomically rewrites only the last part, so the cost per checkpoint stays constant.
    memorized_below, enter, free : float
        Thresholds of :func:`memdyn.memorization.probe_states`: memorized when d1/d2 < 1/3; core
        sets entered below ``enter`` (default: the same 1/3) and above ``free`` (0.6).
    device : str or torch.device, optional
        Where the probe noise lives (default: the training data's device).
    backend : {'torch', 'faiss', 'auto'}
        Nearest-neighbour search (:func:`memdyn.metrics.knn`; same answers). The default 'torch'
        matches faiss at the monitor's probe counts and starts no OpenMP threads that would
        compete with training for cores; 'faiss' pays off for large training sets.
    keep_samples : iterable of int
        Steps whose samples are kept in :attr:`samples` (on the CPU) for figures; the latest
        checkpoint's samples are always in :attr:`last_samples`.
    """

    def __init__(self, train_data, sampler, *, probes=64, every: int = 500, seed: int = 0, out=None,
                 tensorboard: bool = False, memorized_below: float = 1 / 3, enter: float | None = None,
                 free: float = 0.6, device=None, backend: str = "torch", keep_samples=()):
        from .diffusion.schedule import probe_noise

        train = torch.as_tensor(train_data)
        if train.ndim < 2 or train.shape[0] < 2:
            raise ValueError(f"train_data must hold at least 2 items, shaped (n, ...), got shape {tuple(train.shape)}")
        if not train.is_floating_point():
            raise ValueError(f"train_data must be floating point, got {train.dtype}")
        if not callable(sampler):
            raise TypeError(f"sampler must be callable as sampler(model, noise), got {type(sampler).__name__}")
        if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
            raise ValueError(f"every must be an integer >= 1 (steps between checkpoints), got {every!r}")
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
        self.item_shape = tuple(train.shape[1:])
        if isinstance(probes, torch.Tensor):
            if tuple(probes.shape[1:]) != self.item_shape or probes.ndim != train.ndim or probes.shape[0] < 1:
                raise ValueError(f"probes must be noise shaped (probes, {', '.join(map(str, self.item_shape))}) like "
                                 f"the training items, got {tuple(probes.shape)}")
            noise = probes.detach().clone()
        else:
            if isinstance(probes, bool) or not isinstance(probes, (int, np.integer)) or probes < 1:
                raise ValueError(f"probes must be an integer >= 1 or a noise tensor, got {probes!r}")
            noise = probe_noise(int(probes), self.item_shape, int(seed))
        self.device = torch.device(device) if device is not None else train.device
        self.noise = noise.to(self.device, train.dtype)
        self.train = train.detach()
        self.sampler, self.every, self.seed = sampler, int(every), int(seed)
        self.thresholds = {"memorized_below": memorized_below, "enter": enter, "free": free}
        probe_states(self.train[:1].reshape(1, -1), self.train[:2].reshape(2, -1), **self.thresholds)  # validate
        self.backend = backend
        self.out = Path(out) if out is not None else None
        self.tensorboard = bool(tensorboard)
        self._writer = None
        self._rows: list[dict[str, np.ndarray]] = []
        self._written: set[int] = set()  # complete parts of history.parquet on disk
        self._previous: torch.Tensor | None = None
        self._labels: list[np.ndarray] = []
        self.last_samples: torch.Tensor | None = None
        self.keep_samples = {int(k) for k in keep_samples}
        self.samples: dict[int, torch.Tensor] = {}

    # -- the hook ----------------------------------------------------------------------------------
    @property
    def probes(self) -> int:
        return int(self.noise.shape[0])

    @property
    def last(self) -> float | None:
        """f_mem at the latest checkpoint (None before the first)."""
        return float(self._rows[-1]["memorized"].mean()) if self._rows else None

    def check(self, model) -> torch.Tensor:
        """Run the sampler once on the first probe and check the sample's shape and values (call
        before training to fail early; :meth:`update` does the same on every call)."""
        return self._sample(model, self.noise[:1])

    def _sample(self, model, noise) -> torch.Tensor:
        wrappers = (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)
        module = model.module if isinstance(model, wrappers) else model  # rank 0 samples alone, without collectives
        mode = module.training if isinstance(module, torch.nn.Module) else None
        try:
            with _RandomState(), torch.no_grad():
                if mode is not None:
                    module.eval()
                out = self.sampler(module, noise)
        finally:
            if mode is not None:
                module.train(mode)
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"sampler must return a Tensor, got {type(out).__name__}")
        want = (noise.shape[0],) + self.item_shape
        if tuple(out.shape) != want:
            raise ValueError(f"sampler returned shape {tuple(out.shape)}; expected {want} (probes, *training item "
                             f"shape)")
        if not torch.isfinite(out).all():
            raise FloatingPointError("sampler returned non-finite samples")
        return out.detach()

    def update(self, step: int, model) -> dict | None:
        """Sample and measure when ``step`` is a multiple of ``every`` (on rank 0); returns the
        checkpoint's rows (a dict of arrays) or None when nothing was sampled."""
        if step % self.every or _rank() != 0:
            return None
        return self._measure(step, self._sample(model, self.noise))  # _sample has checked them

    def record(self, step: int, samples: torch.Tensor) -> dict:
        """Measure the probes' samples at ``step``, taken by the caller (who must have sampled the
        probes' noise :attr:`noise`, in order, deterministically), e.g. many models sampled at once;
        :meth:`update` samples and then records. Returns the checkpoint's rows."""
        want = (self.probes,) + self.item_shape
        if tuple(samples.shape) != want:
            raise ValueError(f"samples must be shaped {want} (probes, *training item shape), got {tuple(samples.shape)}")
        if not torch.isfinite(samples).all():
            raise FloatingPointError(f"non-finite samples at step {step}")
        return self._measure(step, samples.detach())

    def _measure(self, step: int, samples: torch.Tensor) -> dict:
        flat = samples.reshape(samples.shape[0], -1).to(self.train.device, self.train.dtype)
        st = probe_states(flat, self.train.reshape(self.train.shape[0], -1), backend=self.backend, **self.thresholds)
        moved = (np.full(self.probes, np.nan) if self._previous is None
                 else (flat - self._previous).double().pow(2).sum(1).sqrt().cpu().numpy())
        self._previous = flat.clone()
        self.last_samples = samples.cpu()
        if int(step) in self.keep_samples:
            self.samples[int(step)] = self.last_samples
        self._labels.append(st.label)
        # milestoning, one checkpoint at a time: keep the last core outside every core
        state = st.label if len(self._labels) == 1 else np.where(st.label >= 0, st.label, self._rows[-1]["state"])
        row = {"step": np.full(self.probes, int(step), dtype=np.int64), "probe": np.arange(self.probes),
               "nearest": st.nearest, "d1": st.d1, "d2": st.d2, "ratio": st.ratio, "memorized": st.memorized,
               "state": state, "moved": moved}
        self._rows.append(row)
        self._write(step, st)
        return row

    # -- results -----------------------------------------------------------------------------------
    def history(self) -> pd.DataFrame:
        """One row per probe and checkpoint: step, probe, nearest (training index), d1, d2,
        ratio = d1/d2, memorized (ratio < 1/3), state (core set: i in the core of training item
        i, n free, -1 before the first core), moved (distance of the sample from the probe's
        previous sample; NaN at the first checkpoint)."""
        if not self._rows:
            return pd.DataFrame({c: pd.Series(dtype="float64") for c in _COLUMNS})
        return pd.DataFrame({c: np.concatenate([r[c] for r in self._rows]) for c in _COLUMNS})

    def f_mem(self, *, level: float = 0.95, n_boot: int = 2000) -> pd.DataFrame:
        """Share of memorized probes per checkpoint with a bootstrap CI over probes."""
        rows = []
        for r in self._rows:
            lo, hi = bootstrap_ci(r["memorized"].astype(float), level=level, n_boot=n_boot, seed=self.seed)
            rows.append({"step": int(r["step"][0]), "f_mem": float(r["memorized"].mean()), "ci_low": lo, "ci_high": hi})
        return pd.DataFrame(rows, columns=["step", "f_mem", "ci_low", "ci_high"])

    def states(self) -> np.ndarray:
        """Core-set states, probes x checkpoints (see :meth:`history`)."""
        if not self._labels:
            return np.empty((self.probes, 0), dtype=np.int64)
        return core_sets(np.stack(self._labels, axis=1))

    def episodes(self) -> Episodes:
        """Core-set episodes per probe, in checkpoints (multiply lengths by ``every`` for steps):
        state i < n is a stay on training item i, state n (the training-set size) a free stay."""
        return detect(self.states())

    # -- persistence -------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything needed to resume: the history so far and the previous samples."""
        return {"rows": [dict(r) for r in self._rows], "labels": list(self._labels), "every": self.every,
                "seed": self.seed, "noise": self.noise.cpu(), "samples": dict(self.samples),
                "previous": None if self._previous is None else self._previous.cpu()}

    def load_state_dict(self, state: dict) -> None:
        if tuple(state["noise"].shape) != tuple(self.noise.shape) or int(state["every"]) != self.every:
            raise ValueError(f"monitor state is for {tuple(state['noise'].shape)[0]} probes every {state['every']} "
                             f"steps; this monitor has {self.probes} every {self.every}")
        self._rows = [dict(r) for r in state["rows"]]
        self._written = set()
        self._labels = list(state["labels"])
        self.samples = dict(state.get("samples", {}))
        self.noise = state["noise"].to(self.device, self.noise.dtype)
        prev = state["previous"]
        self._previous = None if prev is None else prev.to(self.train.device, self.train.dtype)

    def _write(self, step: int, st) -> None:
        if self.out is None:
            return
        from .store import RunStore

        store = RunStore(self.out)
        if store.path("history.parquet").is_file():
            store.path("history.parquet").unlink()  # a single-file history left by an older version
        last = (len(self._rows) - 1) // HISTORY_CHUNK
        # the last part is rewritten at each checkpoint; earlier ones once (all of them after a resume)
        for part in [p for p in range(last) if p not in self._written] + [last]:
            rows = self._rows[part * HISTORY_CHUNK:(part + 1) * HISTORY_CHUNK]
            hist = pd.DataFrame({c: np.concatenate([r[c] for r in rows]) for c in _COLUMNS})
            hist["moved"] = hist["moved"].fillna(-1.0)  # the first checkpoint has no previous sample
            store.write_table(f"history.parquet/part-{part:06d}.parquet", hist)
            self._written.add(part)
        if self.tensorboard:
            if self._writer is None:
                try:
                    from torch.utils.tensorboard import SummaryWriter
                except ImportError as e:
                    raise ImportError("tensorboard=True needs tensorboard; pip install 'memdyn[diffusion]'") from e
                self._writer = SummaryWriter(str(self.out / "tensorboard"))
            self._writer.add_scalar("memdyn/f_mem", float(st.memorized.mean()), step)
            self._writer.add_scalar("memdyn/median_ratio", float(np.median(st.ratio)), step)
            self._writer.flush()
