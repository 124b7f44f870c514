"""Experiment ``hysteresis``: the memorized fraction lags the slow variable and draws a loop, whose
area the exact chain gives at every sweep rate (on the default grid it shrinks as the sweep slows).

The fast part is a double well whose left well M stands for a memorizing state and right well G for
a generalizing one; the slow variable sweeps the tilt c down and back up
(:class:`memdyn.landscapes.DrivenTiltedWell` with its non-monotone tilt, c = c_end - kappa (y -
y_start)(y_target - y), y relaxing to y_target at rate a eps per step), from c_end through -c_end
and back toward c_end. Unlike double-descent's path, the tilt stays inside (-c_f, c_f): both wells
exist all the time, and a chain changes well only by a noise-activated exit. The occupation of M,
P_k = P(x_k < 0), would follow the long-run law of the current c if the sweep were infinitely slow
(the adiabatic limit: one curve, no loop); at a finite rate it lags behind, higher on the way back
up than on the way down, and the loop P against c encloses an area

    A = sum_k (P_k + P_{k+1}) / 2 (c_{k+1} - c_k)   (trapezoids on a grid of recorded steps),

positive when the way back up runs above the way down.

The theory: when the mean exit time, about 2 pi / (a sqrt(W''_min |W''_saddle|)) exp(2 dV(c) / (a sigma^2))
steps, is much shorter than the sweep, ~ 1/(a eps), the occupation tracks c adiabatically and the loop
closes; when it is much longer, the chain stays in whichever well it entered (trapping, a quench); the
area vanishes at both ends and is largest in between. Near the turning points the shallow well's barrier
is below the temperature, so this is not an asymptotic (Kramers) test: the claims check the simulated
loop against the exact chain, which holds at any rate.

Claims (fixed before the first run):

* per eps, the loop area against the exact discrete chain (the chain's law propagated step by step
  along the slow path, :func:`memdyn.reference.driven_chain_1d`, the same trapezoids over the same
  recorded steps; two-sided; the bias is the mesh extrapolation's, summed over the trapezoids);
* between neighbouring eps, the change of the area from the slower to the faster sweep against the
  exact chain's change (two-sided; independent chains). Which way the area moves depends on the
  regime (it vanishes in both limits); on the default grid the exact chain has it shrink as the sweep
  slows, which the table and figure show.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure as MplFigure
from pydantic import Field

from ..claims import claim
from ..dynamics import simulate
from ..landscapes import DrivenTiltedWell
from ..noise import Gaussian
from ..observers import Trace
from ..reference import driven_chain_1d
from ..stats import mean_se
from .base import ConfigError, Context, Experiment, ExperimentConfig, Figure, Outcome

#: recorded steps along each sweep (the trapezoid grid of the loop area)
POINTS = 800
MESH_SRC = ("residual mesh bias of the exact chain (change of its extrapolation to zero cell width from one degree "
            "less), summed over the trapezoids")


class HysteresisConfig(ExperimentConfig):
    step: float = Field(0.05, ge=0.01, le=0.5, description="step size a")
    sigma: float = Field(1.5, gt=0, le=10, description="gradient-noise scale sigma on the fast variable")
    eps: list[float] = Field([5e-4, 1e-3, 2e-3, 4e-3], min_length=2, max_length=6, description=(
        "weights eps of the slow loss (>= 2 distinct values in (0, 0.05]): the sweep takes about ln(1 / end) / (a eps) "
        "steps"))
    c_end: float = Field(0.25, gt=0, lt=0.38, description=(
        "the tilt at both ends of the sweep; it dips to -c_end (inside the folds +-0.385: both wells always exist)"))
    end: float = Field(0.02, gt=0, lt=0.5, description=(
        "the sweep stops when y_target - y has fallen to this fraction of its start (c then within about 8 end c_end of c_end)"))
    x_start: float = Field(1.1, ge=-3, le=3, description="fast variable at the start (in the generalizing well)")
    chains: int = Field(2000, ge=200, le=10**6, description="chains per sweep")
    max_steps: int = Field(2_000_000, ge=1000, le=10**8, description="budget: most iterations per sweep")


class Hysteresis(Experiment):
    name = "hysteresis"
    section = "4. Memorization as intermittent collapse"
    prediction = ("Under a sweep of the memorization pull down and up, the memorized fraction lags behind and draws a "
                  "loop; a sweep slow against the exits closes it (adiabatic), one fast against them traps (a quench).")
    summary = "memorized fraction under a sweep down and up: hysteresis loop area and its change with eps vs the exact chain"
    Config = HysteresisConfig
    suite_form = "quick"
    quick = {"chains": 1000, "eps": [2e-3, 4e-3, 8e-3]}
    sample_keys = ("chains",)

    @staticmethod
    def landscape(cfg, eps: float) -> DrivenTiltedWell:
        return DrivenTiltedWell(eps, 1.0, kappa=8 * cfg.c_end, c_end=cfg.c_end, y_start=0.0)

    def steps(self, cfg, eps: float) -> tuple[int, int]:
        """(K, every): the iterations of one sweep, until y_target - y = end (y_target - y_start), rounded
        up to a multiple of the recording interval ``every`` (about POINTS recorded steps)."""
        k = math.log(1 / cfg.end) / -math.log1p(-cfg.step * eps)
        every = max(1, math.ceil(k / POINTS))
        return every * math.ceil(k / every), every

    def check(self, cfg):
        eps = sorted(cfg.eps)
        if len(set(eps)) < 2 or eps[0] <= 0 or eps[-1] > 0.05:
            raise ConfigError(f"invalid value for hysteresis.eps={cfg.eps}: need >= 2 distinct values in (0, 0.05]")
        land = self.landscape(cfg, eps[0])
        x_g = land.branch(cfg.c_end, "right")
        if not abs(cfg.x_start - x_g) < 0.5:
            raise ConfigError(f"invalid value for hysteresis.x_start={cfg.x_start}: must be within 0.5 of the "
                              f"generalizing minimum {x_g:.4g} at c_end (the sweep starts from that well)")
        if cfg.step * float(land.well.d2f(-1.5)) > 1.0:
            raise ConfigError(f"invalid value for hysteresis.step={cfg.step}: a W''(-1.5) > 1 (the chain would "
                              "overshoot in the wells); lower the step")
        k, _ = self.steps(cfg, eps[0])
        if k > cfg.max_steps:
            raise ConfigError(f"invalid value for hysteresis.max_steps={cfg.max_steps}: the smallest eps needs {k} "
                              "iterations; raise max_steps or the smallest eps")

    def run(self, cfg, ctx: Context) -> Outcome:
        eps_grid = sorted(cfg.eps)
        rows, loops, claims = [], {}, []
        for eps in eps_grid:
            land, (K, every) = self.landscape(cfg, eps), self.steps(cfg, eps)
            rec = np.arange(0, K + 1, every)
            c = np.asarray(land.c_of(land.slow_path(0.0, cfg.step, rec)))
            dc = np.diff(c)

            def sim_cell(eps=eps, land=land, K=K, every=every, dc=dc):
                sim = simulate(land, Gaussian(cfg.sigma, scales=[1.0, 0.0]), cfg.step, K, cfg.chains,
                               init=[cfg.x_start, 0.0], seed=ctx.seed_for("sweep", eps),
                               observers=[Trace(every=every, coords=[0])], dtype=torch.float64, progress=ctx.progress)
                left = (sim["trace"].values[:, :, 0] < 0).astype(np.float64)  # (recorded steps, chains)
                per_chain = (0.5 * (left[1:] + left[:-1]) * dc[:, None]).sum(axis=0)
                return {"P": left.mean(axis=1), "area": per_chain}

            m = ctx.cell(f"sweep_eps={eps:.6g}", sim_cell)

            def exact_cell(land=land, K=K, rec=rec):
                lo = -1.5 - 10 * cfg.sigma * math.sqrt(cfg.step / 4)  # 10 noise widths beyond the wells (W'' ~ 2)
                r = driven_chain_1d(land, cfg.sigma, cfg.step, 0.0, K, cfg.x_start, lo, -lo, [], edge=0.0,
                                    observe=lambda x: (x < 0).astype(np.float64), at=rec)  # x = 0 on a cell edge
                return {"P": np.array([o.value for o in r.observed]), "bias": np.array([o.bias for o in r.observed])}

            e = ctx.cell(f"exact_eps={eps:.6g}", exact_cell)
            area, area_se = mean_se(m["area"])
            exact = float((0.5 * (e["P"][1:] + e["P"][:-1]) * dc).sum())
            bias = float((0.5 * (e["bias"][1:] + e["bias"][:-1]) * np.abs(dc)).sum())
            claims.append(claim(f"loop-area@eps={eps:g}", f"hysteresis loop area of P(memorizing well) against c, "
                                f"eps = {eps:g}", exact, area, area_se, systematic=bias, systematic_source=MESH_SRC,
                                detail=(f"sweep of {K} steps: c from {cfg.c_end:g} down to {-cfg.c_end:g} and back to "
                                        f"{c[-1]:.3f}; trapezoids over {len(rec)} recorded steps, the same for the "
                                        "chains and the exact chain")))
            rows.append({"eps": eps, "steps": K, "area": area, "area_se": area_se, "area_exact": exact,
                         "area_exact_bias": bias})
            loops[eps] = (c, m["P"], e["P"])
        tab = pd.DataFrame(rows)
        for fast, slow in zip(tab.iloc[::-1].itertuples(), tab.iloc[::-1].iloc[1:].itertuples()):
            claims.append(claim(f"loop-change@fast={fast.eps:g},slow={slow.eps:g}",
                                f"change of the loop area from eps = {slow.eps:g} to eps = {fast.eps:g}",
                                fast.area_exact - slow.area_exact, fast.area - slow.area,
                                math.hypot(fast.area_se, slow.area_se),
                                systematic=fast.area_exact_bias + slow.area_exact_bias, systematic_source=MESH_SRC,
                                detail="independent chains; the exact chain's change is the prediction"))
        fig = _figure(cfg, tab, loops)
        return Outcome(claims, {"loops": tab}, [fig])


def _figure(cfg, tab, loops) -> Figure:
    fig = MplFigure(figsize=(11, 4.4))
    ax1, ax2 = fig.subplots(1, 2)
    for i, (eps, (c, P, Pe)) in enumerate(loops.items()):
        ax1.plot(c, P, color=f"C{i}", label=f"eps = {eps:g}")
        ax1.plot(c, Pe, color="k", ls=":", lw=1)
    ax1.set_xlabel("tilt c (down, then back up)")
    ax1.set_ylabel("P(x in the memorizing well)")
    ax1.set_title("Memorized fraction against the slow variable (dotted: exact chain)", fontsize=10)
    ax1.legend(fontsize=8)
    ax2.errorbar(tab["eps"], tab["area"], yerr=1.96 * tab["area_se"], fmt="o", label="measured")
    ax2.plot(tab["eps"], tab["area_exact"], "k:", marker="s", mfc="none", label="exact chain")
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xlabel("eps (sweep rate a eps per step)")
    ax2.set_ylabel("loop area")
    ax2.set_title("The loop closes as the sweep slows", fontsize=10)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    areas = ", ".join(f"{r.area:.3f}" for r in tab.itertuples())
    caption = (f"Theory: under a sweep slower than the exits the memorized fraction follows the slow variable; at a "
               f"finite rate it lags and draws a loop that shrinks as the sweep slows. Seen: loop areas {areas} at "
               f"eps = {', '.join(f'{e:g}' for e in tab['eps'])}, beside the exact chain's.")
    return Figure("hysteresis", fig, caption)
