"""Experiment ``double-descent``: the test error falls, plateaus and falls again as the fast
minimum changes branch along the slow path, after a plateau that scales as 1/eps.

The model (:class:`memdyn.landscapes.DrivenTiltedWell`): a double well tilted by a slow
variable, F0(x; c) = W(x) - c x with c = y, and y relaxing from ``y_start`` to ``y_target`` under
its own loss eps (y - y_target)^2 / 2, so y_k = y_t + (y_0 - y_t)(1 - a eps)^k, noise-free.
The left minimum of F0 exists while c < c_f and vanishes in a fold at c = c_f. The test error is
E_test = (x - x_test)^2 with x_test the right minimum at c = y_target.

Along training x falls from ``x_start`` into the left branch (the test error falls), rides it
while the branch drifts (the plateau), and jumps to the right branch near the fold (the error
falls again). The noise-free slow path crosses the fold at k_f = ln((y_t - y_0)/(y_t - c_f)) /
(-ln(1 - a eps)) ~ 1/(a eps); the noise-free chain jumps a little later (the delay of a dynamic
fold, of order eps^(-1/3) / a steps); gradient noise makes it jump earlier, once the shrinking
barrier of the left well no longer holds it.

Per chain the plateau is the number of steps from entering the left branch (x first at or above
``x_in``, halfway from x_start to the left minimum at y_0) to the jump (x first at or above the
right fold point x_f+, beyond which only the right branch lies).

Claims:

* per eps: the mean plateau against the exact discrete chain (the chain's law propagated step by
  step along the slow path, :func:`memdyn.reference.driven_chain_1d`, extrapolated to zero cell
  width);
* the slope of ln(plateau) against ln(1/eps): measured against the exact chain's slope on the
  same grid (the measured-to-exact ratio fitted, so the curvature both share does not enter the
  standard error);
* the 1/eps law itself, noise-free: the plateau in slow time, -ln(1 - a eps) * plateau, tends to
  ln((y_t - y_0)/(y_t - c_f)) as eps -> 0 (extrapolated from eps = 1e-4 .. 6.4e-3 in powers of
  eps^(1/3); the dynamic fold's delay is the eps^(2/3) term). With noise the slope stays below 1
  at finite eps: the shrinking barrier releases the chain earlier in slow time when eps is small;
* the early jump: k_det - E[jump], k_det the noise-free chain's jump step, at sigma and at a
  smaller noise, against the exact chain: the advance is positive and shrinks with a sigma^2;
* the test error in the middle of the plateau and at the end, against the exact chain.
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
from ..observers import FirstPassage, Trace
from ..reference import driven_chain_1d
from ..stats import extrapolate, line_fit, mean_se
from .base import ConfigError, Context, Experiment, ExperimentConfig, ExperimentError, Figure, Outcome

#: the noise-free 1/eps law is extrapolated from LAW_POINTS values of eps doubling from LAW_EPS[0]
LAW_EPS, LAW_POINTS = 1e-4, 7
#: points of the test-error curve recorded per run, beside every one of the first EARLY_STEPS steps
CURVE_POINTS = 240
EARLY_STEPS = 32
MESH_SRC = "residual mesh bias of the exact chain: change of its extrapolation to zero cell width from one degree less"


class DoubleDescentConfig(ExperimentConfig):
    step: float = Field(0.05, gt=0, le=0.5, description="step size a")
    sigma: float = Field(1.5, gt=0, le=10, description="gradient-noise scale sigma on the fast variable")
    eps: list[float] = Field([0.005, 0.01, 0.02, 0.04], min_length=3, max_length=8, description=(
        "weights eps of the slow loss (>= 3 distinct values in (0, 0.2]): the slow variable moves at rate a eps per step"))
    noise_ratio: float = Field(0.5, ge=0.2, le=0.9, description=(
        "the early-jump claim reruns the middle eps at sigma * noise_ratio"))
    y_start: float = Field(-0.8, ge=-5, le=5, description="slow variable (the tilt c = y) at the start")
    y_target: float = Field(0.8, ge=-5, le=5, description="minimum of the slow loss (beyond the fold c_f ~ 0.385)")
    x_start: float = Field(-2.5, ge=-10, le=10, description="fast variable at the start (left of the left minimum)")
    chains: int = Field(4000, ge=200, le=10**6, description="chains per run")
    max_steps: int = Field(200000, ge=1000, le=10**7, description="budget: most iterations per run")


class DoubleDescent(Experiment):
    name = "double-descent"
    section = "6. Double descent"
    prediction = ("When the slow variable moves the fast minimum through a fold, the test error falls, plateaus and "
                  "falls again; the plateau lasts about 1/(a eps) steps, and noise ends it early.")
    summary = "plateau of the test error along a slow path through a fold: length vs the exact chain, scaling 1/eps"
    Config = DoubleDescentConfig
    quick = {"chains": 1500, "eps": [0.01, 0.02, 0.04]}
    sample_keys = ("chains",)

    @staticmethod
    def landscape(cfg, eps: float) -> DrivenTiltedWell:
        return DrivenTiltedWell(eps, cfg.y_target)

    def check(self, cfg):
        eps = sorted(cfg.eps)
        if len(set(eps)) < 3 or eps[0] <= 0 or eps[-1] > 0.2:
            raise ConfigError(f"invalid value for double-descent.eps={cfg.eps}: need >= 3 distinct values in (0, 0.2]")
        land = self.landscape(cfg, eps[0])
        c_f, _ = land.fold("left")
        if not cfg.y_target > c_f + 0.05:
            raise ConfigError(f"invalid value for double-descent.y_target={cfg.y_target}: must exceed the fold c_f = "
                              f"{c_f:.4g} by 0.05 or more, else the slow path never removes the left branch (no jump)")
        if not cfg.y_start < c_f - 0.2:
            raise ConfigError(f"invalid value for double-descent.y_start={cfg.y_start}: must be below c_f - 0.2 = "
                              f"{c_f - 0.2:.4g} (the chain needs a left branch to ride)")
        x_left = land.branch(cfg.y_start, "left")
        if not cfg.x_start < x_left - 0.2:
            raise ConfigError(f"invalid value for double-descent.x_start={cfg.x_start}: must be left of the left minimum "
                              f"{x_left:.4g} by 0.2 or more (the test error first falls as x relaxes into that branch)")
        curv = float(land.well.d2f(cfg.x_start))
        if cfg.step * curv > 1.0:
            raise ConfigError(f"invalid value for double-descent.step={cfg.step}: a W''(x_start) = {cfg.step * curv:.3g} "
                              "> 1 (the first steps would overshoot); lower the step or move x_start in")
        k = self.horizon(cfg, eps[0])
        if k > cfg.max_steps:
            raise ConfigError(f"invalid value for double-descent.max_steps={cfg.max_steps}: the smallest eps needs {k} "
                              "iterations; raise max_steps or the smallest eps")

    def fold_step(self, cfg, eps: float) -> float:
        """k_f: the step at which the noise-free slow path crosses the fold."""
        land = self.landscape(cfg, eps)
        c_f, _ = land.fold("left")
        return math.log((cfg.y_target - cfg.y_start) / (cfg.y_target - c_f)) / -math.log1p(-cfg.step * eps)

    def horizon(self, cfg, eps: float) -> int:
        """Steps run: past the noise-free jump by a quarter of the fold step (and 200 steps)."""
        return int(math.ceil(1.25 * self.deterministic(cfg, eps)["jump"])) + 200

    def deterministic(self, cfg, eps: float) -> dict:
        """The noise-free recursion: its entry and jump steps."""
        land = self.landscape(cfg, eps)
        _, x_right = land.fold("right")
        x_in = self.x_in(cfg)
        x, y, k, k_in = cfg.x_start, cfg.y_start, 0, None
        limit = int(20 * self.fold_step(cfg, eps)) + 1000
        while k < limit:
            if k_in is None and x >= x_in:
                k_in = k
            if x >= x_right:
                return {"in": k_in, "jump": k}
            x, y = x - cfg.step * float(land.well.df(x) - y), y - cfg.step * eps * (y - cfg.y_target)
            k += 1
        raise ConfigError(f"invalid value for double-descent.eps={eps}: the noise-free chain never jumps")

    def law_claim(self, cfg):
        """The 1/eps law, noise-free: the plateau in slow time tends to ln((y_t - y_0)/(y_t - c_f))."""
        grid = LAW_EPS * 2.0 ** np.arange(LAW_POINTS)
        vals = []
        for eps in grid:
            d = self.deterministic(cfg, float(eps))
            vals.append(-math.log1p(-cfg.step * eps) * (d["jump"] - d["in"]))  # steps -> slow time of the discrete path
        ext = extrapolate(grid ** (1 / 3), vals, degree=3)
        c_f, _ = self.landscape(cfg, 0.01).fold("left")
        limit = math.log((cfg.y_target - cfg.y_start) / (cfg.y_target - c_f))
        return claim("plateau-law",
                     "the 1/eps law: noise-free plateau in slow time, extrapolated to eps -> 0, vs the fold crossing "
                     "ln((y_t - y_0)/(y_t - c_f))", limit, ext.value, systematic=ext.bias,
                     systematic_source="change from the extrapolation of one degree less (residual bias)",
                     detail=(f"-ln(1 - a eps) * plateau at eps = {grid[0]:g} .. {grid[-1]:g}, a cubic in eps^(1/3) "
                             f"(the dynamic fold's delay adds {ext.coef[2]:.3g} eps^(2/3)); so the plateau is "
                             f"{limit:.4f} / (a eps) steps as eps -> 0"))

    def x_in(self, cfg) -> float:
        land = self.landscape(cfg, 0.01)
        return 0.5 * (cfg.x_start + land.branch(cfg.y_start, "left"))

    def run(self, cfg, ctx: Context) -> Outcome:
        eps_grid = sorted(cfg.eps)
        mid = eps_grid[len(eps_grid) // 2]
        x_in = self.x_in(cfg)
        _, x_jump = self.landscape(cfg, mid).fold("right")
        x_test = self.landscape(cfg, mid).branch(cfg.y_target, "right")
        lo, hi = cfg.x_start - 1.0, x_test + 1.5  # the chain practically never goes beyond

        def measure(eps, sigma, tag):
            land, K = self.landscape(cfg, eps), self.horizon(cfg, eps)
            every = max(1, K // CURVE_POINTS)

            def sim_cell():
                obs = [FirstPassage(lambda th: th[:, 0] >= x_in, name="in"),
                       FirstPassage(lambda th: th[:, 0] >= x_jump, name="jump"),
                       Trace(every=every, coords=[0]), Trace(until=EARLY_STEPS - 1, coords=[0], name="early")]
                sim = simulate(land, Gaussian(sigma, scales=[1.0, 0.0]), cfg.step, K, cfg.chains,
                               init=[cfg.x_start, cfg.y_start], seed=ctx.seed_for(tag, eps, sigma), observers=obs,
                               dtype=torch.float64, progress=ctx.progress)
                early, late = sim["early"], sim["trace"]
                keep = late.steps >= EARLY_STEPS
                x = np.concatenate([early.values[:, :, 0], late.values[keep, :, 0]])
                err = (x - x_test) ** 2  # (steps, chains)
                # per step, the mean test error over chains and its standard error (what the claims and figures read)
                return {"in": sim["in"].times, "jump": sim["jump"].times,
                        "steps": np.concatenate([early.steps, late.steps[keep]]),
                        "error_mean": err.mean(axis=1), "error_se": err.std(axis=1, ddof=1) / math.sqrt(err.shape[1])}

            def exact_cell():
                steps = np.arange(0, K + 1, every)
                steps = np.concatenate([np.arange(EARLY_STEPS), steps[steps >= EARLY_STEPS]])
                r = driven_chain_1d(land, sigma, cfg.step, cfg.y_start, K, cfg.x_start, lo, hi, [x_in, x_jump],
                                    observe=lambda x: (x - x_test) ** 2, at=steps)
                return {"in": r.passage[0].value, "in_bias": r.passage[0].bias, "jump": r.passage[1].value,
                        "jump_bias": r.passage[1].bias, "steps": steps,
                        "error": np.array([o.value for o in r.observed]),
                        "error_bias": np.array([o.bias for o in r.observed]),
                        "survival": r.survival[1]}

            m = ctx.cell(f"{tag}_eps={eps:.6g}_sigma={sigma:.6g}", sim_cell)
            try:
                e = ctx.cell(f"exact_{tag}_eps={eps:.6g}_sigma={sigma:.6g}", exact_cell)
            except ValueError as err:
                raise ExperimentError(f"exact chain at eps={eps:g}: {err}") from None
            missing = int(np.sum((m["jump"] < 0) | (m["in"] < 0)))
            if missing:
                raise ExperimentError(f"{missing} of {cfg.chains} chains had not jumped within {K} steps at eps={eps:g}")
            return m, e, K

        rows, runs, claims = [], {}, []
        for eps in eps_grid:
            m, e, K = measure(eps, cfg.sigma, "main")
            runs[eps] = (m, e)
            plateau, plateau_se = mean_se(m["jump"] - m["in"])
            det = self.deterministic(cfg, eps)
            rows.append({"eps": eps, "plateau": plateau, "plateau_se": plateau_se,
                         "plateau_exact": e["jump"] - e["in"], "plateau_exact_bias": e["jump_bias"] + e["in_bias"],
                         "jump": float(m["jump"].mean()), "jump_exact": e["jump"], "fold_step": self.fold_step(cfg, eps),
                         "jump_noise_free": det["jump"], "plateau_noise_free": det["jump"] - det["in"], "steps": K})
            claims.append(claim(f"plateau@eps={eps:g}",
                                f"mean plateau (steps), eps = {eps:g}", e["jump"] - e["in"], plateau, plateau_se,
                                systematic=e["jump_bias"] + e["in_bias"], systematic_source=MESH_SRC,
                                detail=f"from x >= {x_in:.3g} to x >= {x_jump:.3g}; exact discrete chain along the slow "
                                       f"path; the slow path crosses the fold at k_f = {self.fold_step(cfg, eps):.0f}"))
        tab = pd.DataFrame(rows)

        # the 1/eps law: ln plateau against ln(1/eps)
        u = np.log(1 / tab["eps"].to_numpy())
        y_se = tab["plateau_se"].to_numpy() / tab["plateau"].to_numpy()
        exact_fit = line_fit(u, np.log(tab["plateau_exact"].to_numpy()), y_se)
        ratio = line_fit(u, np.log(tab["plateau"].to_numpy() / tab["plateau_exact"].to_numpy()), y_se)
        slope, slope_se = exact_fit.slope + ratio.slope, ratio.slope_se
        b = tab["plateau_exact_bias"].to_numpy() / tab["plateau_exact"].to_numpy()
        mesh_slope = sum(abs(line_fit(u, np.log(tab["plateau_exact"].to_numpy()) + b * (np.arange(len(u)) == i),
                                      y_se).slope - exact_fit.slope) for i in range(len(u)))
        det_fit = line_fit(u, np.log(tab["plateau_noise_free"].to_numpy()), y_se)
        claims.append(claim("plateau-slope",
                            "slope of ln(plateau) vs ln(1/eps): measured vs the exact chain's", exact_fit.slope, slope,
                            slope_se, fit=ratio, systematic=mesh_slope, systematic_source=MESH_SRC,
                            detail=(f"the measured-to-exact ratio is fitted (the curvature both share cancels); same grid "
                                    f"and weights. The a, sigma -> 0 law gives 1; the noise-free chain's slope is "
                                    f"{det_fit.slope:.4f} (the delay of a dynamic fold, ~ eps^(-1/3) / a steps), and "
                                    "noise lowers it further: the shrinking barrier releases the chain earlier in slow "
                                    "time when eps is small")))
        claims.append(self.law_claim(cfg))

        # early jumps: the advance over the noise-free jump at sigma and at a smaller noise
        det = self.deterministic(cfg, mid)
        adv = []
        for sigma, tag in ((cfg.sigma, "main"), (cfg.sigma * cfg.noise_ratio, "quiet")):
            m, e, _ = measure(mid, sigma, tag)
            a_m, a_se = mean_se(det["jump"] - m["jump"])
            adv.append({"sigma": sigma, "advance": a_m, "advance_se": a_se, "advance_exact": det["jump"] - e["jump"],
                        "m": m, "e": e})
            claims.append(claim(f"early-jump@sigma={sigma:.3g}",
                                f"early jump: noise-free jump step minus mean jump step, sigma = {sigma:.3g}, eps = {mid:g}",
                                det["jump"] - e["jump"], a_m, a_se, systematic=e["jump_bias"], systematic_source=MESH_SRC,
                                detail=f"noise-free chain jumps at step {det['jump']}; a sigma^2 = "
                                       f"{cfg.step * sigma**2:.3g}"))

        # the test-error curve: middle of the plateau and the end, at the middle eps
        m, e = runs[mid]
        k_mid = (e["in"] + e["jump"]) / 2
        i_mid = int(np.argmin(np.abs(m["steps"] - k_mid)))
        for label, i in (("middle of the plateau", i_mid), ("end of the run", len(m["steps"]) - 1)):
            v, v_se = float(m["error_mean"][i]), float(m["error_se"][i])
            claims.append(claim(f"test-error@at={label.split()[0]}",
                                f"test error at step {int(m['steps'][i])} ({label}), eps = {mid:g}", e["error"][i], v,
                                v_se, systematic=float(e["error_bias"][i]), systematic_source=MESH_SRC,
                                detail=f"E_test = (x - x_test)^2, x_test = {x_test:.4g}; starts at "
                                       f"{(cfg.x_start - x_test) ** 2:.4g}"))

        curves = pd.DataFrame([{"eps": eps, "step": int(k), "slow_time": cfg.step * eps * k,
                                "test_error": float(runs[eps][0]["error_mean"][i]),
                                "test_error_exact": float(runs[eps][1]["error"][i])}
                               for eps in eps_grid for i, k in enumerate(runs[eps][0]["steps"])])
        early = pd.DataFrame([{k: v for k, v in r.items() if k not in ("m", "e")} for r in adv])
        fig = _figure(cfg, tab, runs, exact_fit, slope, slope_se, adv, det, mid)
        return Outcome(claims, {"plateau": tab, "curves": curves, "early_jump": early}, [fig])


def _figure(cfg, tab, runs, exact_fit, slope, slope_se, adv, det, mid) -> Figure:
    fig = MplFigure(figsize=(13, 8.5))
    (ax1, ax2), (ax3, ax4) = fig.subplots(2, 2)
    colours = [f"C{i}" for i in range(len(runs))]
    for col, (eps, (m, e)) in zip(colours, runs.items()):
        steps = m["steps"]
        ax1.plot(steps, m["error_mean"], color=col, label=f"eps = {eps:g}")
        ax1.plot(e["steps"], e["error"], color="k", ls=":", lw=1)
        ax2.plot(cfg.step * eps * steps, m["error_mean"], color=col, label=f"eps = {eps:g}")
    ax1.set_xscale("symlog", linthresh=10)
    ax1.set_xlabel("step k")
    ax1.set_ylabel("mean test error (x - x_test)^2")
    ax1.set_title("Test error along training (dotted: exact chain)")
    ax1.legend(fontsize=8)
    k_f = tab["fold_step"].to_numpy() * cfg.step * tab["eps"].to_numpy()
    ax2.axvline(float(k_f[0]), color="gray", ls="--", label="slow path at the fold")
    ax2.set_xlabel("slow time a eps k")
    ax2.set_ylabel("mean test error")
    ax2.set_title("In slow time a eps k: each plateau ends near the fold")
    ax2.legend(fontsize=8)
    u = np.log(1 / tab["eps"].to_numpy())
    ax3.errorbar(u, np.log(tab["plateau"]), yerr=1.96 * tab["plateau_se"] / tab["plateau"], fmt="o", label="measured")
    ax3.plot(u, np.log(tab["plateau_exact"]), "k:", label=f"exact chain (slope {exact_fit.slope:.3f})")
    ax3.plot(u, np.log(tab["plateau_noise_free"]), "s", mfc="none", color="gray", label="noise-free chain")
    ax3.plot(u, np.log(tab["fold_step"]), "--", color="gray", lw=1, label="fold crossing k_f (slope ~1)")
    ax3.set_xlabel("ln(1 / eps)")
    ax3.set_ylabel("ln(plateau length, steps)")
    ax3.set_title(f"Plateau length: measured slope {slope:.3f} +- {1.96 * slope_se:.3f}")
    ax3.legend(fontsize=8)
    for col, r in zip(("C3", "C0"), adv):
        jumps = r["m"]["jump"]
        ax4.hist(jumps, bins=60, density=True, histtype="step", color=col, label=f"sigma = {r['sigma']:.3g}")
        S = r["e"]["survival"]
        ax4.plot(np.arange(1, S.size), -np.diff(S), color=col, ls=":", lw=1)
    ax4.axvline(det["jump"], color="k", ls="--", label="noise-free jump")
    ax4.axvline(float(tab.loc[tab["eps"] == mid, "fold_step"].iloc[0]), color="gray", ls="--", label="fold crossing k_f")
    ax4.set_xlabel("jump step")
    ax4.set_ylabel("density")
    ax4.set_title(f"Noise makes the jump early (eps = {mid:g}; dotted: exact chain)")
    ax4.legend(fontsize=8)
    fig.tight_layout()
    caption = (f"Theory: along a slow path through a fold the test error falls, plateaus for ~ 1/(a eps) steps and falls "
               f"again; noise ends the plateau early. Seen: ln(plateau) against ln(1/eps) has slope {slope:.3f} +- "
               f"{1.96 * slope_se:.3f} (95% CI), the exact chain's {exact_fit.slope:.3f}; the noise-free chain jumps at "
               f"step {det['jump']} at eps = {mid:g}, the noisy chains {adv[0]['advance']:.0f} steps earlier at sigma = "
               f"{adv[0]['sigma']:.3g} and {adv[1]['advance']:.0f} at sigma = {adv[1]['sigma']:.3g}.")
    return Figure("double-descent", fig, caption)
