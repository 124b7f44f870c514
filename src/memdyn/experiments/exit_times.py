"""Experiment ``exit-times``: metastable exits of constant-step SGD follow Arrhenius' law (MODEL.md §5).

Chains start at the deep minimum of an asymmetric double well (1-D, and a 2-D version with a
harmonic transverse direction) under isotropic Gaussian noise sigma, and run until they reach the
other minimum. For each step a on a grid with V/a in [lo, hi] (V = 2 (F(saddle) - F(min)) / sigma^2):

* the Brownian-bridge corrected mean exit time (censoring-aware exponential MLE) against the exact
  mean first-passage time of the SDE limit, by quadrature;
* ln(a * mean exit) against 1/a: the slope is the barrier V (Arrhenius / Freidlin-Wentzell); the
  same fit through the exact SDE values gives the finite-a correction, reported beside it;
* exit times are close to exponential (coefficient of variation about 1), at the largest step.
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
from ..ldp import arrhenius_fit, mean_exit_time_1d
from ..noise import Gaussian
from ..observers import ExitTime
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
    summary = "Arrhenius: ln(a*mean exit) vs 1/a has slope V; bridge-corrected means vs exact MFPT; exponential law"
    Config = ExitTimesConfig
    quick = {"barrier_over_step": [3.0, 4.2], "n_steps": 3, "chains": 300}

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
        mirror = DoubleWell(-1.0, -cfg.saddle, 1.0)  # exact 1-D MFPT is computed for a left start
        rows, claims = [], []
        for dim, land in ((1, well), (2, DoubleWellND(well, [cfg.transverse_curvature]))):
            for a in steps:
                exact = mean_exit_time_1d(well if side == "left" else mirror, cfg.sigma, a, -1.0, 1.0)
                H = int(math.ceil(cfg.horizon * exact))
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
                fit = exponential_fit(np.maximum(c["bridge"], 1e-9), ~ex)
                grid_fit = exponential_fit(np.where(ex, c["grid"], H).astype(float), ~ex)
                rows.append({"dim": dim, "step": a, "V_over_a": V / a, "exact_sde": exact, "bridge_mean": fit["mean"],
                             "bridge_se": fit["mean_se"], "grid_mean": grid_fit["mean"], "censored": float(1 - ex.mean()),
                             "cv": coefficient_of_variation(c["bridge"][ex]) if ex.sum() > 2 else 0.0})
                if dim == 1:
                    claims.append(claim(f"mean exit time (steps), a={a:.4g}, 1-D", exact, fit["mean"], fit["mean_se"],
                                        detail="bridge-corrected, censoring-aware; exact SDE mean first-passage time"))
        tab = pd.DataFrame(rows)
        fits = {}
        for dim in (1, 2):
            t = tab[tab["dim"] == dim]
            meas = arrhenius_fit(t["step"], t["bridge_mean"], t["bridge_se"])
            ex_fit = arrhenius_fit(t["step"], t["exact_sde"], t["bridge_se"])
            fits[dim] = (meas, ex_fit)
            claims.append(claim(f"Arrhenius slope (barrier V = {V:.4g}), {dim}-D", V, meas["barrier"], meas["barrier_se"],
                                detail=f"a->0 prediction; the exact SDE values over this grid give {ex_fit['barrier']:.4g} "
                                       f"(finite-a correction {ex_fit['barrier'] - V:+.3g})"))
        # the exponential law, at the largest step with a long horizon (no censoring to bias the CV)
        a = float(steps.max())
        exact = mean_exit_time_1d(well if side == "left" else mirror, cfg.sigma, a, -1.0, 1.0)

        def law_cell():
            obs = ExitTime(lambda th: sign * (target - th[:, 0]), (a * cfg.sigma) ** 2)
            sim = simulate(well, Gaussian(cfg.sigma), a, int(math.ceil(15 * exact)), cfg.chains, init=[x0],
                           dtype=torch.float64, seed=ctx.seed_for("law"), observers=[obs], progress=ctx.progress)
            return {"bridge": sim["exit_time"].bridge_time[sim["exit_time"].exited]}

        times = ctx.cell("law", law_cell)["bridge"]
        claims.append(claim(f"coefficient of variation of exit times, a={a:.4g}", 1.0, coefficient_of_variation(times),
                            1 / math.sqrt(times.size), detail="exponential law: CV = 1, se = 1/sqrt(n) for an "
                                                               "exponential (delta method)"))
        fit_tab = pd.DataFrame([{"dim": d, "slope": m["barrier"], "slope_se": m["barrier_se"], "slope_exact_sde":
                                 e["barrier"], "V": V, "log_prefactor": m["log_prefactor"]} for d, (m, e) in fits.items()])
        return Outcome(claims, {"exits": tab, "arrhenius": fit_tab}, [_figure(tab, fits, V, well, claims)])


def _figure(tab, fits, V, well, claims) -> Figure:
    fig = MplFigure(figsize=(10, 4))
    ax1, ax2 = fig.subplots(1, 2)
    for j, dim in enumerate((1, 2)):
        t = tab[tab["dim"] == dim]
        inv = 1 / t["step"].to_numpy()
        y = np.log(t["step"] * t["bridge_mean"])
        ax1.errorbar(inv, y, yerr=1.96 * t["bridge_se"] / t["bridge_mean"], fmt="o", color=f"C{j}", capsize=3,
                     label=f"{dim}-D, bridge-corrected")
        if dim == 1:
            ax1.plot(inv, np.log(t["step"] * t["grid_mean"]), "x", color="gray", label="1-D, grid crossings only")
            ax1.plot(inv, np.log(t["step"] * t["exact_sde"]), "s", mfc="none", color="k", label="exact SDE (quadrature)")
            xs = np.linspace(inv.min(), inv.max(), 20)
            m = fits[1][0]
            ax1.plot(xs, m["log_prefactor"] + m["barrier"] * xs, "-", color="C0", lw=0.8,
                     label=f"fit: slope {m['barrier']:.3f}")
            anchor = float(np.mean(y - V * inv))  # theory slope, placed through the data's centre
            ax1.plot(xs, anchor + V * xs, "--", color="C3", label=f"slope V = {V:.3f} (theory)")
    ax1.set_xlabel("1 / a")
    ax1.set_ylabel("ln(a * mean exit time)")
    ax1.set_title("Arrhenius law of metastable exits")
    ax1.legend(fontsize=7)
    t = tab[tab["dim"] == 1]
    ax2.plot(t["step"], t["grid_mean"] / t["exact_sde"], "x-", color="gray", label="grid crossings only")
    ax2.errorbar(t["step"], t["bridge_mean"] / t["exact_sde"], yerr=1.96 * t["bridge_se"] / t["exact_sde"], fmt="o-",
                 color="C0", capsize=3, label="Brownian-bridge corrected")
    ax2.axhline(1, color="k", lw=0.8)
    ax2.set_xlabel("step a")
    ax2.set_xticks(t["step"], [f"{v:.3f}" for v in t["step"]])
    ax2.set_ylabel("mean exit time / exact SDE value")
    ax2.set_title("Discrete-time bias and its bridge correction (1-D)")
    ax2.legend(fontsize=8)
    n_ok = sum(c.holds for c in claims)
    m = fits[1][0]
    caption = (f"Theory: a memorizing (metastable) state is left after ~exp(V/a) steps, V = 2 dF_barrier / sigma^2 = "
               f"{V:.4g}, and exits are memoryless. Seen: the fitted slope is {m['barrier']:.4g} +- "
               f"{1.96 * m['barrier_se']:.2g} (1-D); {n_ok} of {len(claims)} claims hold.")
    return Figure("exit_times", fig, caption)
