"""Experiment ``gibbs``: the long-run law of constant-step SGD is Gibbs-like.

On the asymmetric double well F'(x) = k (x + 1)(x - s)(x - 1) with isotropic Gaussian noise of
scale sigma, the occupation of the right (shallower) basin {x >= s} obeys

    a ln(mu_a(right) / mu_a(left)) -> -2 (F(1) - F(-1)) / sigma^2 = -2 dF / sigma^2   as a -> 0

(temperature = a sigma^2 / 2). For each step on a grid the experiment measures the occupation
from many independent chains, checks it against the exact stationary law of the discrete chain
(transfer operator, :func:`memdyn.reference.stationary_1d`), and extrapolates a ln(ratio) to
a -> 0 by a weighted straight-line fit (see :mod:`memdyn.experiments.occupation` for the claims:
the measured line against the exact chain's line, and the exact chain's extrapolation against
-2 dF / sigma^2 with its computed residual bias).

The default step grid spans temperatures T = a sigma^2 / 2 in [T_max / 2, T_max] with
T_max = min(V_shallow / 1.5, |dF| / 3) (V_shallow: the barrier seen from the shallower well): cold
enough that the shallower well is metastable and the a -> 0 expansion is close to linear (the exact
discrete chain's own line extrapolates within ~1.5 % of the limit for |s| in [0.15, 0.25], k in
[0.5, 3]), warm enough that both wells are visited.
"""

from __future__ import annotations


import numpy as np
import pandas as pd
from matplotlib.figure import Figure as MplFigure
from pydantic import Field

from ..claims import claim
from ..landscapes import DoubleWell
from ..noise import Gaussian
from .base import ConfigError, Context, Experiment, ExperimentConfig, Figure, Outcome
from .occupation import double_well_extrapolation, plot_log_ratio, right_occupations


class GibbsConfig(ExperimentConfig):
    sigma: float = Field(3.0, gt=0, le=100, description="gradient-noise scale sigma")
    saddle: float = Field(0.2, ge=-0.25, le=0.25, description=(
        "s: barrier top of F'(x) = k (x+1)(x-s)(x-1), 0.15 <= |s| <= 0.25; s > 0 makes the right well the "
        "shallower one (outside this range either the shallow well is not metastable or it is never visited)"))
    scale: float = Field(1.0, gt=0, le=100, description="k: overall scale of the double well")
    steps: list[float] | None = Field(None, min_length=3, max_length=12, description=(
        "step sizes a (>= 3 distinct, each > 0); default: 6 steps spanning temperatures a sigma^2/2 in "
        "[T_max/2, T_max], T_max = min(V_shallow/1.5, |dF|/3)"))
    chains: int = Field(10000, ge=100, le=10**6, description="independent chains per step size")
    mix: float = Field(15.0, ge=2, le=1000, description=(
        "least averaging window per chain, in mixing times of the exact discrete chain (after 8 mixing times of "
        "burn-in from the most occupied well)"))
    events: int = Field(400, ge=50, le=10**6, description=(
        "least expected number of entries into the rarer well over all chains (the window is lengthened to reach "
        "it; fewer events make the standard error of a rare occupation untrustworthy)"))
    dtype: str = Field("float32", pattern="^(float32|float64)$", description="simulation precision")


class Gibbs(Experiment):
    name = "gibbs"
    section = "2. Long-run law and exits"
    prediction = (
        'The long-run law of constant-step SGD is the Gibbs law exp(-2F/(a sigma^2)) as a -> 0: a '
        'ln(occupation ratio) tends to -2 dF / sigma^2.')
    summary = "a*ln(occupation ratio) of a double well over a step grid, extrapolated to a->0, vs -2 dF/sigma^2"
    Config = GibbsConfig
    quick = {"chains": 2000, "mix": 6.0, "events": 100}
    sample_keys = ('chains', 'events')

    def well(self, cfg) -> DoubleWell:
        return DoubleWell(-1.0, cfg.saddle, 1.0, cfg.scale)

    def grid(self, cfg) -> np.ndarray:
        if cfg.steps is not None:
            return np.sort(np.asarray(cfg.steps, dtype=np.float64))
        w = self.well(cfg)
        t_max = min(min(w.barrier("left"), w.barrier("right")) / 1.5, abs(w.delta_f) / 3)
        return 2 * np.linspace(t_max / 2, t_max, 6) / cfg.sigma**2

    def check(self, cfg):
        if abs(cfg.saddle) < 0.15:
            raise ConfigError(f"invalid value for gibbs.saddle={cfg.saddle}: need 0.15 <= |saddle| <= 0.25 (the wells "
                              "must differ enough for the occupation ratio to be measured)")
        a = self.grid(cfg)
        if np.any(a <= 0) or len(set(a.tolist())) < 3:
            raise ConfigError(f"invalid value for gibbs.steps={cfg.steps}: need >= 3 distinct values > 0")
        curv = 2 * cfg.scale * (1 + abs(cfg.saddle))
        if a.max() * curv >= 1:
            raise ConfigError(f"invalid value for gibbs.steps={cfg.steps}: a*F''(min) = {a.max() * curv:.3g} must be < 1 "
                              "(the Gibbs limit needs a small step)")

    def run(self, cfg, ctx: Context) -> Outcome:
        import torch

        well = self.well(cfg)
        sigma, dF = cfg.sigma, well.delta_f
        target = -2 * dF / sigma**2
        rows, claims = [], []
        for row in right_occupations(well, sigma, Gaussian(sigma), self.grid(cfg), cfg.chains, cfg.mix, cfg.events,
                                     ctx, getattr(torch, cfg.dtype)):
            a = row["step"]
            rows.append({**row, "temperature": a * sigma**2 / 2})
            claims.append(claim(f"occupation@a={a:.4g}",
                                f"right-well occupation at a={a:.4g}", row["p_right_exact"], row["p_right"],
                                row["p_right_se"], detail="exact stationary law of the discrete chain (transfer operator)"))
        tab = pd.DataFrame(rows)
        ext_claims, res, exact, ext = double_well_extrapolation(tab, well, sigma, target, "a*ln(occupation ratio)",
                                                           f"Gibbs / Freidlin-Wentzell -2 dF / sigma^2 (dF = {dF:.4g})")
        claims = ext_claims + claims
        fit = pd.DataFrame([{"intercept": res.intercept, "intercept_se": res.intercept_se, "slope": res.slope,
                             "slope_se": res.slope_se, "chi2": res.chi2, "dof": res.dof, "p_value": res.p_value,
                             "intercept_exact_chain": exact.intercept, "exact_extrapolation": ext.value,
                             "exact_extrapolation_bias": ext.bias, "predicted": target, "delta_f": dF, "sigma": sigma}])
        n_ok = sum(c.holds for c in claims[2:])
        fig = _figure(tab, res, target, well, sigma, n_ok, exact)
        return Outcome(claims, {"occupation": tab, "fit": fit}, [fig])


def _figure(tab, res, target, well, sigma, n_ok, exact) -> Figure:
    fig = MplFigure(figsize=(10, 4))
    ax1, ax2 = fig.subplots(1, 2)
    xs = np.linspace(-1.8, 1.8, 400)
    ax1.plot(xs, well.f(xs), color="k")
    ax1.set_xlabel("x")
    ax1.set_ylabel("F(x)")
    ax1.set_title(f"Asymmetric double well, dF = F(1) - F(-1) = {well.delta_f:.3g}")
    ax1.axvline(well.saddle, ls=":", color="gray")
    plot_log_ratio(ax2, tab, res, exact, target, f"-2 dF / sigma^2 = {target:.4f}")
    ax2.set_ylabel("a ln(mu(right) / mu(left))")
    ax2.set_title("Gibbs limit of the occupation ratio")
    se0 = res.intercept_se
    caption = (f"Theory: a ln(occupation ratio) -> -2 dF/sigma^2 = {target:.4f} as a -> 0 (long-run law ~ "
               f"exp(-2F/(a sigma^2))). Seen: the line through the measured points extrapolates to {res.intercept:.4f} "
               f"+- {1.96 * se0:.4f} (95% CI); {n_ok} of {len(tab)} measured occupations agree with the exact discrete "
               f"chain, whose own line extrapolates to {exact.intercept:.4f} (the method's systematic error).")
    return Figure("gibbs", fig, caption)
