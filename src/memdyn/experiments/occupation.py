"""Long-run occupation of a 1-D double well over a step grid: the measurement and claims shared
by the ``gibbs`` and ``noise-geometry`` experiments (a helper, not an experiment).

For each step a, the occupation of the right basin {x >= saddle} is measured from many independent
chains and computed exactly from the transfer operator of the discrete chain
(:func:`memdyn.reference.stationary_1d`). The claims:

* per step: measured occupation vs the exact discrete chain (statistical);
* the line fit of a ln(p / (1 - p)) against a, extrapolated to a = 0, vs the same fit through the
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
from ..dynamics import simulate
from ..ldp import gibbs_fit
from ..observers import Occupation, intervals
from ..reference import sde_stationary_1d, stationary_1d, support_1d
from ..stats import extrapolate, mean_se
from .base import ConfigError, Context, ExperimentError

__all__ = ["right_occupation", "extrapolation_claims", "sde_log_ratio", "plot_log_ratio", "MAX_CHAIN_STEPS"]

MAX_CHAIN_STEPS = 6e9  # refuse configurations that would run for hours


def right_occupation(well, sigma, noise, a: float, chains: int, mix: float, events: int, start: float, ctx: Context,
                     dtype, key: str) -> dict:
    """Occupation of the right basin {x >= saddle} of 1-D constant-step SGD at step ``a``.

    Measured from ``chains`` independent chains started at ``start`` after 5 mixing times of
    burn-in (residual relative bias <= e^-5 / window), averaged over a window of ``mix`` mixing
    times, lengthened when needed so that the chains together are expected to enter the rarer
    basin at least ``events`` times (a two-state chain with mixing time t enters the basin of
    probability p at rate p (1 - p) / t). With fewer entries the per-chain fractions are too
    skewed for their standard error to be trusted.

    ``sigma`` is the noise scale (a number, or a function of positions for state-dependent noise,
    matching ``noise``). Returns one table row.
    """
    grid = np.linspace(-2, 2, 401)
    sig = np.broadcast_to(sigma(grid) if callable(sigma) else sigma, grid.shape)
    lo, hi = support_1d(well, float(sig.max()), a, [well.left, well.right])
    x, pi, tmix = stationary_1d(well, sigma, a, lo, hi, n=int(min(20000, max(3000, 12 * (hi - lo) / (a * sig.min())))))
    p_exact = float(pi[x >= well.saddle].sum())
    window = max(mix, events / (chains * p_exact * (1 - p_exact)))
    burn = int(math.ceil(5 * tmix))
    n_steps = burn + int(math.ceil(window * tmix))
    if n_steps * chains > MAX_CHAIN_STEPS:
        raise ConfigError(f"{ctx.experiment}: at step {a:g} the chain mixes in {tmix:.3g} steps and the rarer basin "
                          f"holds {min(p_exact, 1 - p_exact):.3g}, so {n_steps * chains:.3g} chain-steps would be needed "
                          f"(limit {MAX_CHAIN_STEPS:.0e}): use a larger step, more noise or fewer events")
    every = max(1, int(tmix // 50))

    def cell():
        sim = simulate(well, noise, float(a), n_steps, chains, init=[start], seed=ctx.seed_for("a", float(a)),
                       dtype=dtype, progress=ctx.progress,
                       observers=[Occupation(intervals([-np.inf, well.saddle, np.inf]), 2, start=burn, every=every)])
        return {"right": sim["occupation"].fractions[:, 1]}

    p, se = mean_se(ctx.cell(key, cell)["right"])
    if not 0 < p < 1:
        raise ExperimentError(f"at a={a:g} every chain stayed in one well (p={p}); raise events or chains")
    return {"step": a, "mixing_steps": tmix, "window_mixing_times": window, "n_steps": n_steps, "p_right": p,
            "p_right_se": se, "p_right_exact": p_exact, "a_log_ratio": a * math.log(p / (1 - p)),
            "a_log_ratio_se": a * se / (p * (1 - p)), "a_log_ratio_exact": a * math.log(p_exact / (1 - p_exact))}


def sde_log_ratio(well, sigma, a: float) -> float:
    """a ln(mu(right) / mu(left)) of the SDE limit's stationary law at step a (exact quadrature)."""
    from scipy.special import logsumexp

    x, logp = sde_stationary_1d(well, sigma, a, well.left - 1.5, well.right + 1.5)
    right = x >= well.saddle
    return a * float(logsumexp(logp[right]) - logsumexp(logp[~right]))


def extrapolation_claims(tab: pd.DataFrame, well, sigma, target: float, what: str, theory: str):
    """The two a -> 0 claims on a table of :func:`right_occupation` rows (see the module docstring).

    Returns (claims, measured fit, exact-chain fit, extrapolation of the SDE limit).
    """
    res = gibbs_fit(tab["step"], tab["a_log_ratio"], tab["a_log_ratio_se"])
    exact = gibbs_fit(tab["step"], tab["a_log_ratio_exact"], tab["a_log_ratio_se"])
    fine = float(tab["step"].min()) / np.linspace(4, 16, 6)
    ext = extrapolate(fine, [sde_log_ratio(well, sigma, a) for a in fine], degree=2)
    claims = [
        claim(f"{what}: line fit extrapolated to a->0 vs the same fit of the exact discrete chain", exact.intercept,
              res.intercept, res.intercept_se, fit=res,
              detail="same grid, same weights: the prediction is exact for this grid"),
        claim(f"{what}: exact SDE-limit values extrapolated to a->0 vs {theory}", target, ext.value,
              systematic=ext.bias, systematic_source="change from the linear extrapolation of the same exact values "
                                                     "(residual finite-a bias)",
              detail=f"stationary law of the SDE limit by quadrature at a = {fine.min():.3g} .. {fine.max():.3g}, "
                     f"quadratic in a; linear: {ext.lower:.6g}"),
    ]
    return claims, res, exact, ext


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
