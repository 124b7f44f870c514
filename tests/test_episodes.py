import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from memdyn.claims import Z_TOL
from memdyn.episodes import (
    StreamingDetector, core_sets, detect, exponential_fit, exponential_test, kaplan_meier,
)

traces = st.integers(1, 4).flatmap(
    lambda c: st.integers(1, 40).flatmap(lambda t: arrays(np.int64, (c, t), elements=st.integers(-1, 3))))


def stream(L):
    det = StreamingDetector(L.shape[0])
    for t in range(L.shape[1]):
        det.update(L[:, t])
    return det.finish()


@settings(max_examples=200, deadline=None)
@given(traces)
def test_episodes_are_disjoint_cover_the_trace_and_streaming_equals_batch(L):
    ep = detect(L)
    cover = np.full(L.shape, -1)
    for c, s, a, b in zip(ep.chain, ep.state, ep.start, ep.end):
        assert b > a and np.all(cover[c, a:b] == -1)  # disjoint
        assert np.all(L[c, a:b] == s)
        cover[c, a:b] = s
        assert (a == 0 or L[c, a - 1] != s) and (b == L.shape[1] or L[c, b] != s)  # maximal
    np.testing.assert_array_equal(cover, L)  # every labelled observation is in exactly one episode
    np.testing.assert_array_equal(ep.left_censored, ep.start == 0)
    np.testing.assert_array_equal(ep.right_censored, ep.end == L.shape[1])
    st_ = stream(L)
    for f in ("chain", "state", "start", "end", "left_censored", "right_censored"):
        np.testing.assert_array_equal(getattr(st_, f), getattr(ep, f))
    assert ep.occupancy(4).sum() == np.sum(L >= 0)


@settings(max_examples=100, deadline=None)
@given(traces)
def test_core_sets_fill_gaps_with_last_core(L):
    M = core_sets(L)
    for c in range(L.shape[0]):
        last = -1
        for t in range(L.shape[1]):
            last = L[c, t] if L[c, t] >= 0 else last
            assert M[c, t] == last


def test_core_sets_remove_flicker():
    raw = np.array([[0, -1, 0, -1, -1, 1, -1, 1, 1, -1, 0]])
    assert len(detect(raw)) == 5  # a bare threshold cuts two visits into five episodes
    ep = detect(core_sets(raw))
    assert ep.state.tolist() == [0, 1, 0] and ep.length.tolist() == [5, 5, 1]


def test_transitions_and_rates():
    L = np.array([[0, 0, 1, 1, 1, 0, -1, 1]])
    ep = detect(L)
    counts = ep.transition_counts(2)
    assert counts.tolist() == [[0, 1], [1, 0]]  # 0->1 and 1->0; the gap before the last 1 breaks the chain
    np.testing.assert_allclose(ep.transition_rates(2), [[0, 1 / 3], [1 / 4, 0]])
    np.testing.assert_allclose(ep.fraction_of_time(2), [3 / 7, 4 / 7])


def test_censored_exponential_mle_recovers_rate():
    rng = np.random.default_rng(0)
    true_mean, n, cutoff = 20.0, 4000, 25.0
    x = rng.exponential(true_mean, n)
    cens = x > cutoff
    fit = exponential_fit(np.minimum(x, cutoff), cens)
    assert abs(fit.mean - true_mean) < Z_TOL * fit.mean_se
    naive = np.minimum(x, cutoff)[~cens].mean()  # dropping censored episodes is badly biased
    assert abs(naive - true_mean) > 10 * fit.mean_se


def test_kaplan_meier_matches_exponential_survival():
    rng = np.random.default_rng(1)
    t, c = rng.exponential(5.0, 3000), rng.exponential(10.0, 3000)  # event and censoring times
    x, cens = np.minimum(t, c), c < t
    km = kaplan_meier(x, cens)
    i = np.searchsorted(km.time, 5.0)
    assert abs(km.survival[i] - math.exp(-km.time[i] / 5.0)) < Z_TOL * km.se[i]


def test_exponential_test_accepts_geometric_and_rejects_constant_lengths():
    rng = np.random.default_rng(2)
    geo = rng.geometric(0.05, 400)
    res = exponential_test(geo, n_mc=199)
    assert res.pvalue > 0.01 and abs(res.cv - 1) < 0.15
    bad = exponential_test(np.full(200, 10) + rng.integers(0, 2, 200), n_mc=199)
    assert bad.pvalue < 0.01 and bad.cv < 0.2


@pytest.mark.parametrize("labels, msg", [
    (np.zeros((0, 5)), "empty"), (np.zeros((2, 0)), "empty"), (np.array([[0.5, 1]]), "integers"),
    (np.array([[-2, 0]]), ">= -1"), (np.zeros((2, 2, 2)), "2-D"),
])
def test_bad_traces(labels, msg):
    with pytest.raises(ValueError, match=msg):
        detect(labels)
    with pytest.raises(ValueError, match="no completed"):
        exponential_fit([3.0, 4.0], [True, True])
