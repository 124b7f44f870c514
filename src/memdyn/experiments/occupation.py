"""Long-run occupation of the basins of a 1-D multi-well loss over a step grid: the measurement
and claims shared by the ``gibbs``, ``noise-geometry`` and ``three-wells`` experiments (a helper,
not an experiment).

For each step a, the occupation of each basin is measured from many independent chains and
computed exactly from the transfer operator of the discrete chain
(:func:`memdyn.reference.stationary_1d`). The claims:

* per step: measured occupation vs the exact discrete chain (statistical);
* the line fit of a ln(p_i / p_j) against a, extrapolated to a = 0, vs the same fit through the
  exact discrete values (statistical: both see the same grid, so the prediction is exact);
* the a -> 0 limit (deterministic): the discrete chain tends to the SDE
  dX = -F'(X) dt + sqrt(a) sigma(X) dW, whose stationary law is a quadrature
  (:func:`memdyn.reference.sde_stationary_1d`) at any small step; a ln(ratio) on steps 4 to 16
  times below the smallest simulated one, extrapolated to a = 0 by a quadratic, against the
  theory's limit, with the residual bias computed as the change from the linear extrapolation
  (:func:`memdyn.stats.extrapolate`).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..claims import claim
from ..dynamics import Group, simulate_groups
from ..ldp import gibbs_fit
from ..observers import Occupation, intervals
from ..reference import sde_stationary_1d, stationary_1d, support_1d
from ..stats import extrapolate
from .base import ConfigError, Context, ExperimentError

__all__ = ["well_occupations", "log_ratio", "right_occupations", "sde_log_occupations", "extrapolation_claims",
           "double_well_extrapolation", "plot_log_ratio", "MAX_CHAIN_STEPS"]

MAX_CHAIN_STEPS = 6e9  # refuse configurations that would run for hours
BURN_IN = 8.0  # mixing times; with 5, the transient from a start in the rarer basin was ~1 se at 4x the chains


def well_occupations(land, sigma, noise, steps, saddles, minima, chains: int, mix: float, events: int,
                     ctx: Context, dtype) -> list[dict]:
    """Occupation of the basins of a 1-D multi-well loss (cut at ``saddles``) by constant-step SGD
    at each step of ``steps``: measured and exact, the whole grid as one simulation.

    Measured at each step a from ``chains`` independent chains started at the minimum of the
    basin the exact law occupies most, after BURN_IN mixing times of burn-in (the initial deficit
    of the other basins, at most 1 - p_max, decays as exp(-t / t_mix): the residual bias of an
    occupation is at most (1 - p_max) e^-BURN_IN / window, below 1e-4 of it), averaged over a
    window of ``mix`` mixing times, lengthened when needed so that the chains together are expected
    to enter the rarest basin at least ``events`` times (a two-state chain with mixing time t
    enters a basin of probability p at rate p (1 - p) / t). With fewer entries the per-chain
    fractions are too skewed for their standard error to be trusted. Exact: the stationary law of
    the discrete chain (:func:`memdyn.reference.stationary_1d`).

    The steps' horizons differ (the mixing time grows like exp(V/a)): they run as the groups of one
    :func:`memdyn.simulate_groups` call, longest first, each stopped at its own horizon.

    ``sigma`` is the noise scale (a number, or a function of positions for state-dependent noise,
    matching ``noise``).

    Returns
    -------
    list of dict, one per step in the given order, with ``p`` (K,), ``cov`` (K, K) covariance of the
    estimates (per-chain spread / chains), ``exact`` (K,), ``mixing_steps``, ``window_mixing_times``,
    ``n_steps``.
    """
    edges = np.concatenate([[-np.inf], np.asarray(saddles, dtype=np.float64), [np.inf]])
    K = edges.size - 1
    grid = np.linspace(min(minima) - 1, max(minima) + 1, 801)
    sig = np.broadcast_to(sigma(grid) if callable(sigma) else sigma, grid.shape)
    plans = []
    for a in map(float, steps):
        lo, hi = support_1d(land, float(sig.max()), a, minima)
        x, pi, tmix = stationary_1d(land, sigma, a, lo, hi,
                                    n=int(min(20000, max(3000, 12 * (hi - lo) / (a * sig.min())))))
        exact = np.array([pi[(x >= edges[i]) & (x < edges[i + 1])].sum() for i in range(K)])
        window = max(mix, events / (chains * float(np.min(exact * (1 - exact)))))
        burn = int(math.ceil(BURN_IN * tmix))
        n_steps = burn + int(math.ceil(window * tmix))
        if n_steps * chains > MAX_CHAIN_STEPS:
            raise ConfigError(f"{ctx.experiment}: at step {a:g} the chain mixes in {tmix:.3g} steps and the rarest "
                              f"basin holds {exact.min():.3g}, so {n_steps * chains:.3g} chain-steps would be needed "
                              f"(limit {MAX_CHAIN_STEPS:.0e}): use a larger step, more noise or fewer events")
        plans.append({"a": a, "exact": exact, "mixing_steps": tmix, "window_mixing_times": window, "burn": burn,
                      "n_steps": n_steps, "every": max(1, int(tmix // 50)),
                      "start": float(np.asarray(minima, dtype=np.float64)[int(np.argmax(exact))])})
    order = sorted(range(len(plans)), key=lambda g: -plans[g]["n_steps"])  # longest horizon first

    def cell():
        groups = [Group(chains, plans[g]["a"], plans[g]["n_steps"], [plans[g]["start"]], observers=[
            Occupation(intervals(edges), K, start=plans[g]["burn"], every=plans[g]["every"])]) for g in order]
        sims = simulate_groups(land, noise, groups, seed=ctx.seed_for("grid"), dtype=dtype, progress=ctx.progress)
        return {f"fractions_{g}": sim["occupation"].fractions for g, sim in zip(order, sims)}

    key = "grid_" + "_".join(f"{pl['a']:.6g}" for pl in plans)
    got = ctx.cell(key, cell)
    out = []
    for g, pl in enumerate(plans):
        f = got[f"fractions_{g}"]
        p = f.mean(axis=0)
        if np.any(p <= 0) or np.any(p >= 1):
            raise ExperimentError(f"at a={pl['a']:g} some basin was never visited (occupations {p.tolist()}); raise "
                                  "events or chains")
        out.append({"p": p, "cov": np.cov(f, rowvar=False) / f.shape[0], "exact": pl["exact"],
                    "mixing_steps": pl["mixing_steps"], "window_mixing_times": pl["window_mixing_times"],
                    "n_steps": pl["n_steps"]})
    return out


def log_ratio(occ: dict, i: int, j: int, a: float) -> tuple[float, float, float]:
    """a ln(p_i / p_j): measured, its standard error (delta method with the covariance of the two
    estimates) and exact."""
    p, C, e = occ["p"], occ["cov"], occ["exact"]
    var = C[i, i] / p[i] ** 2 + C[j, j] / p[j] ** 2 - 2 * C[i, j] / (p[i] * p[j])
    return a * math.log(p[i] / p[j]), a * math.sqrt(max(var, 0.0)), a * math.log(e[i] / e[j])


def right_occupations(well, sigma, noise, steps, chains: int, mix: float, events: int, ctx: Context,
                      dtype) -> list[dict]:
    """:func:`well_occupations` of a double well, one table row per step: the right basin
    {x >= saddle} (p_right, se, exact) and a ln(p_right / p_left) (+ se, exact)."""
    rows = []
    for a, occ in zip(steps, well_occupations(well, sigma, noise, steps, [well.saddle], [well.left, well.right],
                                              chains, mix, events, ctx, dtype)):
        y, y_se, y_ex = log_ratio(occ, 1, 0, float(a))
        rows.append({"step": float(a), "mixing_steps": occ["mixing_steps"],
                     "window_mixing_times": occ["window_mixing_times"], "n_steps": occ["n_steps"],
                     "p_right": float(occ["p"][1]), "p_right_se": math.sqrt(occ["cov"][1, 1]),
                     "p_right_exact": float(occ["exact"][1]), "a_log_ratio": y, "a_log_ratio_se": y_se,
                     "a_log_ratio_exact": y_ex})
    return rows


def sde_log_occupations(land, sigma, a: float, saddles, minima) -> np.ndarray:
    """ln mu(basin i) of the SDE limit's stationary law at step a (exact quadrature), basins cut
    at ``saddles``."""
    from scipy.special import logsumexp

    x, logp = sde_stationary_1d(land, sigma, a, min(minima) - 1.5, max(minima) + 1.5)
    edges = np.concatenate([[-np.inf], np.asarray(saddles, dtype=np.float64), [np.inf]])
    return np.array([logsumexp(logp[(x >= edges[i]) & (x < edges[i + 1])]) for i in range(edges.size - 1)])


def extrapolation_claims(steps, y, y_se, y_exact, sde_limit, target: float, what: str, theory: str, tag: str = ""):
    """The two a -> 0 claims on a ln(occupation ratio) over a step grid (see the module docstring).

    Parameters
    ----------
    steps, y, y_se, y_exact : array_like
        Steps, measured a ln(ratio) with standard errors, and the exact discrete chain's values.
    sde_limit : callable
        a -> a ln(ratio) of the SDE limit's stationary law (exact, any small a).
    target : float
        The theory's a -> 0 limit.
    tag : str
        Appended to the claims' ids (``a0-line``, ``a0-sde-limit``), e.g. ``@well=2``.

    Returns (claims, measured fit, exact-chain fit, extrapolation of the SDE limit).
    """
    res = gibbs_fit(steps, y, y_se)
    exact = gibbs_fit(steps, y_exact, y_se)
    fine = float(np.min(steps)) / np.linspace(4, 16, 6)
    ext = extrapolate(fine, [sde_limit(a) for a in fine], degree=2)
    claims = [
        claim("a0-line" + tag,
              f"{what}: line fit extrapolated to a->0 vs the same fit of the exact discrete chain", exact.intercept,
              res.intercept, res.intercept_se, fit=res,
              detail="same grid, same weights: the prediction is exact for this grid"),
        claim("a0-sde-limit" + tag,
              f"{what}: exact SDE-limit values extrapolated to a->0 vs {theory}", target, ext.value,
              systematic=ext.bias, systematic_source="change from the linear extrapolation of the same exact values "
                                                     "(residual finite-a bias)",
              detail=f"stationary law of the SDE limit by quadrature at a = {fine.min():.3g} .. {fine.max():.3g}, "
                     f"quadratic in a; linear: {ext.lower:.6g}"),
    ]
    return claims, res, exact, ext


def double_well_extrapolation(tab: pd.DataFrame, well, sigma, target: float, what: str, theory: str):
    """:func:`extrapolation_claims` for a table of :func:`right_occupations` rows."""
    def sde(a):
        lm = sde_log_occupations(well, sigma, a, [well.saddle], [well.left, well.right])
        return a * float(lm[1] - lm[0])

    return extrapolation_claims(tab["step"], tab["a_log_ratio"], tab["a_log_ratio_se"], tab["a_log_ratio_exact"], sde,
                                target, what, theory)


def plot_log_ratio(ax, tab, res, exact, target, target_label: str) -> None:
    """a ln(occupation ratio) against a: measured points with 95% CI, the exact discrete chain, both
    straight-line fits extrapolated to a = 0, and the a -> 0 prediction."""
    a = tab["step"].to_numpy()
    ax.errorbar(a, tab["a_log_ratio"], yerr=1.96 * tab["a_log_ratio_se"], fmt="o", color="k", capsize=3,
                label="SGD, measured (95% CI)")
    ax.plot(a, tab["a_log_ratio_exact"], "s", mfc="none", color="C0", label="exact discrete chain")
    grid = np.linspace(0, a.max() * 1.05, 50)
    ax.plot(grid, res(grid), "--", color="C1", label="weighted line fit (measured)")
    ax.plot(grid, exact(grid), ":", color="C0", label="same fit, exact discrete chain")
    ax.errorbar([0], [res.intercept], yerr=[1.96 * res.intercept_se], fmt="D", color="C1", capsize=3)
    ax.plot([0], [target], "*", ms=14, color="C3", label=target_label)
    ax.set_xlabel("step size a")
    ax.legend(fontsize=7)
