import math

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.stats import binom

from memdyn.markov import MarkovChain, gth_stationary


def gamblers_ruin(N, p, sparse=False):
    P = sp.lil_matrix((N + 1, N + 1))
    P[0, 0] = P[N, N] = 1.0
    for i in range(1, N):
        P[i, i + 1], P[i, i - 1] = p, 1 - p
    return MarkovChain(P.tocsr() if sparse else P.toarray())


def moran(N):
    P = np.zeros((N + 1, N + 1))
    P[0, 0] = P[N, N] = 1.0
    for i in range(1, N):
        up = i * (N - i) / N**2
        P[i, i + 1] = P[i, i - 1] = up
        P[i, i] = 1 - 2 * up
    return MarkovChain(P)


def wright_fisher(N):
    i = np.arange(N + 1)
    return MarkovChain(binom.pmf(i[None, :], N, i[:, None] / N))


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("p", [0.5, 0.43])
def test_gamblers_ruin_closed_forms(p, sparse):
    N = 17
    mc = gamblers_ruin(N, p, sparse)
    i = mc.transient_states
    np.testing.assert_array_equal(mc.absorbing_states, [0, N])
    B = mc.absorption_probabilities()
    t = mc.mean_absorption_time()
    if p == 0.5:
        ruin = 1 - i / N
        mean = i * (N - i)
        var = i * (N - i) / 3 * ((N - i) ** 2 + i**2 - 2)
        np.testing.assert_allclose(mc.absorption_time_variance(), var, rtol=1e-9)
    else:
        r = (1 - p) / p
        ruin = (r**i - r**N) / (1 - r**N)
        mean = i / (1 - 2 * p) - N / (1 - 2 * p) * (1 - r**i) / (1 - r**N)
    np.testing.assert_allclose(B[:, 0], ruin, rtol=1e-9)
    np.testing.assert_allclose(B.sum(1), 1, rtol=1e-12)
    np.testing.assert_allclose(t, mean, rtol=1e-9)


def test_moran_fixation_and_time():
    N = 25
    mc = moran(N)
    i = mc.transient_states
    np.testing.assert_allclose(mc.absorption_probabilities()[:, 1], i / N, rtol=1e-9)
    exact = [N * ((N - k) * sum(1 / (N - j) for j in range(1, k + 1)) + k * sum(1 / j for j in range(k + 1, N)))
             for k in i]
    np.testing.assert_allclose(mc.mean_absorption_time(), exact, rtol=1e-9)


def test_wright_fisher_fixation_heterozygosity_and_fundamental_matrix():
    N = 30
    mc = wright_fisher(N)
    i = mc.transient_states
    np.testing.assert_allclose(mc.absorption_probabilities()[:, 1], i / N, rtol=1e-9)
    Nm = mc.fundamental_matrix()
    np.testing.assert_allclose(Nm.sum(1), mc.mean_absorption_time(), rtol=1e-10)
    Q = mc.P[np.ix_(i, i)]
    np.testing.assert_allclose(Nm, np.linalg.inv(np.eye(i.size) - Q), rtol=1e-9)
    t = Nm.sum(1)
    np.testing.assert_allclose(mc.absorption_time_variance(), (2 * Nm - np.eye(i.size)) @ t - t * t, rtol=1e-9)
    # E[H_g] = (1 - 1/N)^g H_0 with H = 2 x (1 - x), x = k/N
    x = np.arange(N + 1) / N
    H = 2 * x * (1 - x)
    Pg = np.linalg.matrix_power(mc.P, 7)
    np.testing.assert_allclose(Pg[10] @ H, (1 - 1 / N) ** 7 * H[10], rtol=1e-10)


def test_sparse_chain_with_ten_thousand_states():
    mc = gamblers_ruin(10_000, 0.5, sparse=True)
    t = mc.mean_absorption_time()
    np.testing.assert_allclose(t[[0, 4999, 9998]], [1 * 9999, 5000 * 5000, 9999 * 1], rtol=1e-6)


def test_gth_matches_solve_and_is_accurate_for_tiny_probabilities():
    rng = np.random.default_rng(0)
    P = rng.random((6, 6))
    P /= P.sum(1, keepdims=True)
    pi = gth_stationary(P)
    np.testing.assert_allclose(pi @ P, pi, atol=1e-15)
    # birth-death chain with a stationary law spanning 1e-40 .. 1: GTH keeps every digit
    n, up, down = 40, 1e-1, 9e-1
    B = np.zeros((n, n))
    for k in range(n):
        if k + 1 < n:
            B[k, k + 1] = up
        if k > 0:
            B[k, k - 1] = down
        B[k, k] = 1 - B[k].sum()
    pi = MarkovChain(B).stationary_distribution
    exact = (up / down) ** np.arange(n)
    np.testing.assert_allclose(pi, exact / exact.sum(), rtol=1e-10)


def test_classes_and_stationary_laws():
    P = np.array([[0.5, 0.5, 0, 0], [0.5, 0.5, 0, 0], [0.25, 0, 0.25, 0.5], [0, 0, 0, 1.0]])
    mc = MarkovChain(P)
    assert [c.tolist() for c in mc.recurrent_classes] == [[0, 1], [3]]
    assert mc.transient_states.tolist() == [2]
    np.testing.assert_allclose(mc.stationary_distributions(), [[0.5, 0.5, 0, 0], [0, 0, 0, 1]])
    with pytest.raises(ValueError, match="recurrent classes"):
        mc.stationary_distribution
    with pytest.raises(ValueError, match="absorbing chain"):
        mc.mean_absorption_time()


def test_simulation_agrees_with_absorption_probabilities():
    mc = gamblers_ruin(10, 0.45)
    paths = mc.simulate(400, init=np.full(20_000, 3), seed=1)
    assert np.all(np.abs(np.diff(paths, axis=1)) <= 1)
    ruined = np.mean(paths[:, -1] == 0)
    p = mc.absorption_probabilities()[2, 0]
    assert abs(ruined - p) < 4 * math.sqrt(p * (1 - p) / 20_000)


@pytest.mark.parametrize("P, msg", [
    (np.ones((2, 3)) / 3, "square"),
    (np.array([[0.5, 0.6], [0.5, 0.5]]), "row 0 sums to 1.1"),
    (np.array([[1.5, -0.5], [0.5, 0.5]]), "negative"),
    (np.array([[np.nan, 1.0], [0.5, 0.5]]), "non-finite"),
    (np.zeros((0, 0)), "empty"),
])
def test_bad_matrices(P, msg):
    with pytest.raises(ValueError, match=msg):
        MarkovChain(P)
