"""Memorization detection for probes: one implementation for simulated chains and real samples.

A probe's output x (a chain of the memorization model, or a generated sample from a fixed
noise) is compared with the training set: d1 and d2 are its distances to the nearest and the
second-nearest training point, and it is **memorized** when d1/d2 < 1/3 (the rule used for real
diffusion models). A bare threshold flickers when a probe sits near the edge of a well, cutting one
visit into many short ones, so states are assigned by **core sets** (milestoning): a probe enters
the core of training point i when d1/d2 < ``enter`` with i nearest, and the free core when
d1/d2 > ``free``; between the two it keeps its last core (:func:`memdyn.episodes.core_sets`).
Feeding the labels to :func:`memdyn.episodes.detect` or :class:`memdyn.episodes.StreamingDetector`
gives episodes: maximal stays with one training point (label i) or free (label n).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..metrics import knn

__all__ = ["ProbeStates", "nearest_two", "probe_states"]

def nearest_two(x, train, *, block: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index of the nearest training point and the distances d1 <= d2 to the two nearest.

    Parameters
    ----------
    x : array_like or Tensor (probes, ...)
    train : array_like or Tensor (n >= 2, ...) with the probes' item shape
    block : int, optional
        Probes x points per chunk (:func:`memdyn.metrics.knn`); results do not depend on it.

    Returns
    -------
    nearest : ndarray (probes,) int64
    d1, d2 : ndarray (probes,) float64
    """
    n = int(torch.as_tensor(train).shape[0])
    if n < 2:
        raise ValueError(f"train needs at least 2 points for d2, got {n}")
    idx, d = knn(x, train, 2, backend="torch", block=block)
    return idx[:, 0], d[:, 0].copy(), d[:, 1].copy()


@dataclass(frozen=True)
class ProbeStates:
    """Per-probe state at one observation (arrays of shape (probes,)).

    Attributes
    ----------
    nearest : int64
        Index of the nearest training point.
    d1, d2 : float64
        Distances to the nearest and second-nearest training point.
    ratio : float64
        d1 / d2 (0 on a training point).
    memorized : bool
        ratio < the memorization threshold.
    label : int64
        Core-set label before milestoning: i when in the core of training point i, n (the number
        of training points) in the free core, -1 in between (keep the last core:
        :func:`memdyn.episodes.core_sets`).
    """

    nearest: np.ndarray
    d1: np.ndarray
    d2: np.ndarray
    ratio: np.ndarray
    memorized: np.ndarray
    label: np.ndarray


def probe_states(x, train, *, memorized_below: float = 1 / 3, enter: float | None = None,
                 free: float = 0.6, backend: str = "torch") -> ProbeStates:
    """Nearest training point, d1, d2, d1/d2, memorized and the core-set label of each probe.

    Parameters
    ----------
    x : array_like or Tensor (probes, D)
        The probes' current outputs.
    train : array_like or Tensor (n, D)
        Training points.
    memorized_below : float
        Memorized when d1/d2 is below this (default 1/3).
    enter : float, optional
        Core of point i: d1/d2 below this with i nearest (default: ``memorized_below``).
    free : float
        Free core: d1/d2 above this (default 0.6); must exceed ``enter``.
    backend : {'torch', 'faiss', 'auto'}
        Nearest-neighbour search (:func:`memdyn.metrics.knn`); the answers do not depend on it.
    """
    enter = memorized_below if enter is None else enter
    if not 0 < memorized_below <= 1:
        raise ValueError(f"memorized_below must be in (0, 1], got {memorized_below}")
    if not (0 < enter < free <= 1):
        raise ValueError(f"need 0 < enter < free <= 1, got enter={enter}, free={free}")
    n = int(torch.as_tensor(train).shape[0])
    if n < 2:
        raise ValueError(f"train needs at least 2 points for d2, got {n}")
    idx, d = knn(x, train, 2, backend=backend)
    nearest, d1, d2 = idx[:, 0], d[:, 0], d[:, 1]
    ratio = np.divide(d1, d2, out=np.zeros_like(d1), where=d2 > 0)
    label = np.full(nearest.shape, -1, dtype=np.int64)
    core = ratio < enter
    label[core] = nearest[core]
    label[ratio > free] = n
    return ProbeStates(nearest, d1, d2, ratio, ratio < memorized_below, label)
