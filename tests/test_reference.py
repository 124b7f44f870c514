"""Exact finite-step references: the sparse transfer operator, stationary laws and exit times of
1-D constant-step SGD, against closed forms and simulation."""

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from memdyn import DoubleWell, ExitTime, Gaussian, Quadratic, simulate
from memdyn.claims import Z_TOL
from memdyn.reference import (exit_time_1d, sde_exit_time_1d, sde_stationary_1d, stationary_1d, support_1d,
                              transfer_operator_1d)
from memdyn.stats import mean_se


def test_transfer_operator_is_sparse_and_stochastic():
    w = DoubleWell(-1, 0.2, 1)
    edges = np.linspace(-2.5, 2.5, 4001)  # 80 cells per kick a sigma = 0.1
    P = transfer_operator_1d(w, 2.0, 0.05, edges)
    assert sp.issparse(P) and P.shape == (4000, 4000)
    assert P.nnz <= 4000 * (2 * 8 * 80 + 3)  # a band of +-8 kicks, never dense
    np.testing.assert_allclose(np.asarray(P.sum(axis=1)).ravel(), 1.0, atol=1e-12)
    Pa = transfer_operator_1d(w, 2.0, 0.05, edges, absorb_above=True)
    assert Pa.shape == (4001, 4001) and Pa[4000, 4000] == 1.0
    with pytest.raises(ValueError, match="too coarse"):
        transfer_operator_1d(w, 2.0, 0.05, np.linspace(-2.5, 2.5, 50))


@pytest.mark.parametrize("a,lam,sigma", [(0.1, 1.0, 1.0), (0.4, 2.0, 0.7), (1.5, 1.0, 1.0)])
def test_stationary_variance_of_a_quadratic_is_the_discrete_lyapunov_value(a, lam, sigma):
    # x' = (1 - a lam) x - a sigma z: variance a sigma^2 / (lam (2 - a lam)) exactly
    exact = a * sigma**2 / (lam * (2 - a * lam))
    half = 9 * math.sqrt(exact)
    x, p, tmix = stationary_1d(Quadratic([[lam]]), sigma, a, -half, half)
    assert float(p @ x**2) == pytest.approx(exact, rel=1e-3)
    assert tmix == pytest.approx(-1 / math.log(abs(1 - a * lam)), rel=1e-3)


def test_exit_time_of_the_discrete_chain_matches_simulation_and_converges_in_the_mesh():
    w, sigma, a = DoubleWell(-1, 0.2, 1), 2.6, 0.035
    mesh = [exit_time_1d(w, sigma, a, -1.0, 1.0, lower=-2.3, n=n) for n in (300, 600, 1200)]
    # second order in the cell width: the error falls about 4x per halving
    assert abs(mesh[1] - mesh[2]) < 0.4 * abs(mesh[0] - mesh[1])
    mean, var = exit_time_1d(w, sigma, a, -1.0, 1.0, variance=True)
    sim = simulate(w, Gaussian(sigma), a, int(12 * mean), 3000, init=[-1.0], seed=11, dtype=torch.float64,
                   observers=[ExitTime(lambda th: 1.0 - th[:, 0], (a * sigma) ** 2)])
    r = sim["exit_time"]
    assert r.exited.mean() > 0.999
    m, se = mean_se(r.grid_time[r.exited])
    assert abs(m - mean) < Z_TOL * se
    assert math.sqrt(var) / mean == pytest.approx(1.0, abs=0.05)  # nearly exponential
    # the discrete chain and its SDE limit differ at finite a, by O(a)
    assert sde_exit_time_1d(w, sigma, a, -1.0, 1.0) != pytest.approx(mean, rel=1e-3)


def test_sde_stationary_law_is_gibbs_for_constant_noise():
    w, sigma, a = DoubleWell(-1, 0.2, 1), 1.5, 0.04
    x, logp = sde_stationary_1d(w, sigma, a, -2.5, 2.5, n=20001)
    gibbs = -2 * w.f(x) / (a * sigma**2)
    gibbs -= np.log(np.sum(np.exp(gibbs - gibbs.max())) * (x[1] - x[0])) + gibbs.max()
    np.testing.assert_allclose(logp, gibbs, atol=1e-6)
    lo, hi = support_1d(w, sigma, a, [w.left, w.right])
    assert lo < -1 < 1 < hi


def test_exit_time_2d_of_a_separable_valley_is_the_1d_chain():
    # bend c = 0: F = W(x) + kappa y^2 / 2 and axis-aligned noise, so x alone is the 1-D chain
    from memdyn import BentDoubleWell
    from memdyn.reference import exit_time_2d

    w, sigma = DoubleWell(-1, 0.2, 1), 2.6
    a = 2 * w.barrier("left") / sigma**2 / 3.2
    exact = exit_time_1d(w, sigma, a, -1.0, 1.0, lower=-1.9)
    ext = exit_time_2d(BentDoubleWell(w, 2.0, 0.0), sigma, (1.0, 1.4), a, [-1.0, 0.0], 1.0, ((-1.9, 1.0), (-1.5, 1.5)))
    assert abs(ext.value - exact) <= ext.bias  # the stated residual mesh bias covers the true error
    assert ext.bias < 0.01 * exact
    assert abs(ext.lower - exact) > abs(ext.value - exact)  # the extrapolation helps


def test_transfer_operator_2d_is_stochastic_and_absorbs_at_the_right():
    from memdyn import BentDoubleWell
    from memdyn.reference import transfer_operator_2d

    land = BentDoubleWell(DoubleWell(-1, 0.2, 1), 2.0, 0.3)
    xe, ye = np.linspace(-1.8, 1.0, 61), np.linspace(-1.2, 1.2, 41)
    P = transfer_operator_2d(land, 2.6, (1.0, 1.5), 0.04, xe, ye)
    n = 60 * 40
    assert P.shape == (n + 1, n + 1) and P[n, n] == 1.0
    np.testing.assert_allclose(np.asarray(P.sum(axis=1)).ravel(), 1.0, atol=1e-12)
    x = np.repeat(0.5 * (xe[1:] + xe[:-1]), 40)
    out = P[:n, n].toarray().ravel()
    assert out[x > 0.9].min() > out[x < -0.5].max()  # only the cells near x = 1 leak into the absorbing state
    with pytest.raises(ValueError, match="mesh too coarse"):
        transfer_operator_2d(land, 2.6, (1.0, 1.5), 0.01, xe, ye)
    with pytest.raises(ValueError, match="scales"):
        transfer_operator_2d(land, 2.6, (1.0, -1.0), 0.04, xe, ye)


def test_sde_exit_time_2d_keeps_relative_accuracy_at_huge_times_and_converges_at_second_order():
    # separable valley: the exit depends on x alone, whose SDE mean first-passage time is a quadrature
    from memdyn import BentDoubleWell
    from memdyn.reference import sde_exit_time_2d

    w, sigma = DoubleWell(-1, 0.2, 1), 2.6
    land = BentDoubleWell(w, 2.0, 0.0)
    for ratio in (40.0, 120.0):  # mean exit times of about 1e20 and 1e55 steps
        a = 2 * w.barrier("left") / sigma**2 / ratio
        exact = sde_exit_time_1d(w, sigma, a, -1.0, 1.0)
        errs = [sde_exit_time_2d(land, sigma, (1.0, 1.5), a, [-1.0, 0.0], 1.0, ((-1.6, 1.0), (-0.8, 0.8)), h) / exact - 1
                for h in (0.02, 0.01)]
        assert abs(errs[1]) < 3e-3
        assert 3.0 < errs[0] / errs[1] < 5.0  # O(h^2)


def test_driven_chain_with_frozen_control_matches_the_static_exit_time():
    """With eps ~ 0 the control stays at y0, and F0(x; y0) = W(x) - y0 x is a double well whose
    critical points are the roots of x^3 - x - y0: the mean first passage must be the static exact
    chain's mean exit time; the free law keeps its mass."""
    from memdyn import DoubleWell, DrivenTiltedWell
    from memdyn.reference import driven_chain_1d, exit_time_1d

    y0, a, sigma = 0.3, 0.05, 1.0
    roots = np.sort(np.roots([1.0, 0.0, -1.0, -y0]).real)
    static = DoubleWell(*roots)
    land = DrivenTiltedWell(1e-12, 1.0)
    start, b = roots[0], roots[1] + 0.3
    ref = exit_time_1d(static, sigma, a, start, b, lower=-3.0)
    r = driven_chain_1d(land, sigma, a, y0, 6000, start, -3.0, 2.5, [b], observe=np.ones_like, at=[0, 3000, 6000])
    assert r.passage[0].value == pytest.approx(ref, rel=2e-3)
    assert r.passage[0].bias < 1e-2 * ref
    assert all(o.value == pytest.approx(1.0, abs=1e-9) for o in r.observed)
    with pytest.raises(ValueError, match="not passed within"):
        driven_chain_1d(land, sigma, a, y0, 50, start, -3.0, 2.5, [b])


def test_driven_chain_sequential_passages_match_a_simulation_under_a_non_monotone_tilt():
    """The non-monotone tilt takes the chain from the right well to the left one and back; the exact
    chain's mean step of each passage (down, then up) and its mean test error agree with 20,000
    simulated chains within 4 standard errors plus the stated mesh bias, and the noise-free path's
    fold steps order them."""
    from memdyn import DrivenTiltedWell
    from memdyn.reference import driven_chain_1d

    a, sigma, eps, x0 = 0.05, 1.5, 0.05, 1.0
    land = DrivenTiltedWell(eps, 1.0, kappa=6.0, c_end=0.6, y_start=0.0)
    k1, k2 = land.fold_steps(a)
    assert 0 < k1 < k2 and land.c_of(land.slow_path(0.0, a, k1)) == pytest.approx(-land.fold("left")[0])
    b = 1 / np.sqrt(3)
    levels, dirs = [-b, b], ["down", "up"]
    K = int(1.3 * k2) + 300
    r = driven_chain_1d(land, sigma, a, 0.0, K, x0, -3.5, 3.5, levels, directions=dirs,
                        observe=lambda x: (x - 1.2) ** 2, at=[int(k1) + 100])
    rng = np.random.default_rng(22)
    x, stage, tau = np.full(20_000, x0), np.zeros(20_000, dtype=int), np.full((2, 20_000), -1)
    ys = land.slow_path(0.0, a, np.arange(K + 1))
    for k in range(K + 1):
        for j, (v, d) in enumerate(zip(levels, dirs)):
            hit = (stage == j) & ((x >= v) if d == "up" else (x <= v))
            tau[j, hit], stage[hit] = k, j + 1
        if k == int(k1) + 100:
            g = (x - 1.2) ** 2
        c = land.c_of(ys[k])
        x = x - a * (x**3 - x - c + sigma * rng.standard_normal(x.size))
    assert (tau >= 0).all()
    for j in range(2):
        se = tau[j].std(ddof=1) / np.sqrt(tau.shape[1])
        assert abs(tau[j].mean() - r.passage[j].value) < 4 * se + r.passage[j].bias, (j, tau[j].mean(), r.passage[j].value)
    assert abs(g.mean() - r.observed[0].value) < 4 * g.std(ddof=1) / np.sqrt(g.size) + r.observed[0].bias
    # the noise-free chain jumps after each fold crossing (a dynamic fold's delay); noise makes both jumps early
    xd, det = x0, []
    for k in range(K + 1):
        if len(det) < 2 and ((xd <= -b) if not det else (xd >= b)):
            det.append(k)
        xd = xd - a * (xd**3 - xd - land.c_of(ys[k]))
    assert k1 < det[0] < k2 < det[1]
    assert r.passage[0].value < det[0] and r.passage[1].value < det[1]
    with pytest.raises(ValueError, match="directions"):
        driven_chain_1d(land, sigma, a, 0.0, K, x0, -3.5, 3.5, levels, directions=["down", "sideways"])
    with pytest.raises(ValueError, match="short of the first"):
        driven_chain_1d(land, sigma, a, 0.0, K, x0, -3.5, 3.5, levels, directions=["up", "down"])
    with pytest.raises(ValueError, match="kappa, c_end and y_start"):
        DrivenTiltedWell(eps, 1.0, kappa=6.0)
