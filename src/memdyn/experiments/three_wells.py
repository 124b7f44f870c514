"""Experiment ``three-wells``: with three minima the Freidlin-Wentzell W-graph decides the long-run
occupation, and it is not the deepest minimum that wins.

Constant-step SGD on the 1-D triple well F'(x) = k prod_j (x - c_j) (:class:`memdyn.MultiWell`;
minima c_1, c_3, c_5, barrier tops c_2, c_4) with Gaussian noise whose scale steps down across the
left barrier, sigma(x) = sigma_R + (sigma_L - sigma_R) (1 - tanh((x - x_0) / w)) / 2: the deepest
minimum (left) is the noisiest. The transition costs between neighbouring minima,
B_ij = V(saddle; m_i), come from the minimum action method with diffusion sigma(x)^2 (checked
against the 1-D closed form int 2 F' / sigma^2); the W-graph (minimum spanning in-trees over the
three minima) gives the energies E_i and its pick, the most visited minimum. The long-run law
obeys a ln(mu_i / mu_pick) -> -(E_i - E_pick) as a -> 0. For each step on a grid the experiment
measures the occupation of the three basins from many chains and computes it exactly from the
discrete chain's transfer operator (see :mod:`memdyn.experiments.occupation` for how the claims
are built).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure as MplFigure
from pydantic import Field
from scipy.integrate import quad

from ..claims import claim
from ..landscapes import MultiWell
from ..ldp import GMAM_ACCURACY, fw_energies, transition_costs
from ..noise import ProfileGaussian, tanh_step
from .base import ConfigError, Context, Experiment, ExperimentConfig, Figure, Outcome
from .occupation import extrapolation_claims, log_ratio, sde_log_occupations, well_occupations


class ThreeWellsConfig(ExperimentConfig):
    points: list[float] = Field([-1.25, -0.6, 0.0, 0.6, 1.2], min_length=5, max_length=5, description=(
        "critical points c_1 < ... < c_5 of F'(x) = k prod (x - c_j): minima c_1, c_3, c_5, barrier tops c_2, c_4"))
    scale: float = Field(1.0, gt=0, le=100, description="k: overall scale of the loss")
    sigma_left: float = Field(1.273, gt=0, le=100, description="noise scale left of the step (around the deepest well)")
    sigma_right: float = Field(0.99, gt=0, le=100, description="noise scale right of the step")
    center: float = Field(-0.6, ge=-10, le=10, description="x_0: centre of the tanh step of sigma(x)")
    width: float = Field(0.3, gt=0.02, le=5, description="w: width of the tanh step of sigma(x)")
    barrier_over_step: list[float] = Field([1.5, 2.5], min_length=2, max_length=2, description=(
        "range [lo, hi] of V_min/a covered by the step grid (V_min: the smallest transition cost), 1 <= lo < hi <= 4"))
    n_steps: int = Field(3, ge=3, le=8, description="number of step sizes on the grid")
    chains: int = Field(2000, ge=100, le=10**6, description="independent chains per step size")
    mix: float = Field(10.0, ge=2, le=1000, description="least averaging window per chain, in mixing times")
    events: int = Field(400, ge=50, le=10**6, description=(
        "least expected number of entries into the rarest well over all chains (the window is lengthened to reach it)"))
    dtype: str = Field("float32", pattern="^(float32|float64)$", description="simulation precision")


class ThreeWells(Experiment):
    name = "three-wells"
    section = "2. Long-run law and exits"
    prediction = (
        'With three minima the long-run occupation follows the W-graph energies of minimal in-trees, not the '
        'depths of the minima.')
    summary = "three minima: long-run occupation vs the W-graph energies (the deepest minimum is not the most visited)"
    Config = ThreeWellsConfig
    quick = {"chains": 1000, "mix": 5.0, "events": 100, "barrier_over_step": [1.5, 2.2]}
    sample_keys = ('chains', 'events')

    def land(self, cfg) -> MultiWell:
        return MultiWell(cfg.points, cfg.scale)

    def sigma(self, cfg):
        return tanh_step(cfg.sigma_left, cfg.sigma_right, cfg.center, cfg.width)

    def exact_costs(self, cfg) -> np.ndarray:
        """B_ij between neighbouring minima by quadrature of 2 F' / sigma^2 (inf otherwise)."""
        m, sig = self.land(cfg), self.sigma(cfg)
        mins, sads = m.minima_x, m.saddles_x
        B = np.full((3, 3), np.inf)
        np.fill_diagonal(B, 0.0)
        for i in range(3):
            for j in (i - 1, i + 1):
                if 0 <= j < 3:
                    s = sads[min(i, j)]
                    B[i, j] = abs(quad(lambda x: 2 * float(m.df(x)) / float(sig(x)) ** 2, mins[i], s,
                                       epsabs=1e-13, epsrel=1e-12)[0])
        return B

    def grid(self, cfg) -> np.ndarray:
        B = self.exact_costs(cfg)
        lo, hi = cfg.barrier_over_step
        return np.sort(float(B[np.isfinite(B) & (B > 0)].min()) / np.linspace(lo, hi, cfg.n_steps))

    def check(self, cfg):
        lo, hi = cfg.barrier_over_step
        if not 1 <= lo < hi <= 4:
            raise ConfigError(f"invalid value for three-wells.barrier_over_step={cfg.barrier_over_step}: need "
                              "1 <= lo < hi <= 4")
        if any(b <= a for a, b in zip(cfg.points, cfg.points[1:])):
            raise ConfigError(f"invalid value for three-wells.points={cfg.points}: need 5 increasing values")
        m = self.land(cfg)
        curv = max(float(m.d2f(v)) for v in m.minima_x)
        a_max = float(self.grid(cfg).max())
        if a_max * curv > 0.25:
            raise ConfigError(f"invalid value for three-wells.scale={cfg.scale}: the largest step {a_max:.3g} times the "
                              f"largest curvature {curv:.3g} is {a_max * curv:.3g} > 0.25 (far from the small-step "
                              "limit); lower scale or raise the noise")

    def run(self, cfg, ctx: Context) -> Outcome:
        import torch

        m, sig = self.land(cfg), self.sigma(cfg)
        mins, sads = m.minima_x, m.saddles_x
        Bx = self.exact_costs(cfg)
        tc = transition_costs(lambda x: -m.grad(x), [[v] for v in mins], [[v] for v in sads],
                              diffusion=lambda X: (sig(X[:, 0]) ** 2)[:, None, None])
        B = tc.costs
        fw = fw_energies(B)
        E, pick = fw.E, fw.most_visited
        deepest = int(np.argmin([float(m.f(v)) for v in mins]))
        claims = []
        acc = "documented relative accuracy of min_action_path with 100 points (memdyn.ldp.GMAM_ACCURACY)"
        for i, j in ((0, 1), (1, 0), (1, 2), (2, 1)):
            claims.append(claim(f"transition-cost@{i}-to-{j}",
                                f"transition cost {i} -> {j} (gMAM vs quadrature)", Bx[i, j], B[i, j],
                                accuracy=GMAM_ACCURACY * Bx[i, j], accuracy_source=acc,
                                detail=f"V(saddle; m_{i}) = |int 2 F'(x) / sigma(x)^2 dx| from m_{i}"))
        noise = ProfileGaussian(sig)
        rows, occs = [], []
        others = [i for i in range(3) if i != pick]
        grid = self.grid(cfg)
        for a, occ in zip(grid, well_occupations(m, sig, noise, grid, sads, mins, cfg.chains, cfg.mix, cfg.events, ctx,
                                                 getattr(torch, cfg.dtype))):
            occs.append(occ)
            row = {"step": a, "mixing_steps": occ["mixing_steps"], "n_steps": occ["n_steps"],
                   "barrier_over_step": float(Bx[np.isfinite(Bx) & (Bx > 0)].min()) / a}
            for i in range(3):
                se = float(np.sqrt(occ["cov"][i, i]))
                row |= {f"p{i}": occ["p"][i], f"p{i}_se": se, f"p{i}_exact": occ["exact"][i]}
                claims.append(claim(f"occupation@a={a:.4g},well={i}",
                                    f"occupation of well {i} at a={a:.4g}", occ["exact"][i], occ["p"][i], se,
                                    detail="exact stationary law of the discrete chain, state-dependent kernel"))
            for i in others:
                y, y_se, y_ex = log_ratio(occ, i, pick, float(a))
                row |= {f"y{i}": y, f"y{i}_se": y_se, f"y{i}_exact": y_ex}
            rows.append(row)
        tab = pd.DataFrame(rows)
        # the W-graph's pick holds more than any other well, at the smallest step
        occ, a0 = occs[0], float(tab["step"].iloc[0])
        rival = max(others, key=lambda i: occ["p"][i])
        C = occ["cov"]
        se_d = float(np.sqrt(max(C[pick, pick] + C[rival, rival] - 2 * C[pick, rival], 0.0)))
        claims.insert(4, claim("w-graph-pick",
                               f"most visited well is the W-graph's pick ({pick}, not the deepest {deepest}): its "
                               f"occupation minus well {rival}'s at a={a0:.4g}", 0.0,
                               occ["p"][pick] - occ["p"][rival], se_d, side="at_least",
                               detail=f"W-graph energies E = {np.round(E, 5).tolist()} from the gMAM costs; F at the "
                                      f"minima = {[round(float(m.f(v)), 4) for v in mins]}"))
        fits = {}
        for i in others:
            def sde(a, i=i):
                lm = sde_log_occupations(m, sig, a, sads, mins)
                return a * float(lm[i] - lm[pick])

            cl, res, exact, ext = extrapolation_claims(
                tab["step"], tab[f"y{i}"], tab[f"y{i}_se"], tab[f"y{i}_exact"], sde, float(-(E[i] - E[pick])),
                f"a*ln(mu_{i}/mu_{pick})", f"-(E_{i} - E_{pick}) from the W-graph energies", f"@well={i}")
            claims[5:5] = cl
            fits[i] = (res, exact, ext)
        energies = pd.DataFrame({"minimum": mins, "F": [float(m.f(v)) for v in mins], "E": E,
                                 "most_visited": np.arange(3) == pick})
        costs = pd.DataFrame([{"from": i, "to": j, "gmam": B[i, j], "quadrature": Bx[i, j]}
                              for i in range(3) for j in range(3) if i != j and np.isfinite(Bx[i, j])])
        fig = _figure(m, sig, tab, fits, E, pick, deepest)
        return Outcome(claims, {"occupation": tab, "energies": energies, "costs": costs}, [fig])


def _figure(m, sig, tab, fits, E, pick, deepest) -> Figure:
    fig = MplFigure(figsize=(15, 4.3))
    ax1, ax2, ax3 = fig.subplots(1, 3)
    mins = m.minima_x
    xs = np.linspace(mins[0] - 0.35, mins[-1] + 0.35, 500)
    ax1.plot(xs, m.f(xs), color="k", label="F(x)")
    ax1.set_xlabel("x")
    ax1.set_ylabel("F(x)")
    ax1b = ax1.twinx()
    ax1b.plot(xs, sig(xs), color="C1")
    ax1b.set_ylabel("noise scale sigma(x)", color="C1")
    ax1.set_title(f"Triple well: deepest minimum {deepest} is the noisiest")
    dphi = 2 * m.df(xs) / sig(xs) ** 2
    phi = np.concatenate([[0.0], np.cumsum(0.5 * (dphi[1:] + dphi[:-1]) * np.diff(xs))])
    phi -= np.interp(mins[pick], xs, phi)
    ax2.plot(xs, phi, color="C0", label="Phi(x) = int 2F'/sigma^2")
    for i, v in enumerate(mins):
        ax2.plot([v], [E[i]], "o", color="C3" if i == pick else "k")
        ax2.annotate(f"E_{i} = {E[i]:.3f}", (v, E[i]), textcoords="offset points", xytext=(4, 8), fontsize=8)
    ax2.set_xlabel("x")
    ax2.set_title(f"W-graph energies: the pick is minimum {pick}")
    ax2.legend(fontsize=7)
    a = tab["step"].to_numpy()
    grid = np.linspace(0, a.max() * 1.05, 50)
    for k, (i, (res, exact, ext)) in enumerate(fits.items()):
        c = f"C{k}"
        ax3.errorbar(a, tab[f"y{i}"], yerr=1.96 * tab[f"y{i}_se"], fmt="o", color=c, capsize=3,
                     label=f"a ln(mu_{i}/mu_{pick}), measured")
        ax3.plot(a, tab[f"y{i}_exact"], "s", mfc="none", color=c)
        ax3.plot(grid, res(grid), "--", color=c, lw=0.8)
        ax3.plot([0], [-(E[i] - E[pick])], "*", ms=13, color=c)
    ax3.axhline(0, color="gray", lw=0.5)
    ax3.set_xlabel("step size a")
    ax3.set_title("Occupation ratios -> -(E_i - E_pick) (stars)")
    ax3.legend(fontsize=7)
    fig.tight_layout()
    caption = (f"Theory: the long-run law of constant-step SGD is set by the Freidlin-Wentzell W-graph energies of the "
               f"minima, E = {np.round(E, 4).tolist()}, so minimum {pick} is the most visited although minimum {deepest} "
               f"is the deepest. Seen: at the smallest step minimum {pick} holds "
               f"{100 * tab[f'p{pick}'].iloc[0]:.1f}% of the time; squares are the exact discrete chain, dashed lines "
               f"the measured line fits, stars the a -> 0 predictions.")
    return Figure("three-wells", fig, caption)
