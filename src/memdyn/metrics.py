"""Memorization metrics for generated samples against a training set.

* :func:`knn`: the k nearest training items of each sample, exact Euclidean distances, in chunks
  with torch or with faiss (``IndexFlatL2``) when installed; both give the same answers, since the
  distances of the returned neighbours are recomputed exactly in float64.
* The nearest-neighbour ratio d1/d2 (memorized when below 1/3; Gu et al. 2023, Bonnaire et al.
  2025) is :func:`memdyn.memorization.probe_states`, built on :func:`knn`: the same code labels
  simulated chains and samples of a real model.
* :func:`carlini_score`: Carlini et al. (2023)'s adaptive distance, the distance to the nearest
  training item divided by alpha times that item's mean distance to its k nearest training
  neighbours (alpha = 0.5, k = 50); a sample is flagged when the score is below 1.
* :func:`noisy_copy_detection`: the probability that d1/d2 flags a training item plus Gaussian
  noise, bracketed from exact per-neighbour probabilities (the detector's calibration curve).
* :func:`tiled_l2`: a copy detector that survives small shifts: the largest RMS difference over a
  grid of tiles (every part of the image must match, as in Carlini et al.'s tiled l2), minimised
  over translations of the training image by up to ``max_shift`` pixels; its own d1/d2 ratio
  flags shifted copies that the pixel ratio misses.

Samples of any shape are flattened to vectors except in :func:`tiled_l2`, which needs images
(C, H, W). Rates with confidence intervals: :func:`memdyn.stats.clopper_pearson` (exact, for a
share of probes) and :func:`memdyn.stats.bootstrap_ci`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["BLOCK", "NoisyCopyLaw", "TiledDistance", "carlini_score", "faiss_available", "knn", "noisy_copy_detection",
           "tiled_l2"]

#: samples x training items compared at once
BLOCK = 1 << 24


def faiss_available() -> bool:
    """Whether faiss can be imported."""
    import importlib.util

    return importlib.util.find_spec("faiss") is not None


def _flat(x, like=None) -> torch.Tensor:
    X = torch.as_tensor(x)
    if like is not None:
        X = X.to(device=like.device, dtype=like.dtype)
    elif not X.is_floating_point():
        X = X.to(torch.float64)
    return X.reshape(X.shape[0], -1) if X.ndim != 2 else X


def knn(x, train, k: int = 2, *, backend: str = "auto", block: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Indices and exact Euclidean distances of the ``k`` nearest training items of each sample.

    Parameters
    ----------
    x : array_like or Tensor (samples, ...)
    train : array_like or Tensor (n, ...) with the same item shape; n >= k
    k : int
    backend : {'auto', 'torch', 'faiss'}
        'auto' is faiss when installed and torch otherwise. Both return the same neighbours up to
        exact ties.
    block : int, optional
        Samples x items per torch chunk (default :data:`BLOCK`); results do not depend on it.

    Returns
    -------
    index : ndarray (samples, k) int64, nearest first
    dist : ndarray (samples, k) float64, non-decreasing along each row
    """
    S = _flat(train)
    X = _flat(x, S)
    if X.shape[1] != S.shape[1]:
        raise ValueError(f"samples and training items differ in size: {tuple(torch.as_tensor(x).shape[1:])} vs "
                         f"{tuple(torch.as_tensor(train).shape[1:])}")
    if not 1 <= k <= S.shape[0]:
        raise ValueError(f"k must be in 1..{S.shape[0]} (the training items), got {k}")
    if backend not in ("auto", "torch", "faiss"):
        raise ValueError(f"backend must be 'auto', 'torch' or 'faiss', got {backend!r}")
    if backend == "faiss" and not faiss_available():
        raise ImportError("backend='faiss' needs faiss; install it with pip install 'memdyn[faiss]'")
    if backend == "faiss" or (backend == "auto" and faiss_available() and X.device.type == "cpu"):
        import faiss

        index = faiss.IndexFlatL2(S.shape[1])
        index.add(np.ascontiguousarray(S.cpu().numpy(), dtype=np.float32))
        _, idx = index.search(np.ascontiguousarray(X.cpu().numpy(), dtype=np.float32), k)
        idx = torch.from_numpy(idx.astype(np.int64)).to(X.device)
    else:
        step = max(1, (block or BLOCK) // S.shape[0])
        sq = (S * S).sum(1)
        parts = []
        for i in range(0, X.shape[0], step):
            # |x - s|^2 = |x|^2 + |s|^2 - 2 x.s; |x|^2 is the same along a row, so the ranking needs only the rest
            d = torch.addmm(sq[None, :], X[i:i + step], S.T, beta=1.0, alpha=-2.0)
            parts.append(torch.topk(d, k, dim=1, largest=False).indices)
        idx = torch.cat(parts) if parts else torch.empty(0, k, dtype=torch.int64, device=X.device)
    # exact distances of the chosen neighbours (no cancellation in |x|^2 + |s|^2 - 2 x.s near a point)
    dist = torch.stack([(X.double() - S.double()[idx[:, j]]).pow(2).sum(1).sqrt() for j in range(k)], 1)
    dist, order = torch.sort(dist, dim=1, stable=True)
    return torch.gather(idx, 1, order).cpu().numpy(), dist.cpu().numpy()


def carlini_score(x, train, *, alpha: float = 0.5, k: int = 50, backend: str = "auto") -> np.ndarray:
    """Carlini et al. (2023)'s adaptive memorization score of each sample.

    score(x) = d(x, s) / (alpha * mean_{j <= k} d(s, s_j)), with s the training item nearest to x
    and s_1 .. s_k the k training items nearest to s (s itself excluded; k is capped at n - 1). A
    sample is flagged as a copy when the score is below 1: it is much closer to s than s's own
    neighbours in the training set are.
    """
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    n = int(torch.as_tensor(train).shape[0])
    if n < 2:
        raise ValueError(f"train needs at least 2 items, got {n}")
    idx, d = knn(x, train, 1, backend=backend)
    _, spacing = knn(train, train, min(int(k), n - 1) + 1, backend=backend)
    scale = alpha * spacing[:, 1:].mean(axis=1)[idx[:, 0]]
    return np.divide(d[:, 0], scale, out=np.zeros(d.shape[0]), where=scale > 0)


@dataclass(frozen=True)
class TiledDistance:
    """Nearest and second-nearest training items under the shift-searched tiled distance.

    Attributes
    ----------
    nearest : ndarray (samples,) int64
    d1, d2 : ndarray (samples,) float64
        Tiled distances (RMS per pixel) to the nearest and the second-nearest training item.
    ratio : ndarray (samples,) float64
        d1 / d2; a copy (shifted or not) when below 1/3.
    shift : ndarray (samples, 2) int64
        The translation (rows, columns) that moves the nearest training item onto the sample.
    """

    nearest: np.ndarray
    d1: np.ndarray
    d2: np.ndarray
    ratio: np.ndarray
    shift: np.ndarray


def tiled_l2(x, train, *, grid: int = 2, max_shift: int = 3, chunk: int = 64) -> TiledDistance:
    """Shift-searched tiled l2 distance of each image to each training image.

    The central crop of x (``max_shift`` pixels removed on each side) is cut into a ``grid`` x
    ``grid`` array of tiles and compared with the crop of a training image s at every offset
    o in [-max_shift, max_shift]^2:

        D(x, s) = min_o max_tiles RMS(x_tile - s_tile(o)).

    The max over tiles asks every part of the image to match; the min over offsets forgives a
    translation. Returns the two smallest D per sample and their ratio.

    Parameters
    ----------
    x, train : array_like or Tensor (samples, C, H, W) and (n >= 2, C, H, W)
    grid : int
        Tiles per side (>= 1); the crop side must be divisible by it.
    max_shift : int
        Largest translation searched, in pixels (>= 0).
    chunk : int
        Samples per chunk (memory only; results do not depend on it).
    """
    S = torch.as_tensor(train)
    S = S.to(torch.float32) if not S.is_floating_point() else S
    X = torch.as_tensor(x).to(S.dtype)
    if X.ndim != 4 or S.ndim != 4 or X.shape[1:] != S.shape[1:]:
        raise ValueError(f"tiled_l2 needs images (samples, C, H, W) and (n, C, H, W) of one shape, got "
                         f"{tuple(X.shape)} and {tuple(S.shape)}")
    if S.shape[0] < 2:
        raise ValueError(f"train needs at least 2 items for d2, got {S.shape[0]}")
    m, g = int(max_shift), int(grid)
    C, H, W = S.shape[1:]
    h, w = H - 2 * m, W - 2 * m
    if m < 0 or g < 1 or h < g or w < g or h % g or w % g:
        raise ValueError(f"grid={grid}, max_shift={max_shift} do not fit {H} x {W} images: the crop "
                         f"{h} x {w} must be divisible by grid")
    th, tw = h // g, w // g
    offsets = [(dy, dx) for dy in range(2 * m + 1) for dx in range(2 * m + 1)]
    # windows of every training image at every offset, tiled: (offsets, n, tiles, pixels per tile)
    win = torch.stack([S[:, :, dy:dy + h, dx:dx + w] for dy, dx in offsets])
    win = win.reshape(len(offsets), S.shape[0], C, g, th, g, tw).permute(0, 1, 3, 5, 2, 4, 6)
    win = win.reshape(len(offsets), S.shape[0], g * g, C * th * tw)
    crop = X[:, :, m:m + h, m:m + w].reshape(X.shape[0], C, g, th, g, tw).permute(0, 2, 4, 1, 3, 5)
    crop = crop.reshape(X.shape[0], g * g, C * th * tw)
    best, arg = [], []
    for i in range(0, X.shape[0], chunk):
        c = crop[i:i + chunk]
        # (offsets, samples, n, tiles): mean squared difference per tile
        d = (c[None, :, None] - win[:, None]).pow(2).mean(-1)
        d = d.amax(-1).sqrt()
        v, a = d.min(0)
        best.append(v)
        arg.append(a)
    D, A = torch.cat(best).double(), torch.cat(arg)
    val, idx = torch.topk(D, 2, dim=1, largest=False)
    d1, d2 = val[:, 0].numpy(), val[:, 1].numpy()
    nearest = idx[:, 0].numpy().astype(np.int64)
    off = m - np.array(offsets, dtype=np.int64)[A.gather(1, idx[:, :1]).squeeze(1).numpy()]
    ratio = np.divide(d1, d2, out=np.zeros_like(d1), where=d2 > 0)
    return TiledDistance(nearest, d1, d2, ratio, off)


def noisy_copy_detection(train, sigma: float, *, threshold: float = 1 / 3, quantiles: int = 256):
    """Probability that a noisy copy x = s_i + sigma z (z ~ N(0, I_D)) of each training item is
    flagged by the nearest-neighbour ratio, bracketed.

    The copy is flagged iff |x - s_j| > |x - s_i| / threshold for every j != i. With Q = |z|^2,
    delta_j = |s_j - s_i| and cos_j the cosine between z and s_j - s_i, this is

        k sigma^2 Q < delta_j^2 + 2 sigma delta_j sqrt(Q) cos_j   for all j,   k = 1/threshold^2 - 1.

    Given Q, z / sqrt(Q) is uniform on the sphere, so (1 + cos_j) / 2 ~ Beta((D-1)/2, (D-1)/2)
    exactly and each event's conditional probability P_j(Q) is a beta probability. Q, shared by
    all events, is integrated exactly over ``quantiles`` quantile midpoints of chi^2_D; only the
    intersection over j at fixed Q is bracketed:
    E_Q[max(0, 1 - sum_j (1 - P_j(Q)))] <= P <= E_Q[min_j P_j(Q)],
    and estimated by E_Q[prod_j P_j(Q)] (the directions cos_j taken as independent given Q; the
    bracket bounds its error). Positively correlated directions push the truth from the estimate
    towards the upper end.

    Returns
    -------
    NoisyCopyLaw
        Per-item arrays ``lower``, ``estimate``, ``upper``.
    """
    from scipy import special
    from scipy import stats as st

    S = _flat(train).double()
    n, D = S.shape
    if n < 2:
        raise ValueError(f"train needs at least 2 items, got {n}")
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    delta = torch.cdist(S, S).numpy()
    Q = st.chi2.ppf((np.arange(quantiles) + 0.5) / quantiles, D)[None, :]
    k = 1.0 / threshold ** 2 - 1.0
    half = (D - 1) / 2.0
    lower, estimate, upper = np.empty(n), np.empty(n), np.empty(n)
    for i in range(n):
        d = np.delete(delta[i], i)[:, None]
        # the copy is missed through j when cos_j <= (k sigma^2 Q - delta^2) / (2 sigma delta sqrt(Q))
        c = np.clip((k * sigma ** 2 * Q - d ** 2) / (2 * sigma * d * np.sqrt(Q)), -1.0, 1.0)
        miss = special.betainc(half, half, (1.0 + c) / 2.0)
        lower[i] = np.maximum(0.0, 1.0 - miss.sum(axis=0)).mean()
        estimate[i] = np.prod(1.0 - miss, axis=0).mean()
        upper[i] = (1.0 - miss.max(axis=0)).mean()
    return NoisyCopyLaw(lower, estimate, upper)


@dataclass(frozen=True)
class NoisyCopyLaw:
    """Detection probability of noisy copies per training item (:func:`noisy_copy_detection`):
    exact bounds ``lower`` <= P <= ``upper`` and the conditional-independence ``estimate``."""

    lower: np.ndarray
    estimate: np.ndarray
    upper: np.ndarray

    @property
    def error(self) -> np.ndarray:
        """Largest possible error of the estimate: its distance to the farther bound."""
        return np.maximum(self.upper - self.estimate, self.estimate - self.lower)
