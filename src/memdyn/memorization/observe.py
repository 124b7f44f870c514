"""Memorization episodes of a running simulation: every chain is a probe, labelled by
:func:`memdyn.memorization.probe_states` and milestoned on the fly.

The observer is the simulation side of the pipeline that the training monitor shares: the same
labels (core of training point i, free core n, in between: the last core entered) go to the same
episode detector (:class:`memdyn.episodes.StreamingDetector`), so an episode of a simulated chain
and an episode of a real model's probe are the same object.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..episodes import Episodes, StreamingDetector
from ..observers import Observer, _due_rows
from .probes import probe_states

__all__ = ["ProbeObserver", "ProbeRecord"]


@dataclass
class ProbeRecord:
    """Result of :class:`ProbeObserver`.

    Attributes
    ----------
    episodes : Episodes
        Core-set episodes of every chain (state i < n: memorizing training point i; state n:
        free), lengths in observations (one every ``every`` steps).
    memorized_steps : ndarray (chains,)
        Observations with d1/d2 below the memorization threshold (the raw rule, no milestoning).
    observations : int
        Observations per chain.
    every : int
        Steps between observations.
    raster : ndarray (raster_probes, raster_columns) int64
        Milestoned labels of the first probes every ``raster_every`` steps (-1 before the first
        core entry), for the memorization raster.
    raster_steps : ndarray
        Step of each raster column.
    n_train : int
    memorized_count : ndarray (observations,) int64
        Chains memorized (d1/d2 below the threshold) at each observation: the fraction of probes
        memorizing as training goes on.
    steps : ndarray (observations,)
        Step of each observation.
    history : ndarray (chains, columns) bool
        Memorized (d1/d2 below the threshold) every ``history_every`` steps, per chain (empty
        unless asked for): resample probes from it for standard errors of fractions over time.
    """

    episodes: Episodes
    memorized_steps: np.ndarray
    observations: int
    every: int
    raster: np.ndarray
    raster_steps: np.ndarray
    n_train: int
    memorized_count: np.ndarray
    steps: np.ndarray
    history: np.ndarray

    @property
    def memorized_fraction(self) -> np.ndarray:
        """Per-chain fraction of observations with d1/d2 below the threshold."""
        return self.memorized_steps / self.observations


class ProbeObserver(Observer):
    """Label every chain against the training set every ``every`` steps and detect episodes.

    The probe's output is the first D coordinates of the state (D = the training points'
    dimension); further coordinates (a slow variable) are not looked at.

    Parameters
    ----------
    train : array_like (n, D)
        Training points.
    every : int
        Steps between observations (1: every iterate; larger values miss short visits).
    start : int
        First observed step.
    memorized_below, enter, free : float
        Thresholds of :func:`memdyn.memorization.probe_states`.
    raster_probes : int
        Probes (the first chains) kept for the raster.
    raster_every : int
        Steps between raster columns (a multiple of ``every``).
    history_every : int
        Keep every chain's memorized flag every this many steps (0: not kept; else a multiple of
        ``every``).
    """

    name = "probes"

    def __init__(self, train, *, every: int = 1, start: int = 0, memorized_below: float = 1 / 3,
                 enter: float | None = None, free: float = 0.6, raster_probes: int = 0, raster_every: int | None = None,
                 history_every: int = 0, name: str | None = None):
        if every < 1 or start < 0:
            raise ValueError(f"need every >= 1 and start >= 0, got every={every}, start={start}")
        raster_every = every if raster_every is None else int(raster_every)
        if raster_every < every or raster_every % every:
            raise ValueError(f"raster_every must be a multiple of every={every}, got {raster_every}")
        self.train = np.asarray(train, dtype=np.float64)
        self.every, self.start_step = int(every), int(start)
        self.thresholds = {"memorized_below": memorized_below, "enter": enter, "free": free}
        probe_states(self.train[:1], self.train, **self.thresholds)  # validate once, here
        self.raster_probes, self.raster_every = int(raster_probes), raster_every
        if history_every < 0 or (history_every and history_every % every):
            raise ValueError(f"history_every must be 0 or a multiple of every={every}, got {history_every}")
        self.history_every = int(history_every)
        self.name = name or self.name

    def start(self, offset, n, dim, dtype, device):
        if dim < self.train.shape[1]:
            raise ValueError(f"train has D={self.train.shape[1]} but the chains have dim={dim} < D")
        keep = max(0, min(n, self.raster_probes - offset))
        return {"offset": offset, "detector": StreamingDetector(n), "current": np.full(n, -1, dtype=np.int64),
                "memorized": np.zeros(n, dtype=np.int64), "keep": keep, "raster": [], "steps": [], "count": [],
                "obs_steps": [], "history": [],
                "train": torch.as_tensor(self.train, dtype=dtype, device=device)}

    def update(self, state, k, theta):
        if k >= self.start_step and (k - self.start_step) % self.every == 0:
            self.update_block(state, k - 1, theta[None])

    def update_block(self, state, k, thetas):
        rows = _due_rows(k, thetas.shape[0], self.start_step, self.every)
        if not rows:
            return
        D, n = self.train.shape[1], thetas.shape[1]
        sel = thetas[rows] if len(rows) < thetas.shape[0] else thetas
        # the nearest two training points of every due iterate at once; the episodes then step by step
        s = probe_states(sel[:, :, :D].reshape(-1, D), state["train"], **self.thresholds)
        cur = state["current"]
        for r, t in enumerate(rows):
            step, label, memorized = k + 1 + t, s.label[r * n : (r + 1) * n], s.memorized[r * n : (r + 1) * n]
            np.copyto(cur, label, where=label >= 0)
            state["detector"].update(cur)
            state["memorized"] += memorized
            state["count"].append(int(memorized.sum()))
            if self.history_every and (step - self.start_step) % self.history_every == 0:
                state["history"].append(memorized.copy())
            state["obs_steps"].append(step)
            if state["keep"] and (step - self.start_step) % self.raster_every == 0:
                state["raster"].append(cur[:state["keep"]].copy())
                state["steps"].append(step)

    def finish(self, states):
        parts = [(s["offset"], s["detector"].finish()) for s in states]
        cols = [np.concatenate([getattr(e, f) + (off if f == "chain" else 0) for off, e in parts])
                for f in ("chain", "state", "start", "end", "left_censored", "right_censored")]
        episodes = Episodes(*cols, n_obs=parts[0][1].n_obs)
        kept = [np.stack(s["raster"], axis=1) for s in states if s["keep"] and s["raster"]]
        raster = np.concatenate(kept, axis=0) if kept else np.empty((0, 0), dtype=np.int64)
        steps = np.asarray(states[0]["steps"], dtype=np.int64)
        count = np.sum([np.asarray(s["count"], dtype=np.int64) for s in states], axis=0)
        hist = (np.concatenate([np.stack(s["history"], axis=1) for s in states], axis=0) if self.history_every
                else np.empty((0, 0), dtype=bool))
        return ProbeRecord(episodes, np.concatenate([s["memorized"] for s in states]), episodes.n_obs, self.every,
                           raster, steps, int(self.train.shape[0]), count, np.asarray(states[0]["obs_steps"]), hist)
