import math

import numpy as np
import pytest
from scipy.special import digamma
from scipy.stats import binom

from memdyn.claims import Z_TOL
from memdyn.stats import mean_se
from memdyn.collapse import exact_fit, gaussian_refit, initial_counts, kde_refit, mixture_refit
from memdyn.markov import MarkovChain


def test_initial_counts_largest_remainder():
    c = initial_counts(np.array([0.5, 0.3, 0.2]), 7)
    assert c.sum() == 7 and c.tolist() == [4, 2, 1]


def test_heterozygosity_decays_exactly_and_collapse_follows_weights():
    w, N, R = np.array([0.5, 0.3, 0.2]), 20, 3000
    h = exact_fit(w, N, 400, R, seed=3)
    H0 = h.heterozygosity[0, 0]
    for g in (1, 5, 20, 60):
        m, se = mean_se(h.heterozygosity[:, g])
        assert abs(m - H0 * (1 - 1 / N) ** g) < Z_TOL * se
    assert np.all(h.collapse_time > 0)
    mu0 = initial_counts(w, N) / N
    frac = np.bincount(h.collapse_atom, minlength=3) / R
    assert np.all(np.abs(frac - mu0) < Z_TOL * np.sqrt(mu0 * (1 - mu0) / R))
    assert np.all(h.support[:, -1] == 1) and np.all(h.entropy[:, -1] == 0)


def test_collapse_time_matches_absorbing_chain():
    N, R = 12, 4000
    h = exact_fit([0.5, 0.5], N, 2000, R, seed=4)
    i = np.arange(N + 1)
    mc = MarkovChain(binom.pmf(i[None, :], N, i[:, None] / N))
    exact = mc.mean_absorption_time()[N // 2 - 1]
    m, se = mean_se(h.collapse_time)
    assert abs(m - exact) < Z_TOL * se


def test_fresh_data_prevents_collapse_and_results_do_not_depend_on_replicate_count():
    a = exact_fit(np.ones(5), 30, 300, 10, alpha=0.2, seed=5)
    b = exact_fit(np.ones(5), 30, 300, 200, alpha=0.2, seed=5)
    np.testing.assert_array_equal(a.homozygosity, b.homozygosity[:10])
    assert np.all(b.collapse_time == -1)
    acc = exact_fit(np.ones(5), 30, 100, 50, strategy="accumulate", seed=5)
    assert np.all(acc.final_counts.sum(1) == 30)


def test_gaussian_refit_laws():
    M, R, G = 10, 4000, 40
    h = gaussian_refit(M, G, R, seed=6)
    var = h.std**2
    for g in (0, 5, 10):  # E[s_g^2] = (1 - 1/M)^(g + 1) sigma_0^2 (the real data's MLE contributes one factor)
        m, se = mean_se(var[:, g])
        assert abs(m - (1 - 1 / M) ** (g + 1)) < Z_TOL * se
    step = digamma((M - 1) / 2) + math.log(2 / M)  # E ln(chi2_{M-1} / M)
    m, se = mean_se(np.log(var[:, G]))
    assert abs(m - (G + 1) * step) < Z_TOL * se
    acc = gaussian_refit(M, G, R, strategy="accumulate", seed=6)
    assert np.median(acc.std[:, -1]) > 0.8 > np.median(h.std[:, -1])


@pytest.mark.parametrize("kw, msg", [
    ({"alpha": -0.1}, "alpha"), ({"alpha": 1.5}, "alpha"), ({"N": 0}, "N"), ({"weights": []}, "empty"),
    ({"strategy": "mix"}, "strategy"),
])
def test_bad_input(kw, msg):
    args = {"weights": [1.0, 1.0], "N": 5, "generations": 3, "replicates": 2} | kw
    with pytest.raises(ValueError, match=msg):
        exact_fit(args.pop("weights"), args.pop("N"), args.pop("generations"), args.pop("replicates"), **args)


def test_kde_refit_variance_recursion_and_mixture_modes_merge():
    M, h, G, R = 10, 0.3, 30, 4000
    k = kde_refit(M, G, R, bandwidth=h, seed=7)
    a = 1 - 1 / M
    m, se = mean_se(k.std[:, G] ** 2)
    assert abs(m - (a ** (G + 1) + h * h * a * (1 - a**G) / (1 - a))) < Z_TOL * se
    mix = mixture_refit(40, 60, 64, seed=8)
    assert np.all(mix.modes[:, 0] == 2)  # the real distribution is clearly bimodal
    assert (mix.modes[:, -1] >= 2).mean() < 0.9  # modes merge under refitting
    np.testing.assert_allclose(mix.weights.sum(2), 1.0, atol=1e-9)


def test_gaussian_refit_tiny_variances_stay_finite():
    h = gaussian_refit(5, 300, 64, seed=9)  # s_g^2 ~ e^-150: no cancellation to 0 or NaN
    assert np.all(np.isfinite(np.log(h.std[:, -1]))) and np.all(h.std[:, -1] > 0)


def test_gaussian_distance_to_truth_grows_under_replace():
    h = gaussian_refit(10, 100, 256, seed=10)
    d = h.distance(0.0, 1.0)
    assert d.shape == h.std.shape and np.median(d[:, -1]) > np.median(d[:, 0])


def test_kde_refit_accumulate_variance_recursion():
    """Accumulating KDE refits: the pool's MLE variance follows the exact expected recursion
    E[S'] = (n + q)/(n + M) E[S] + q h^2/(n + M), q = M - 1 + n/(n + M)."""
    M, G, R, h = 10, 20, 4000, 0.3
    k = kde_refit(M, G, R, bandwidth=h, strategy="accumulate", seed=11)
    S = (1 - 1 / M) * 1.0  # E of the initial data's MLE variance, std = 1
    for g in range(G):
        n = M * (g + 1)
        q = M - 1 + n / (n + M)
        S = ((n + q) * S + q * h**2) / (n + M)
    var = k.std[:, -1] ** 2
    assert abs(var.mean() - S) < 4 * var.std(ddof=1) / np.sqrt(R)
    # fresh data only: the pool is real data, variance near 1
    k1 = kde_refit(M, 5, 500, bandwidth=h, alpha=1.0, strategy="accumulate", seed=12)
    assert abs((k1.std[:, -1] ** 2).mean() - (1 - 1 / (6 * M))) < 4 * (k1.std[:, -1] ** 2).std(ddof=1) / np.sqrt(500)


def test_mixture_refit_accumulate_and_fresh_data_keep_modes():
    R, G = 64, 30  # accumulate runs EM on M (g + 1) points: cost grows as G^2
    modes = {}
    for name, kw in (("replace", {}), ("accumulate", {"strategy": "accumulate"}), ("alpha", {"alpha": 0.5})):
        modes[name] = mixture_refit(40, G, R, seed=8, **kw).modes[:, -1]
    se = lambda a, b: np.sqrt(a.var(ddof=1) / R + b.var(ddof=1) / R) + 1e-12  # noqa: E731
    for name in ("accumulate", "alpha"):
        assert modes[name].mean() - modes["replace"].mean() > 4 * se(modes[name], modes["replace"]), modes
        assert modes[name].mean() > 1.9
    with pytest.raises(ValueError, match="strategy"):
        mixture_refit(40, 2, 4, strategy="keep")


def test_exact_fit_from_a_collapsed_start_returns_to_mu0_at_rate_one_minus_alpha():
    w, N, alpha, g = np.array([0.6, 0.4]), 50, 0.05, 20
    h = exact_fit(w, N, g, 4000, alpha=alpha, init=np.array([N, 0]), seed=3)
    m, se = mean_se(h.final_counts[:, 0] / N)
    assert abs(m - (w[0] + (1 - alpha) ** g * (1 - w[0]))) < Z_TOL * se
    with pytest.raises(ValueError, match="init"):
        exact_fit(w, N, 5, 10, init=np.array([N, 1]))
