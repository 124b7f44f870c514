"""Experiment ``gibbs``: the long-run law of constant-step SGD is Gibbs-like (MODEL.md §5).

On the asymmetric double well F'(x) = k (x + 1)(x - s)(x - 1) with isotropic Gaussian noise of
scale sigma, the occupation of the right (shallower) basin {x >= s} obeys

    a ln(mu_a(right) / mu_a(left)) -> -2 (F(1) - F(-1)) / sigma^2 = -2 dF / sigma^2   as a -> 0

(temperature = a sigma^2 / 2). For each step on a grid the experiment measures the occupation
from many independent chains, checks it against the exact stationary law of the discrete chain
(transfer operator, :func:`memdyn.dynamics.stationary_1d`), and extrapolates a ln(ratio) to
a -> 0 by a weighted straight-line fit whose intercept is compared with -2 dF / sigma^2.

The default step grid spans temperatures T = a sigma^2 / 2 in [T_max / 2, T_max] with
T_max = min(V_shallow / 1.5, |dF| / 3) (V_shallow: the barrier seen from the shallower well): cold
enough that the shallower well is metastable and the a -> 0 expansion is close to linear (the exact
discrete chain's own line extrapolates within ~1.5 % of the limit for |s| in [0.15, 0.25], k in
[0.5, 3]), warm enough that both wells are visited.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure as MplFigure
from pydantic import Field

from ..claims import claim, mean_se
from ..ldp import gibbs_fit
from ..dynamics import simulate, stationary_1d
from ..landscapes import DoubleWell
from ..noise import Gaussian
from ..observers import Occupation, intervals
from .base import ConfigError, Context, Experiment, ExperimentConfig, ExperimentError, Figure, Outcome

MAX_CHAIN_STEPS = 4e9  # refuse configurations that would run for hours


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
        "averaging window per chain, in mixing times of the exact discrete chain (after 5 mixing times of burn-in "
        "from the deeper well)"))
    dtype: str = Field("float32", pattern="^(float32|float64)$", description="simulation precision")


class Gibbs(Experiment):
    name = "gibbs"
    summary = "a*ln(occupation ratio) of a double well over a step grid, extrapolated to a->0, vs -2 dF/sigma^2"
    Config = GibbsConfig
    quick = {"chains": 600, "mix": 6.0}

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
        deep = well.left if well.delta_f > 0 else well.right
        sigma, dF = cfg.sigma, well.delta_f
        target = -2 * dF / sigma**2
        rows, claims = [], []
        grid = self.grid(cfg)
        for a in grid:
            row = right_occupation(well, sigma, Gaussian(sigma), float(a), cfg.chains, cfg.mix, deep, ctx,
                                   getattr(torch, cfg.dtype), f"a={a:.6g}")
            rows.append({**row, "temperature": a * sigma**2 / 2})
            claims.append(claim(f"right-well occupation at a={a:.4g}", row["p_right_exact"], row["p_right"],
                                row["p_right_se"], detail="exact stationary law of the discrete chain (transfer operator)"))
        tab = pd.DataFrame(rows)
        res = gibbs_fit(tab["step"], tab["a_log_ratio"], tab["a_log_ratio_se"])
        chi2 = res["chi2"]
        claims.insert(0, claim("a*ln(occupation ratio) extrapolated to a->0", target, res["intercept"], res["intercept_se"],
                               detail=f"Gibbs / Freidlin-Wentzell: -2 dF / sigma^2, dF = {dF:.4g}; "
                                      f"line fit chi2 = {chi2:.2f} on {len(tab) - 2} dof"))
        fit = pd.DataFrame([{**res, "predicted": target,
                             "delta_f": dF, "sigma": sigma}])
        # the same fit through the exact discrete-chain values: the extrapolation's own systematic error
        exact = gibbs_fit(tab["step"], tab["a_log_ratio_exact"], tab["a_log_ratio_se"])
        fit["intercept_exact_chain"] = exact["intercept"]
        n_ok = sum(c.holds for c in claims[1:])
        fig = _figure(tab, res, target, well, sigma, n_ok, exact)
        return Outcome(claims, {"occupation": tab, "fit": fit}, [fig])


def right_occupation(well: DoubleWell, sigma, noise, a: float, chains: int, mix: float, start: float, ctx: Context,
                     dtype, key: str) -> dict:
    """Occupation of the right basin {x >= saddle} of 1-D constant-step SGD at step ``a``: measured
    from ``chains`` independent chains started at ``start`` (after 5 mixing times of burn-in,
    averaged over ``mix`` mixing times) and exact from the transfer operator of the discrete chain.

    ``sigma`` is the noise scale (a number, or a function of positions for state-dependent noise,
    matching ``noise``). Returns one table row: p_right (+ se, exact), a ln(p / (1 - p)) (+ se,
    exact), the mixing time and the run length.
    """
    sig_hi = float(np.max(sigma(np.linspace(-2, 2, 401)))) if callable(sigma) else float(sigma)
    sig_lo = float(np.min(sigma(np.linspace(-2, 2, 401)))) if callable(sigma) else float(sigma)
    lo, hi = _support(well, sig_hi, a)
    n_cells = int(min(20000, max(3000, 12 * (hi - lo) / (a * sig_lo))))
    x, pi, tmix = stationary_1d(well, sigma, a, lo, hi, n_cells)
    p_exact = float(pi[x >= well.saddle].sum())
    burn = int(math.ceil(5 * tmix))  # from one well: residual bias <= e^-5 / mix of p
    n_steps = burn + int(math.ceil(mix * tmix))
    if n_steps * chains > MAX_CHAIN_STEPS:
        raise ConfigError(f"{ctx.experiment}: at step {a:g} the chain mixes in {tmix:.3g} steps, so "
                          f"{n_steps * chains:.3g} chain-steps would be needed (limit {MAX_CHAIN_STEPS:.0e}): use a "
                          "larger step, less noise or fewer chains")
    every = max(1, int(tmix // 50))

    def cell():
        sim = simulate(well, noise, float(a), n_steps, chains, init=[start], seed=ctx.seed_for("a", float(a)),
                       dtype=dtype, progress=ctx.progress,
                       observers=[Occupation(intervals([-np.inf, well.saddle, np.inf]), 2, start=burn, every=every)])
        return {"right": sim["occupation"].fractions[:, 1]}

    p, se = mean_se(ctx.cell(key, cell)["right"])
    if not 0 < p < 1:
        raise ExperimentError(f"at a={a:g} every chain stayed in one well (p={p}); raise mix or chains")
    return {"step": a, "mixing_steps": tmix, "n_steps": n_steps, "p_right": p, "p_right_se": se,
            "p_right_exact": p_exact, "a_log_ratio": a * math.log(p / (1 - p)), "a_log_ratio_se": a * se / (p * (1 - p)),
            "a_log_ratio_exact": a * math.log(p_exact / (1 - p_exact))}


def _support(well: DoubleWell, sigma: float, a: float) -> tuple[float, float]:
    """An interval holding all but ~exp(-40) of the stationary mass: where F rises 40 T above its
    minimum on the outer sides, padded by 8 noise kicks a sigma. Kept tight on purpose: far out the
    drift map x - a F'(x) overshoots, which would give the transfer operator spurious cycles."""
    from scipy.optimize import brentq

    T = a * sigma**2 / 2
    level = min(well.f(well.left), well.f(well.right)) + 40 * T
    lo = brentq(lambda x: well.f(x) - level, well.left - 100, well.left)
    hi = brentq(lambda x: well.f(x) - level, well.right, well.right + 100)
    return lo - 8 * a * sigma, hi + 8 * a * sigma


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
    se0 = res["intercept_se"]
    caption = (f"Theory: a ln(occupation ratio) -> -2 dF/sigma^2 = {target:.4f} as a -> 0 (long-run law ~ "
               f"exp(-2F/(a sigma^2))). Seen: the line through the measured points extrapolates to {res['intercept']:.4f} "
               f"+- {1.96 * se0:.4f} (95% CI); {n_ok} of {len(tab)} measured occupations agree with the exact discrete "
               f"chain, whose own line extrapolates to {exact['intercept']:.4f} (the method's systematic error).")
    return Figure("gibbs", fig, caption)


def plot_log_ratio(ax, tab, res, exact, target, target_label: str) -> None:
    """a ln(occupation ratio) against a: measured points with 95% CI, the exact discrete chain, both
    straight-line fits extrapolated to a = 0, and the a -> 0 prediction."""
    a = tab["step"].to_numpy()
    ax.errorbar(a, tab["a_log_ratio"], yerr=1.96 * tab["a_log_ratio_se"], fmt="o", color="k", capsize=3,
                label="SGD, measured (95% CI)")
    ax.plot(a, tab["a_log_ratio_exact"], "s", mfc="none", color="C0", label="exact discrete chain")
    grid = np.linspace(0, a.max() * 1.05, 50)
    ax.plot(grid, res["intercept"] + res["slope"] * grid, "--", color="C1", label="weighted line fit (measured)")
    ax.plot(grid, exact["intercept"] + exact["slope"] * grid, ":", color="C0", label="same fit, exact discrete chain")
    ax.errorbar([0], [res["intercept"]], yerr=[1.96 * res["intercept_se"]], fmt="D", color="C1", capsize=3)
    ax.plot([0], [target], "*", ms=14, color="C3", label=target_label)
    ax.set_xlabel("step size a")
    ax.legend(fontsize=7)
