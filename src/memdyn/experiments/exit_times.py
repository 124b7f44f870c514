"""Experiment ``exit-times``: metastable exits of constant-step SGD follow Arrhenius' law.

Chains start at the deep minimum of an asymmetric double well (1-D, and a 2-D version with a
harmonic transverse direction) under isotropic Gaussian noise sigma, and run until an iterate
lands at or beyond the other minimum. For each step a on a grid with V/a in [lo, hi]
(V = 2 (F(saddle) - F(min)) / sigma^2):

* the mean exit time (censoring-aware exponential MLE) against the exact mean exit time of the
  discrete chain, solved as an absorbing chain on its transfer operator
  (:func:`memdyn.reference.exit_time_1d`). In 2-D the landscape is separable and the noise
  isotropic, so the first coordinate is the same 1-D chain and the same reference is exact;
* ln(a * mean exit) against 1/a: the measured line against the same fit through the exact values
  (statistical);
* the a -> 0 limit (deterministic): the discrete chain tends to the SDE dX = -F' dt + sqrt(a) sigma dW,
  whose exact mean first-passage time is computed by quadrature at V/a in [40, 120], far below a
  simulation's reach; extrapolated to a = 0 it gives the Freidlin-Wentzell barrier V (slope of
  ln(a T) in 1/a) and the Eyring-Kramers prefactor P = 2 pi / sqrt(F''(min) |F''(saddle)|), each
  with its residual bias computed (:func:`memdyn.stats.extrapolate`);
* exit times are close to exponential: their coefficient of variation against the exact
  discrete chain's (about 1), at the largest step.

The Brownian-bridge corrected exit times and the SDE limit's mean first-passage time at the
simulated steps are shown in the figure for comparison (they differ from the discrete chain by O(a)).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure as MplFigure
from pydantic import Field

from ..claims import claim
from ..dynamics import simulate
from ..episodes import coefficient_of_variation, exponential_fit
from ..landscapes import DoubleWell, DoubleWellND
from ..ldp import arrhenius_fit
from ..noise import Gaussian
from ..observers import ExitTime
from ..reference import exit_time_1d, sde_exit_time_1d
from ..stats import bootstrap_se, extrapolate
from .base import ConfigError, Context, Experiment, ExperimentConfig, Figure, Outcome


class ExitTimesConfig(ExperimentConfig):
    sigma: float = Field(2.6, gt=0, le=100, description="gradient-noise scale sigma")
    saddle: float = Field(0.2, ge=-0.5, le=0.5, description="s: barrier top of F'(x) = (x+1)(x-s)(x-1)")
    barrier_over_step: list[float] = Field([3.0, 5.0], min_length=2, max_length=2, description=(
        "range [lo, hi] of V/a covered by the step grid (3 <= lo < hi <= 8): exits are rare but happen"))
    n_steps: int = Field(5, ge=3, le=10, description="number of step sizes on the grid")
    chains: int = Field(1000, ge=100, le=10**5, description="chains per step size")
    horizon: float = Field(2.5, ge=2, le=20, description="run length in exact mean exit times (the rest is censored)")
    transverse_curvature: float = Field(1.0, gt=0, le=10, description="curvature of the harmonic direction (2-D)")


class ExitTimes(Experiment):
    name = "exit-times"
    summary = ("exit times vs the exact discrete chain; Arrhenius slope; a->0 barrier and Eyring-Kramers prefactor; "
               "exponential law")
    Config = ExitTimesConfig
    quick = {"barrier_over_step": [3.0, 4.2], "n_steps": 3, "chains": 400}
    sample_keys = ('chains',)

    def check(self, cfg):
        lo, hi = cfg.barrier_over_step
        if not 3 <= lo < hi <= 8:
            raise ConfigError(f"invalid value for exit-times.barrier_over_step={cfg.barrier_over_step}: need "
                              "3 <= lo < hi <= 8")
        well = self.well(cfg)
        V = 2 * well.barrier(self.start(cfg)) / cfg.sigma**2
        a_max = V / lo
        curv = well.d2f(well.left) if self.start(cfg) == "left" else well.d2f(well.right)
        if a_max * max(curv, cfg.transverse_curvature) > 0.15:
            raise ConfigError(f"invalid value for exit-times.sigma={cfg.sigma}: the largest step {a_max:.3g} times the "
                              f"curvature is {a_max * curv:.3g} > 0.15 (finite-step effects would dominate); raise sigma")

    @staticmethod
    def well(cfg) -> DoubleWell:
        return DoubleWell(-1.0, cfg.saddle, 1.0)

    @staticmethod
    def start(cfg) -> str:
        w = ExitTimes.well(cfg)
        return "left" if w.delta_f > 0 else "right"

    def run(self, cfg, ctx: Context) -> Outcome:
        import torch

        well = self.well(cfg)
        side = self.start(cfg)
        x0, target = (well.left, well.right) if side == "left" else (well.right, well.left)
        sign = 1.0 if side == "left" else -1.0  # distance to the target along +x for a left start
        V = 2 * well.barrier(side) / cfg.sigma**2
        lo, hi = cfg.barrier_over_step
        steps = V / np.linspace(lo, hi, cfg.n_steps)
        ref = well if side == "left" else DoubleWell(-1.0, -cfg.saddle, 1.0)  # references are for a left start

        def exact(a):
            return exit_time_1d(ref, cfg.sigma, a, -1.0, 1.0)

        rows, claims = [], []
        for dim, land in ((1, well), (2, DoubleWellND(well, [cfg.transverse_curvature]))):
            for a in steps:
                ex_a = exact(a)
                H = int(math.ceil(cfg.horizon * ex_a))
                init = np.zeros(dim)
                init[0] = x0

                def cell(a=a, H=H, land=land, init=init, dim=dim):
                    obs = ExitTime(lambda th: sign * (target - th[:, 0]), (a * cfg.sigma) ** 2)
                    sim = simulate(land, Gaussian(cfg.sigma), float(a), H, cfg.chains, init=init, dtype=torch.float64,
                                   seed=ctx.seed_for("exit", dim, float(a)), observers=[obs], progress=ctx.progress)
                    r = sim["exit_time"]
                    return {"bridge": r.bridge_time, "grid": r.grid_time, "exited": r.exited}

                c = ctx.cell(f"d={dim}_a={a:.6g}", cell)
                ex = c["exited"].astype(bool)
                fit = exponential_fit(np.where(ex, c["grid"], H).astype(float), ~ex)
                bridge = exponential_fit(np.maximum(c["bridge"], 1e-9), ~ex)
                rows.append({"dim": dim, "step": a, "V_over_a": V / a, "exact_chain": ex_a,
                             "exact_sde": sde_exit_time_1d(ref, cfg.sigma, a, -1.0, 1.0), "mean": fit.mean,
                             "mean_se": fit.mean_se, "bridge_mean": bridge.mean, "censored": float(1 - ex.mean())})
                claims.append(claim(f"mean exit time (steps), a={a:.4g}, {dim}-D", ex_a, fit.mean, fit.mean_se,
                                    detail="censoring-aware MLE; exact mean exit time of the discrete chain (absorbing "
                                           "chain on the transfer operator)"))
        tab = pd.DataFrame(rows)
        fits = {}
        for dim in (1, 2):
            t = tab[tab["dim"] == dim]
            meas = arrhenius_fit(t["step"], t["mean"], t["mean_se"])
            ex_fit = arrhenius_fit(t["step"], t["exact_chain"], t["mean_se"])
            fits[dim] = (meas, ex_fit)
            claims.append(claim(f"Arrhenius slope, {dim}-D: measured vs the same fit of the exact discrete chain",
                                ex_fit.barrier, meas.barrier, meas.barrier_se, fit=meas.line,
                                detail=f"a->0 limit V = {V:.4g}; same grid and weights, so the prediction is exact"))

        # the a -> 0 limit: the discrete chain tends to the SDE dX = -F' dt + sqrt(a) sigma dW, whose exact mean
        # first-passage time (quadrature) is cheap at steps far below a simulation's reach, V/a in [40, 120]
        fine = V / np.linspace(40, 120, 6)
        T = np.array([sde_exit_time_1d(ref, cfg.sigma, a, -1.0, 1.0, n=200001) for a in fine])
        ext_v = extrapolate(fine, fine * np.log(fine * T), degree=3)  # a ln(a T) = V + a ln P + O(a^2)
        ext_p = extrapolate(fine, np.log(fine * T) - V / fine, degree=2)  # ln(a T) - V/a = ln P + O(a)
        log_p = math.log(2 * math.pi / math.sqrt(well.d2f(x0) * abs(well.d2f(well.saddle))))
        src = "change from the extrapolation of one degree less, on the exact SDE values (residual bias)"
        claims.append(claim("Arrhenius barrier: exact mean exit times extrapolated to a->0 vs V = 2 dF/sigma^2", V,
                            ext_v.value, systematic=ext_v.bias, systematic_source=src,
                            detail=f"a ln(a T), cubic in a, V/a in [40, 120]; quadratic: {ext_v.lower:.6g}"))
        claims.append(claim("Eyring-Kramers prefactor: ln(a T) - V/a extrapolated to a->0 vs "
                            "ln(2 pi / sqrt(F''(min) |F''(saddle)|))", log_p, ext_p.value, systematic=ext_p.bias,
                            systematic_source=src, detail=f"quadratic in a, V/a in [40, 120]; linear: {ext_p.lower:.6g}"))

        # the exponential law, at the largest step with a long horizon (no censoring to bias the CV)
        a = float(steps.max())
        m_ex, var_ex = exit_time_1d(ref, cfg.sigma, a, -1.0, 1.0, variance=True)

        def law_cell():
            obs = ExitTime(lambda th: sign * (target - th[:, 0]), (a * cfg.sigma) ** 2)
            sim = simulate(well, Gaussian(cfg.sigma), a, int(math.ceil(15 * m_ex)), cfg.chains, init=[x0],
                           dtype=torch.float64, seed=ctx.seed_for("law"), observers=[obs], progress=ctx.progress)
            return {"grid": sim["exit_time"].grid_time[sim["exit_time"].exited].astype(float)}

        times = ctx.cell("law", law_cell)["grid"]
        claims.append(claim(f"coefficient of variation of exit times, a={a:.4g}", math.sqrt(var_ex) / m_ex,
                            coefficient_of_variation(times),
                            bootstrap_se(times, coefficient_of_variation, seed=ctx.seed_for("bootstrap")),
                            detail="exponential law (CV = 1 as a->0); exact discrete chain's CV; bootstrap se"))
        fit_tab = pd.DataFrame([{"dim": d, "slope": m.barrier, "slope_se": m.barrier_se, "slope_exact_chain": e.barrier,
                                 "V": V, "log_prefactor": m.log_prefactor, "chi2": m.line.chi2, "p_value": m.line.p_value}
                                for d, (m, e) in fits.items()])
        limit = pd.DataFrame({"step": fine, "sde_mean_exit": T, "a_log_aT": fine * np.log(fine * T)})
        return Outcome(claims, {"exits": tab, "arrhenius": fit_tab, "limit": limit},
                       [_figure(tab, fits, V, claims)])


def _figure(tab, fits, V, claims) -> Figure:
    fig = MplFigure(figsize=(10, 4))
    ax1, ax2 = fig.subplots(1, 2)
    for j, dim in enumerate((1, 2)):
        t = tab[tab["dim"] == dim]
        inv = 1 / t["step"].to_numpy()
        y = np.log(t["step"] * t["mean"])
        ax1.errorbar(inv, y, yerr=1.96 * t["mean_se"] / t["mean"], fmt="o", color=f"C{j}", capsize=3,
                     label=f"{dim}-D, measured")
        if dim == 1:
            ax1.plot(inv, np.log(t["step"] * t["exact_chain"]), "s", mfc="none", color="k", label="exact discrete chain")
            ax1.plot(inv, np.log(t["step"] * t["exact_sde"]), "+", color="gray", label="SDE limit (quadrature)")
            xs = np.linspace(inv.min(), inv.max(), 20)
            m = fits[1][0]
            ax1.plot(xs, m.log_prefactor + m.barrier * xs, "-", color="C0", lw=0.8,
                     label=f"fit: slope {m.barrier:.3f}")
            anchor = float(np.mean(y - V * inv))  # theory slope, placed through the data's centre
            ax1.plot(xs, anchor + V * xs, "--", color="C3", label=f"slope V = {V:.3f} (theory)")
    ax1.set_xlabel("1 / a")
    ax1.set_ylabel("ln(a * mean exit time)")
    ax1.set_title("Arrhenius law of metastable exits")
    ax1.legend(fontsize=7)
    t = tab[tab["dim"] == 1]
    ax2.errorbar(t["step"], t["mean"] / t["exact_chain"], yerr=1.96 * t["mean_se"] / t["exact_chain"], fmt="o-",
                 color="k", capsize=3, label="measured / exact discrete chain")
    ax2.plot(t["step"], t["exact_sde"] / t["exact_chain"], "x-", color="gray", label="SDE limit / exact discrete chain")
    ax2.plot(t["step"], t["bridge_mean"] / t["exact_chain"], "^-", color="C0", label="bridge-corrected / exact chain")
    ax2.axhline(1, color="k", lw=0.8)
    ax2.set_xlabel("step a")
    ax2.set_xticks(t["step"], [f"{v:.3f}" for v in t["step"]])
    ax2.set_ylabel("mean exit time / exact discrete chain")
    ax2.set_title("Discrete chain vs its SDE limit (1-D)")
    ax2.legend(fontsize=8)
    n_ok = sum(c.holds for c in claims)
    m = fits[1][0]
    caption = (f"Theory: a memorizing (metastable) state is left after ~exp(V/a) steps, V = 2 dF_barrier / sigma^2 = "
               f"{V:.4g}, and exits are memoryless. Seen: the fitted slope is {m.barrier:.4g} +- "
               f"{1.96 * m.barrier_se:.2g} (1-D; the exact discrete chain's fit gives {fits[1][1].barrier:.4g}); {n_ok} of {len(claims)} claims hold.")
    return Figure("exit_times", fig, caption)
