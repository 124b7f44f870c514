"""Experiment ``exit-times``: metastable exits of constant-step SGD follow Arrhenius' law.

Chains start at the deep minimum of an asymmetric double well under Gaussian noise and run until
an iterate lands at or beyond the other minimum (in 2-D: its first coordinate does).

* 1-D: F' = (x + 1)(x - s)(x - 1), isotropic noise sigma, V = 2 (F(saddle) - F(min)) / sigma^2,
  steps with V/a in ``barrier_over_step``.
* 2-D: :class:`memdyn.landscapes.BentDoubleWell`, F = W(x) + kappa/2 (y - c (1 - x^2))^2, not
  separable, saddle (s, c (1 - s^2)) off the axes; noise sigma diag(1, r), so V is the
  quasi-potential of the saddle for the drift -grad F and diffusion sigma^2 diag(1, r^2), by gMAM;
  steps with V/a in ``barrier_over_step_2d``.

For each step:

* the mean exit time (censoring-aware exponential MLE) against the exact mean exit time of the
  discrete chain, solved as an absorbing chain on its transfer operator
  (:func:`memdyn.reference.exit_time_1d`; in 2-D :func:`memdyn.reference.exit_time_2d`,
  extrapolated to zero cell width, its residual mesh bias stated as the claim's systematic);
* ln(a * mean exit) against 1/a: the measured line against the same fit through the exact values
  (statistical), in 1-D and 2-D;
* the a -> 0 limit (deterministic), in 1-D: the discrete chain tends to the SDE dX = -F' dt + sqrt(a) sigma dW,
  whose exact mean first-passage time is computed by quadrature at V/a in [40, 120], far below a
  simulation's reach; extrapolated to a = 0 it gives the Freidlin-Wentzell barrier V (slope of
  ln(a T) in 1/a) and the Eyring-Kramers prefactor P = 2 pi / sqrt(F''(min) |F''(saddle)|), each
  with its residual bias computed (:func:`memdyn.stats.extrapolate`). In 2-D the SDE's mean
  first-passage time comes from its backward equation on a mesh (:func:`memdyn.reference.sde_exit_time_2d`,
  spacings SDE_MESH and twice it, Richardson-extrapolated), and the limit is claimed against V from gMAM;
* exit times are close to exponential: their coefficient of variation against the exact
  discrete chain's (about 1), at the largest step.

The Brownian-bridge corrected exit times and the SDE limit's mean first-passage time at the
simulated steps are shown in the figure for comparison (they differ from the discrete chain by O(a)).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure as MplFigure
from pydantic import Field

from ..claims import claim
from ..dynamics import Group, simulate, simulate_groups
from ..episodes import coefficient_of_variation, exponential_fit
from ..landscapes import BentDoubleWell, DoubleWell
from ..ldp import GMAM_ACCURACY, arrhenius_fit
from ..noise import Gaussian
from ..observers import ExitTime
from ..reference import exit_time_1d, exit_time_2d, sde_exit_time_1d, sde_exit_time_2d
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
    transverse_curvature: float = Field(2.0, gt=0, le=10, description="2-D: curvature kappa across the bent valley")
    bend: float = Field(0.25, ge=-1, le=1, description=(
        "2-D: height c of the valley floor y = c (1 - x^2) at x = 0 (the saddle sits at (s, c (1 - s^2)), off the axes)"))
    transverse_noise: float = Field(1.5, gt=0, le=4, description=(
        "2-D: noise scale across the valley relative to along it (anisotropic noise: V from gMAM, not 2 dF / sigma^2)"))
    barrier_over_step_2d: list[float] = Field([3.0, 4.0], min_length=2, max_length=2, description=(
        "2-D: range [lo, hi] of V/a (3 <= lo < hi <= 4.5; the exact 2-D chain's cost grows as (V/a)^3)"))
    n_steps_2d: int = Field(3, ge=2, le=6, description="2-D: number of step sizes")


class ExitTimes(Experiment):
    name = "exit-times"
    section = "2. Long-run law and exits"
    prediction = (
        'A metastable state is left after about exp(V/a) steps, V the quasi-potential barrier, and exits are '
        'memoryless.')
    summary = ("exit times vs the exact discrete chain; Arrhenius slope; a->0 barrier and Eyring-Kramers prefactor; "
               "exponential law")
    Config = ExitTimesConfig
    quick = {"barrier_over_step": [3.0, 4.2], "n_steps": 3, "chains": 400, "barrier_over_step_2d": [3.0, 3.6]}
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
        if a_max * curv > 0.15:
            raise ConfigError(f"invalid value for exit-times.sigma={cfg.sigma}: the largest step {a_max:.3g} times the "
                              f"curvature is {a_max * curv:.3g} > 0.15 (finite-step effects would dominate); raise sigma")
        lo2, hi2 = cfg.barrier_over_step_2d
        if not 3 <= lo2 < hi2 <= 4.5:
            raise ConfigError(f"invalid value for exit-times.barrier_over_step_2d={cfg.barrier_over_step_2d}: need "
                              "3 <= lo < hi <= 4.5")
        land, V2, _ = self.bent(cfg)
        lam = float(np.max(np.linalg.eigvalsh(land.hessian(np.array([-1.0, 0.0])))))
        if V2 / lo2 * lam > 0.15:
            raise ConfigError(f"invalid value for exit-times.transverse_curvature={cfg.transverse_curvature}: the largest "
                              f"2-D step {V2 / lo2:.3g} times the largest curvature {lam:.3g} is > 0.15; lower it or "
                              "raise sigma")

    @staticmethod
    def well(cfg) -> DoubleWell:
        return DoubleWell(-1.0, cfg.saddle, 1.0)

    def bent(self, cfg):
        """The 2-D landscape (the well mirrored so that the chain starts at (-1, 0) and exits at x >= 1),
        its barrier V = V(saddle; (-1, 0)) for the drift -grad F and diffusion sigma^2 diag(1, r^2) by
        gMAM, and that minimum action path (computed once per setting: ``check`` and ``run`` share it)."""
        s = cfg.saddle if self.start(cfg) == "left" else -cfg.saddle
        return _bent(s, cfg.transverse_curvature, cfg.bend, cfg.sigma, cfg.transverse_noise)

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

        # 2-D: the bent valley under anisotropic noise, started at (-1, 0) (mirrored like ``ref``)
        land2, V2, path2 = self.bent(cfg)
        scales2 = (1.0, cfg.transverse_noise)
        steps2 = V2 / np.linspace(*cfg.barrier_over_step_2d, cfg.n_steps_2d)

        def exact2(a):
            box = _box_2d(land2, cfg.sigma, scales2, a)
            return ctx.cell(f"exact2_a={a:.6g}", lambda: _as_cell(exit_time_2d(land2, cfg.sigma, scales2, a,
                                                                               [-1.0, 0.0], 1.0, box)))

        rows, claims = [], []
        mesh_src = ("residual mesh bias of the exact 2-D chain: change of its extrapolation to zero cell width from "
                    "one degree less")
        settings = ((1, well, Gaussian(cfg.sigma), steps, V, x0, target, sign),
                    (2, land2, Gaussian(cfg.sigma, scales=scales2), steps2, V2, -1.0, 1.0, 1.0))
        for dim, land, noise, grid, barrier, start, goal, sgn in settings:
            exact_ab = []  # (exact mean exit time, its mesh bias) per step
            for a in grid:
                e = {"value": exact(a), "bias": 0.0} if dim == 1 else exact2(a)
                exact_ab.append((float(e["value"]), float(e["bias"])))
            Hs = [int(math.ceil(cfg.horizon * ex)) for ex, _ in exact_ab]
            order = sorted(range(len(grid)), key=lambda g: -Hs[g])  # longest horizon first
            init = np.zeros(dim)
            init[0] = start

            def cell(land=land, noise=noise, grid=grid, Hs=Hs, order=order, init=init, dim=dim, goal=goal, sgn=sgn):
                groups = [Group(cfg.chains, float(grid[g]), Hs[g], init, observers=[
                    ExitTime(lambda th: sgn * (goal - th[:, 0]), (float(grid[g]) * cfg.sigma) ** 2)]) for g in order]
                sims = simulate_groups(land, noise, groups, dtype=torch.float64, seed=ctx.seed_for("exit", dim),
                                       progress=ctx.progress)
                out = {}
                for g, sim in zip(order, sims):
                    r = sim["exit_time"]
                    out |= {f"bridge_{g}": r.bridge_time, f"grid_{g}": r.grid_time, f"exited_{g}": r.exited}
                return out

            got = ctx.cell(f"d={dim}_" + "_".join(f"{a:.6g}" for a in grid), cell)
            for g, a in enumerate(grid):
                (ex_a, ex_bias), H = exact_ab[g], Hs[g]
                ex = got[f"exited_{g}"].astype(bool)
                fit = exponential_fit(np.where(ex, got[f"grid_{g}"], H).astype(float), ~ex)
                bridge = exponential_fit(np.maximum(got[f"bridge_{g}"], 1e-9), ~ex)
                rows.append({"dim": dim, "step": a, "V_over_a": barrier / a, "exact_chain": ex_a,
                             "exact_chain_bias": ex_bias,
                             "mean": fit.mean, "mean_se": fit.mean_se, "bridge_mean": bridge.mean,
                             "censored": float(1 - ex.mean())})
                what = ("exact mean exit time of the discrete chain (absorbing chain on the transfer operator)"
                        if dim == 1 else "exact mean exit time of the 2-D discrete chain (absorbing chain on its "
                                         "transfer operator, extrapolated to zero cell width)")
                claims.append(claim(f"exit-time@a={a:.4g},dim={dim}",
                                    f"mean exit time (steps), a={a:.4g}, {dim}-D", ex_a, fit.mean, fit.mean_se,
                                    systematic=ex_bias, systematic_source=mesh_src if dim == 2 else "",
                                    detail=f"censoring-aware MLE; {what}"))
        tab = pd.DataFrame(rows)
        sde = pd.DataFrame({"step": steps, "exact_sde": [sde_exit_time_1d(ref, cfg.sigma, a, -1.0, 1.0) for a in steps]})
        fits = {}
        for dim, barrier in ((1, V), (2, V2)):
            t = tab[tab["dim"] == dim]
            meas = arrhenius_fit(t["step"], t["mean"], t["mean_se"])
            ex_fit = arrhenius_fit(t["step"], t["exact_chain"], t["mean_se"])
            fits[dim] = (meas, ex_fit)
            # the exact values' mesh bias moves the exact fit's slope by at most the sum of its effects
            bias = t["exact_chain_bias"].to_numpy()
            sys_slope = sum(abs(arrhenius_fit(t["step"], t["exact_chain"] + bias * (np.arange(len(t)) == i),
                                              t["mean_se"]).barrier - ex_fit.barrier) for i in range(len(t)))
            where = ("V = 2 dF / sigma^2" if dim == 1 else
                     "V from gMAM for the drift -grad F with noise sigma^2 diag(1, r^2)")
            claims.append(claim(f"arrhenius-slope@dim={dim}",
                                f"Arrhenius slope, {dim}-D: measured vs the same fit of the exact discrete chain",
                                ex_fit.barrier, meas.barrier, meas.barrier_se, fit=meas.line, systematic=sys_slope,
                                systematic_source=mesh_src if dim == 2 else "",
                                detail=f"a->0 limit {where} = {barrier:.4g}; same grid and weights"))

        # the a -> 0 limit: the discrete chain tends to the SDE dX = -F' dt + sqrt(a) sigma dW, whose exact mean
        # first-passage time (quadrature) is cheap at steps far below a simulation's reach, V/a in [40, 120]
        fine = V / np.linspace(40, 120, 6)
        T = np.array([sde_exit_time_1d(ref, cfg.sigma, a, -1.0, 1.0, n=200001) for a in fine])
        ext_v = extrapolate(fine, fine * np.log(fine * T), degree=3)  # a ln(a T) = V + a ln P + O(a^2)
        ext_p = extrapolate(fine, np.log(fine * T) - V / fine, degree=2)  # ln(a T) - V/a = ln P + O(a)
        log_p = math.log(2 * math.pi / math.sqrt(well.d2f(x0) * abs(well.d2f(well.saddle))))
        src = "change from the extrapolation of one degree less, on the exact SDE values (residual bias)"
        claims.append(claim("arrhenius-barrier",
                            "Arrhenius barrier: exact mean exit times extrapolated to a->0 vs V = 2 dF/sigma^2", V,
                            ext_v.value, systematic=ext_v.bias, systematic_source=src,
                            detail=f"a ln(a T), cubic in a, V/a in [40, 120]; quadratic: {ext_v.lower:.6g}"))
        claims.append(claim("eyring-kramers-prefactor",
                            "Eyring-Kramers prefactor: ln(a T) - V/a extrapolated to a->0 vs "
                            "ln(2 pi / sqrt(F''(min) |F''(saddle)|))", log_p, ext_p.value, systematic=ext_p.bias,
                            systematic_source=src, detail=f"quadratic in a, V/a in [40, 120]; linear: {ext_p.lower:.6g}"))

        # 2-D: the same limit from the SDE's exact mean first-passage time (backward equation on a mesh, solved by
        # state reduction), Richardson-extrapolated in the mesh spacing, against V from gMAM
        fine2 = V2 / np.linspace(40, 120, 6)

        def sde2(h):
            return np.array([sde_exit_time_2d(land2, cfg.sigma, scales2, a, [-1.0, 0.0], 1.0,
                                              _box_2d(land2, cfg.sigma, scales2, a), h) for a in fine2])

        lim2 = ctx.cell("sde2_limit", lambda: {"coarse": sde2(2 * SDE_MESH), "fine": sde2(SDE_MESH)})
        log_T = (4 * np.log(lim2["fine"]) - np.log(lim2["coarse"])) / 3  # the O(h^2) mesh error removed
        ext_v2 = extrapolate(fine2, fine2 * (log_T + np.log(fine2)), degree=3)
        mesh_v2 = abs(ext_v2.value - extrapolate(fine2, fine2 * np.log(fine2 * lim2["fine"]), degree=3).value)
        claims.append(claim("arrhenius-barrier@dim=2",
                            "Arrhenius barrier, 2-D: exact SDE mean exit times extrapolated to a->0 vs V from gMAM",
                            V2, ext_v2.value, systematic=ext_v2.bias + mesh_v2,
                            systematic_source="change from the extrapolation of one degree less, plus the change from "
                                              "the Richardson step in the mesh spacing (residual biases)",
                            accuracy=GMAM_ACCURACY * V2, accuracy_source="gMAM's documented relative accuracy",
                            detail=f"a ln(a T), cubic in a, V/a in [40, 120], mesh {SDE_MESH:g} and {2 * SDE_MESH:g}; "
                                   f"2 dF/sigma^2 = {V:.6g}"))

        # the exponential law, at the largest step with a long horizon (no censoring to bias the CV)
        a = float(steps.max())
        m_ex, var_ex = exit_time_1d(ref, cfg.sigma, a, -1.0, 1.0, variance=True)

        def law_cell():
            obs = ExitTime(lambda th: sign * (target - th[:, 0]), (a * cfg.sigma) ** 2)
            sim = simulate(well, Gaussian(cfg.sigma), a, int(math.ceil(15 * m_ex)), cfg.chains, init=[x0],
                           dtype=torch.float64, seed=ctx.seed_for("law"), observers=[obs], progress=ctx.progress)
            return {"grid": sim["exit_time"].grid_time[sim["exit_time"].exited].astype(float)}

        times = ctx.cell("law", law_cell)["grid"]
        claims.append(claim(f"exit-time-cv@a={a:.4g}",
                            f"coefficient of variation of exit times, a={a:.4g}", math.sqrt(var_ex) / m_ex,
                            coefficient_of_variation(times),
                            bootstrap_se(times, coefficient_of_variation, seed=ctx.seed_for("bootstrap")),
                            detail="exponential law (CV = 1 as a->0); exact discrete chain's CV; bootstrap se"))
        barriers = {1: V, 2: V2}
        fit_tab = pd.DataFrame([{"dim": d, "slope": m.barrier, "slope_se": m.barrier_se, "slope_exact_chain": e.barrier,
                                 "V": barriers[d], "log_prefactor": m.log_prefactor, "chi2": m.line.chi2,
                                 "p_value": m.line.p_value} for d, (m, e) in fits.items()])
        limit = pd.DataFrame({"step": fine, "sde_mean_exit": T, "a_log_aT": fine * np.log(fine * T)})
        return Outcome(claims, {"exits": tab, "arrhenius": fit_tab, "limit": limit, "sde_1d": sde},
                       [_figure(tab, sde, fits, barriers, land2, path2, claims)])


@functools.lru_cache(maxsize=8)
def _bent(saddle: float, kappa: float, bend: float, sigma: float, r: float):
    from ..ldp import min_action_path

    land = BentDoubleWell(DoubleWell(-1.0, saddle, 1.0), kappa, bend)
    D = sigma**2 * np.diag([1.0, r**2])
    path = min_action_path(lambda x: -land.grad(x), [-1.0, 0.0], land.critical_points()[1].location, diffusion=D)
    return land, float(path.action), path


SDE_MESH = 0.01  # mesh spacing of the 2-D SDE limit (and twice it, for the Richardson step)
RISE = 10.0  # the exact 2-D chain's box: where F rises this many temperatures, plus 2 kicks (mass beyond ~ e^-10)


def _box_2d(land: BentDoubleWell, sigma: float, scales, a: float):
    """The rectangle ((x_lo, 1), (y_lo, y_hi)) holding the 2-D chain before its exit: left of the start
    where W rises RISE temperatures a sigma^2 / 2; across the valley floor y = c (1 - x^2) where the
    transverse quadratic rises RISE temperatures a sigma^2 r^2 / 2; each padded by two kicks."""
    from scipy.optimize import brentq

    r = float(scales[1])
    w0 = float(land.well.f(np.float64(-1.0)))
    x_lo = brentq(lambda v: float(land.well.f(np.float64(v))) - w0 - RISE * a * sigma**2 / 2, -50.0, -1.0)
    x_lo -= 2 * a * sigma
    g = land.c * (1 - np.linspace(x_lo, 1.0, 401) ** 2)
    w = math.sqrt(RISE * a * (sigma * r) ** 2 / land.kappa) + 2 * a * sigma * r
    return (x_lo, 1.0), (min(0.0, float(g.min())) - w, max(0.0, float(g.max())) + w)


def _as_cell(ext) -> dict:
    return {"value": np.array(ext.value), "bias": np.array(ext.bias)}


def _figure(tab, sde, fits, barriers, land2, path2, claims) -> Figure:
    import torch

    fig = MplFigure(figsize=(15, 4.2))
    ax1, ax2, ax3 = fig.subplots(1, 3)
    for j, dim in enumerate((1, 2)):
        t = tab[tab["dim"] == dim]
        inv = 1 / t["step"].to_numpy()
        y = np.log(t["step"] * t["mean"])
        ax1.errorbar(inv, y, yerr=1.96 * t["mean_se"] / t["mean"], fmt="o", color=f"C{j}", capsize=3,
                     label=f"{dim}-D, measured")
        ax1.plot(inv, np.log(t["step"] * t["exact_chain"]), "s", mfc="none", color=f"C{j}", ms=9,
                 label=f"{dim}-D, exact discrete chain")
        xs = np.linspace(inv.min(), inv.max(), 20)
        anchor = float(np.mean(y - barriers[dim] * inv))  # theory slope, placed through the data's centre
        ax1.plot(xs, anchor + barriers[dim] * xs, "--", color=f"C{j}", lw=0.9,
                 label=f"{dim}-D slope V = {barriers[dim]:.4f}" + (" (gMAM)" if dim == 2 else ""))
    t = tab[tab["dim"] == 1]
    ax1.plot(1 / sde["step"], np.log(sde["step"] * sde["exact_sde"]), "+", color="gray", label="1-D SDE limit")
    ax1.set_xlabel("1 / a")
    ax1.set_ylabel("ln(a * mean exit time)")
    ax1.set_title("Arrhenius law of metastable exits")
    ax1.legend(fontsize=7)
    ax2.errorbar(t["step"], t["mean"] / t["exact_chain"], yerr=1.96 * t["mean_se"] / t["exact_chain"], fmt="o-",
                 color="k", capsize=3, label="measured / exact discrete chain")
    ax2.plot(sde["step"], sde["exact_sde"].to_numpy() / t["exact_chain"].to_numpy(), "x-", color="gray",
             label="SDE limit / exact discrete chain")
    ax2.plot(t["step"], t["bridge_mean"] / t["exact_chain"], "^-", color="C0", label="bridge-corrected / exact chain")
    ax2.axhline(1, color="k", lw=0.8)
    ax2.set_xlabel("step a")
    ax2.set_xticks(t["step"], [f"{v:.3f}" for v in t["step"]])
    ax2.set_ylabel("mean exit time / exact discrete chain")
    ax2.set_title("Discrete chain vs its SDE limit (1-D)")
    ax2.legend(fontsize=8)
    gx, gy = np.linspace(-1.8, 1.4, 161), np.linspace(-1.2, 1.2, 121)
    X, Y = np.meshgrid(gx, gy, indexing="ij")
    Fv = land2.value(torch.as_tensor(np.stack([X.ravel(), Y.ravel()], 1))).numpy().reshape(X.shape)
    cs = ax3.contourf(gx, gy, Fv.T, levels=np.linspace(Fv.min(), Fv.min() + 2.0, 21), cmap="viridis", extend="max")
    fig.colorbar(cs, ax=ax3, label="F")
    ax3.plot(path2.path[:, 0], path2.path[:, 1], "w-", lw=2, label=f"minimum action path, V = {barriers[2]:.4f}")
    ax3.plot(gx, land2.c * (1 - gx**2), ":", color="w", lw=1, label="valley floor")
    sad = land2.critical_points()[1].location
    ax3.plot([-1, 1, sad[0]], [0, 0, sad[1]], "o", color="w", ms=5)
    ax3.axvline(1.0, color="C3", lw=1, label="exit: x >= 1")
    ax3.set_xlabel("x")
    ax3.set_ylabel("y")
    ax3.set_title("2-D: bent valley, anisotropic noise")
    ax3.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    n_ok = sum(c.holds for c in claims)
    m1, m2 = fits[1][0], fits[2][0]
    caption = (f"Theory: a memorizing (metastable) state is left after ~exp(V/a) steps and exits are memoryless; "
               f"1-D V = 2 dF_barrier / sigma^2 = {barriers[1]:.4g}; 2-D (non-separable valley, saddle off the axes, "
               f"noise sigma^2 diag(1, r^2)) V = {barriers[2]:.4g} by gMAM. Seen: fitted slopes {m1.barrier:.4g} +- "
               f"{1.96 * m1.barrier_se:.2g} (1-D; exact chain {fits[1][1].barrier:.4g}) and {m2.barrier:.4g} +- "
               f"{1.96 * m2.barrier_se:.2g} (2-D; exact chain {fits[2][1].barrier:.4g}); {n_ok} of {len(claims)} claims hold.")
    return Figure("exit_times", fig, caption)
