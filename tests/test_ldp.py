import itertools
import math

import numpy as np
import pytest

from memdyn.ldp import arrhenius_fit, fw_energies, gibbs_fit, predicted_occupation


def brute_force_W(B):
    """Minimum over all maps k -> parent(k) (k != root) whose paths all lead to the root."""
    m = B.shape[0]
    W = np.full(m, np.inf)
    for root in range(m):
        others = [k for k in range(m) if k != root]
        for parents in itertools.product(range(m), repeat=len(others)):
            par = dict(zip(others, parents))
            if any(k == p for k, p in par.items()):
                continue
            ok = True
            for k in others:  # follow parents: must reach root without a cycle
                seen, x = set(), k
                while x != root and ok:
                    if x in seen:
                        ok = False
                    seen.add(x)
                    x = par.get(x, root)
            if ok:
                W[root] = min(W[root], sum(B[k, p] for k, p in par.items()))
    return W


@pytest.mark.parametrize("seed", range(6))
def test_fw_energies_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    m = int(rng.integers(2, 6))
    B = rng.random((m, m)) * 3
    if seed % 2:
        B[rng.random((m, m)) < 0.2] = np.inf
        np.fill_diagonal(B, 0)
        B[np.arange(m), (np.arange(m) + 1) % m] = rng.random(m)  # keep a cycle so every root is reachable
    res = fw_energies(B)
    np.testing.assert_allclose(res.W, brute_force_W(B), rtol=1e-12)
    assert res.E.min() == 0 and res.most_visited == int(np.argmin(res.W))


def test_two_wells_energy_is_the_barrier_difference():
    # two minima, V(0 -> 1) = 0.8, V(1 -> 0) = 0.3: E = (0, 0.5): the deeper well 0 dominates
    res = fw_energies([[0, 0.8], [0.3, 0]])
    np.testing.assert_allclose(res.E, [0.0, 0.5])
    p = predicted_occupation(res.E, 0.1)
    assert p[0] > p[1] and math.isclose(0.1 * math.log(p[1] / p[0]), -0.5)


def test_fw_energies_scale_to_dozens_of_components():
    rng = np.random.default_rng(0)
    B = rng.random((40, 40))
    res = fw_energies(B)
    assert res.W.shape == (40,) and all(len(t) == 39 for t in res.trees)


def test_arrhenius_and_gibbs_fits_recover_known_lines():
    a = np.array([0.05, 0.07, 0.1, 0.14])
    V, P = 0.4, 3.0
    t = P * np.exp(V / a) / a
    fit = arrhenius_fit(a, t, 0.01 * t)
    assert math.isclose(fit.barrier, V, rel_tol=1e-10) and math.isclose(fit.log_prefactor, math.log(P))
    assert fit.line.chi2 < 1e-12 and fit.line.p_value == pytest.approx(1.0)
    g = gibbs_fit(a, -0.3 + 0.5 * a, np.full(4, 0.01))
    assert math.isclose(g.intercept, -0.3) and math.isclose(g.slope, 0.5)


def test_bad_costs():
    with pytest.raises(ValueError, match="square"):
        fw_energies(np.ones((2, 3)))
    with pytest.raises(ValueError, match=">= 0"):
        fw_energies([[0, -1], [1, 0]])
    with pytest.raises(ValueError, match="reaches component"):
        fw_energies([[0, np.inf], [1, 0]])


def test_mean_exit_time_1d_approaches_kramers_at_low_temperature():
    from memdyn import DoubleWell
    from memdyn.reference import sde_exit_time_1d as mean_exit_time_1d

    w = DoubleWell(-1, 0.2, 1)
    ratios = []
    for a in (0.02, 0.005):
        sigma = 1.0
        kramers = 2 * math.pi / math.sqrt(w.d2f(-1) * abs(w.d2f(0.2))) * math.exp(
            2 * w.barrier("left") / (a * sigma**2)) / a
        ratios.append(mean_exit_time_1d(w, sigma, a, -1.0, 1.0) / kramers)
    assert abs(ratios[1] - 1) < abs(ratios[0] - 1) and abs(ratios[1] - 1) < 0.05


def test_bridge_corrected_exit_times_match_exact_mean():
    import torch

    from memdyn import DoubleWell, ExitTime, Gaussian, simulate
    from memdyn.reference import sde_exit_time_1d as mean_exit_time_1d
    from memdyn.stats import mean_se

    w, a, sigma, b = DoubleWell(-1, 0.2, 1), 0.04, 2.6, 1.0
    exact = mean_exit_time_1d(w, sigma, a, -1.0, b)
    sim = simulate(w, Gaussian(sigma), a, int(8 * exact), 2000, init=[-1.0], seed=2, dtype=torch.float64,
                   observers=[ExitTime(lambda th: b - th[:, 0], (a * sigma) ** 2)])
    r = sim["exit_time"]
    assert r.exited.mean() > 0.99
    ok = r.exited
    assert np.all(r.bridge_time[ok] <= r.grid_time[ok] + 1e-9)  # the bridge only adds crossings
    m, se = mean_se(r.bridge_time[ok])
    assert abs(m - exact) < 4 * se
