"""Nearest neighbours (torch and faiss), Carlini's score, tiled l2, the noisy-copy law, CIs."""

import math

import numpy as np
import pytest
import torch

from memdyn import metrics
from memdyn.memorization import probe_states
from memdyn.stats import bootstrap_ci, clopper_pearson


def _brute(x, S, k):
    d = np.sqrt(((x[:, None, :] - S[None]) ** 2).sum(-1))
    idx = np.argsort(d, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(d, idx, 1)


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_knn_matches_brute_force(backend):
    rng = np.random.default_rng(0)
    S, x = rng.normal(size=(300, 20)), rng.normal(size=(77, 20))
    idx, d = metrics.knn(x, S, 5, backend=backend, block=1000)
    bi, bd = _brute(x, S, 5)
    assert np.array_equal(idx, bi) and np.allclose(d, bd, rtol=1e-12)


def test_knn_shapes_and_errors():
    S = torch.zeros(4, 1, 3, 3)
    with pytest.raises(ValueError, match="differ in size"):
        metrics.knn(torch.zeros(2, 1, 3, 4), S)
    with pytest.raises(ValueError, match="k must be in 1..4"):
        metrics.knn(torch.zeros(2, 1, 3, 3), S, 5)
    with pytest.raises(ValueError, match="backend"):
        metrics.knn(torch.zeros(2, 9), torch.zeros(4, 9), backend="annoy")


def test_carlini_score_by_hand():
    S = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 20.0]], dtype=torch.float64)
    x = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    # nearest is s0 at distance 1; s0's 2 nearest others are at 10 and 20: 1 / (0.5 * 15)
    assert metrics.carlini_score(x, S, k=2)[0] == pytest.approx(1 / 7.5)
    assert metrics.carlini_score(x, S, k=50)[0] == pytest.approx(1 / 7.5)  # k capped at n - 1
    with pytest.raises(ValueError, match="alpha"):
        metrics.carlini_score(x, S, alpha=0)


def test_tiled_l2_catches_shifts_that_the_pixel_ratio_misses():
    from memdyn.diffusion import load_dataset

    d = load_dataset("mnist5k", 20, seed=2)
    moved = torch.roll(d.train, (2, -2), dims=(2, 3))
    pixel = probe_states(moved.reshape(20, -1), d.train.reshape(20, -1))
    tiled = metrics.tiled_l2(moved, d.train, max_shift=3)
    assert pixel.memorized.mean() < 0.5
    assert np.array_equal(tiled.nearest, np.arange(20)) and (tiled.ratio < 1 / 3).all()
    assert (tiled.shift == [2, -2]).all()
    # chunking does not change anything
    again = metrics.tiled_l2(moved, d.train, max_shift=3, chunk=3)
    assert np.array_equal(again.d1, tiled.d1)
    with pytest.raises(ValueError, match="divisible"):
        metrics.tiled_l2(moved, d.train, grid=5, max_shift=3)


def test_noisy_copy_law_matches_simulation():
    """The bracket from exact per-neighbour laws against 4000 simulated copies per level, per item."""
    rng = np.random.default_rng(1)
    S = torch.from_numpy(rng.normal(size=(12, 200)))
    nn = torch.cdist(S, S).fill_diagonal_(math.inf).amin(1).median().item()
    g = torch.Generator().manual_seed(3)
    for f in (0.7, 1.0, 1.3):
        sigma = f * nn / math.sqrt(8 * 200)
        law = metrics.noisy_copy_detection(S, sigma)
        lo, hi = law.lower, law.upper
        assert (lo <= law.estimate + 1e-12).all() and (law.estimate <= hi + 1e-12).all()
        c = 4000
        x = S.repeat(c, 1) + sigma * torch.randn(c * 12, 200, generator=g, dtype=torch.float64)
        rate = probe_states(x, S).memorized.reshape(c, 12).mean(0)
        se = np.sqrt(np.maximum(hi * (1 - hi), 1 / c) / c)
        assert (rate >= lo - 4 * se).all() and (rate <= hi + 4 * se).all()


def test_rate_intervals():
    lo, hi = clopper_pearson(0, 500)
    assert lo == 0 and hi == pytest.approx(1 - 0.025 ** (1 / 500), rel=1e-6)
    lo, hi = clopper_pearson(30, 100)
    assert lo < 0.3 < hi
    a, b = bootstrap_ci(np.r_[np.ones(30), np.zeros(70)], seed=1)
    assert a < 0.3 < b and b - a == pytest.approx(2 * 1.96 * math.sqrt(0.21 / 100), rel=0.2)
    with pytest.raises(ValueError):
        clopper_pearson(5, 3)
