"""Probe detection: nearest two training points against brute force, d1/d2 labels and core sets,
chunk independence, episodes from a flickering trace, bad input."""

import numpy as np
import pytest
import torch

from memdyn import metrics
from memdyn.episodes import core_sets
from memdyn.memorization import nearest_two, probe_states


def test_nearest_two_matches_brute_force_in_any_chunking():
    rng = np.random.default_rng(0)
    S, x = rng.normal(size=(500, 5)), rng.normal(size=(203, 5))
    d = np.linalg.norm(x[:, None] - S[None], axis=2)
    order = np.argsort(d, axis=1)
    for block in (None, 500, 1700):
        near, d1, d2 = nearest_two(x, S, block=block)
        np.testing.assert_array_equal(near, order[:, 0])
        np.testing.assert_allclose(d1, d[np.arange(203), order[:, 0]], rtol=1e-12)
        np.testing.assert_allclose(d2, d[np.arange(203), order[:, 1]], rtol=1e-12)


def test_distances_stay_exact_on_a_training_point_in_float32():
    S = torch.tensor([[100.0, 100.0], [101.0, 100.0], [100.0, 103.0]], dtype=torch.float32)
    near, d1, d2 = nearest_two(S[:1] + torch.tensor([[1e-4, 0.0]]), S)
    assert near[0] == 0 and d1[0] == pytest.approx(1e-4, rel=1e-2) and d2[0] == pytest.approx(1.0 - 1e-4, rel=1e-4)


def test_labels_follow_the_thresholds():
    S = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    x = np.array([[0.05, 0.0], [0.5, 0.0], [0.3, 0.3], [0.95, 0.01], [0.0, 0.0]])
    st = probe_states(x, S)
    np.testing.assert_array_equal(st.nearest[[0, 3, 4]], [0, 1, 0])
    np.testing.assert_array_equal(st.memorized, [True, False, False, True, True])
    np.testing.assert_array_equal(st.label, [0, 3, -1, 1, 0])  # 3 = free core, -1 = between
    assert st.ratio[4] == 0.0
    wider = probe_states(x, S, enter=0.6, free=0.9)
    assert wider.label[2] == 0 and not wider.memorized[2]


def test_core_sets_remove_flicker_at_a_well_edge():
    # a probe hovering at the edge of point 0's core: the bare threshold flickers, core sets do not
    S = np.array([[0.0], [1.0], [-1.0]])
    path = np.array([0.02, 0.26, 0.24, 0.26, 0.24, 0.27, 0.5, 0.97, 0.5])  # ratio ~1/3 at 0.25
    labels = np.stack([probe_states(p[None, None], S).label for p in path], axis=1)
    memorized = np.array([probe_states(p[None, None], S).memorized[0] for p in path])
    assert np.sum(np.diff(memorized.astype(int)) != 0) >= 4  # the raw rule flips back and forth
    np.testing.assert_array_equal(core_sets(labels)[0], [0, 0, 0, 0, 0, 0, 3, 1, 3])


@pytest.mark.parametrize("kwargs,match", [
    ({"memorized_below": 0.0}, "memorized_below"),
    ({"enter": 0.7, "free": 0.6}, "enter < free"),
    ({"free": 1.5}, "free <= 1"),
])
def test_bad_thresholds(kwargs, match):
    with pytest.raises(ValueError, match=match):
        probe_states(np.zeros((1, 2)), np.eye(2), **kwargs)


def test_bad_shapes():
    with pytest.raises(ValueError, match="differ in size"):
        nearest_two(np.zeros((3, 2)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="at least 2 points"):
        nearest_two(np.zeros((3, 2)), np.zeros((1, 2)))
    assert metrics.BLOCK > 0
