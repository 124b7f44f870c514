"""Experiment ``degeneration``: fresh data prevents collapse; the model only degenerates.

Exact-fit recursive training with a fraction alpha of fresh real data per generation is
Wright-Fisher with "mutation" towards mu_0: it never absorbs. With two training points the chain
on the count of point 0 is small enough to solve exactly, so for each alpha the experiment checks

* the stationary homozygosity against the closed form
  F* = [(1 - 1/N) alpha (2 - alpha) G + 1/N] / [1 - (1 - 1/N)(1 - alpha)^2], G = sum mu_0(i)^2;
* the long-run fraction of generations spent near a point mass (one point holding >= ``near`` of
  the data) against the exact stationary law of the chain (GTH), which grows as N alpha falls;
* no absorption: the fraction of generations spent *at* a point mass against the exact stationary
  probability of the two collapsed states (with absorption it would grow to 1);
* the return to mu_0 at rate 1 - alpha: from a collapsed start (all N points on point 0),
  E mu_g(0) = mu_0(0) + (1 - alpha)^g (1 - mu_0(0)) at g = 1/alpha (exact, since
  E[mu_(g+1) | mu_g] = (1 - alpha) mu_g + alpha mu_0).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure as MplFigure
from pydantic import Field
from scipy.stats import binom

from ..claims import claim
from ..stats import mean_se
from ..collapse import exact_fit, initial_counts
from ..markov import MarkovChain
from .base import ConfigError, Context, Experiment, ExperimentConfig, Figure, Outcome


#: a fraction of generations is claimed only when the run is expected to hit it this often
MIN_EVENTS = 100


class DegenerationConfig(ExperimentConfig):
    weight: float = Field(0.6, gt=0, lt=1, description="mu_0 of the first of the two training points")
    N: int = Field(100, ge=10, le=2000, description="data-set size per generation")
    alphas: list[float] = Field([0.002, 0.005, 0.02, 0.05], min_length=2, max_length=8, description=(
        "fractions of fresh data (each in [0.0005, 0.5]); N*alpha spans the collapse-prone to the mixing regime"))
    near: float = Field(0.95, gt=0.5, lt=1, description="'near a point mass': one point holds at least this share")
    replicates: int = Field(1000, ge=50, le=10**5, description="independent recursive-training runs per alpha")
    relax: float = Field(40.0, ge=5, le=1000, description="sampling length in relaxation times 1/alpha (after 10 of burn-in)")


def stationary_homozygosity(alpha: float, N: int, G: float) -> float:
    """F* of exact-fit recursive training with fresh-data fraction alpha."""
    a = 1 - 1 / N
    return (a * alpha * (2 - alpha) * G + 1 / N) / (1 - a * (1 - alpha) ** 2)


class Degeneration(Experiment):
    name = "degeneration"
    section = "3. Collapse in recursive training"
    prediction = (
        'Fresh data (alpha > 0) prevents collapse; the stationary homozygosity is F* and near-collapsed '
        'stretches recur.')
    summary = "fresh data (alpha > 0): no collapse; stationary homozygosity vs F*; time near a point mass vs N*alpha"
    Config = DegenerationConfig
    quick = {"replicates": 300, "relax": 15.0}
    sample_keys = ('replicates',)

    def check(self, cfg):
        if any(not 5e-4 <= a <= 0.5 for a in cfg.alphas) or len(set(cfg.alphas)) < 2:
            raise ConfigError(f"invalid value for degeneration.alphas={cfg.alphas}: need >= 2 distinct values in "
                              "[0.0005, 0.5]")
        if min(initial_counts(np.array([cfg.weight, 1 - cfg.weight]), cfg.N)) == 0:
            raise ConfigError(f"invalid value for degeneration.N={cfg.N}: too small to hold both points")

    def run(self, cfg, ctx: Context) -> Outcome:
        N = cfg.N
        w = np.array([cfg.weight, 1 - cfg.weight])
        G2 = float(np.sum(w**2))
        k = np.arange(N + 1)
        near_states = np.maximum(k, N - k) >= cfg.near * N
        claims, rows, curves = [], [], []
        for alpha in sorted(cfg.alphas):
            burn = int(math.ceil(10 / alpha))
            G = burn + int(math.ceil(cfg.relax / alpha))

            def cell(alpha=alpha, G=G, burn=burn):
                h = exact_fit(w, N, G, cfg.replicates, alpha=alpha, seed=ctx.seed_for("alpha", alpha))
                homo = h.homozygosity[:, burn:]
                # the share of the majority point: mu_max^2 + (1 - mu_max)^2 = homozygosity for 2 points
                share = 0.5 * (1 + np.sqrt(np.clip(2 * homo - 1, 0, None)))
                # per replicate, the time averages the claims read; the mean curve the figure draws
                return {"homo": homo.mean(1), "near": (share >= cfg.near - 1e-12).mean(1),
                        "at_mass": (h.support[:, burn:] == 1).mean(1), "cells": homo.size,
                        "curve": h.homozygosity[:, : min(h.homozygosity.shape[1], 3 * burn)].mean(0)}

            c = ctx.cell(f"alpha={alpha:g}", cell)
            g_r = max(1, int(round(1 / alpha)))

            def back(alpha=alpha, g_r=g_r):
                h = exact_fit(w, N, g_r, cfg.replicates, alpha=alpha, init=np.array([N, 0]),
                              seed=ctx.seed_for("return", alpha))
                return {"share": h.final_counts[:, 0] / N}

            share0, share0_se = mean_se(ctx.cell(f"return_alpha={alpha:g}", back)["share"])
            at_m, at_se = mean_se(c["at_mass"])
            f_m, f_se = mean_se(c["homo"])
            near_m, near_se = mean_se(c["near"])
            P = binom.pmf(k[None, :], N, (1 - alpha) * k[:, None] / N + alpha * w[0])
            pi = MarkovChain(P).stationary_distribution
            near_exact = float(pi[near_states].sum())
            at_exact = float(pi[0] + pi[N])
            f_star = stationary_homozygosity(alpha, N, G2)
            claims.append(claim(f"homozygosity@N_alpha={N * alpha:g}",
                                f"stationary homozygosity, N*alpha={N * alpha:g}", f_star, f_m, f_se,
                                detail="closed form F*"))
            claims.append(claim(f"near-point-mass@N_alpha={N * alpha:g}",
                                f"fraction of generations near a point mass, N*alpha={N * alpha:g}", near_exact,
                                near_m, near_se, detail=f"exact stationary law of the chain; near = share >= {cfg.near}"))
            if at_exact * c["cells"] >= MIN_EVENTS:  # a rarer fraction has too few hits for its standard error
                claims.append(claim(f"at-point-mass@N_alpha={N * alpha:g}",
                                    f"fraction of generations at a point mass (no absorption), N*alpha={N * alpha:g}",
                                    at_exact, at_m, at_se, detail="exact stationary probability of the two collapsed "
                                                                  "states; absorption would drive it to 1"))
            back_pred = w[0] + (1 - alpha) ** g_r * (1 - w[0])
            claims.append(claim(f"return-to-mu0@N_alpha={N * alpha:g}",
                                f"E mu_g(0) at g={g_r} from a collapsed start, N*alpha={N * alpha:g}", back_pred, share0,
                                share0_se, detail="mu_0(0) + (1 - alpha)^g (1 - mu_0(0)): the return to mu_0 at rate "
                                                  "1 - alpha"))
            rows.append({"alpha": alpha, "N_alpha": N * alpha, "homozygosity": f_m, "homozygosity_se": f_se,
                         "F_star": f_star, "near_fraction": near_m, "near_se": near_se, "near_exact": near_exact,
                         "at_point_mass": at_m, "at_point_mass_exact": at_exact, "return_generation": g_r,
                         "return_share": share0, "return_share_exact": back_pred,
                         "generations": G})
            curves.append((alpha, c["curve"], f_star))
        tables = {"degeneration": pd.DataFrame(rows)}
        return Outcome(claims, tables, [_figure(tables["degeneration"], curves, N, claims)])


def _figure(tab, curves, N, claims) -> Figure:
    fig = MplFigure(figsize=(10, 4))
    ax1, ax2 = fig.subplots(1, 2)
    for j, (alpha, mean_h, f_star) in enumerate(curves):
        ax1.plot(np.arange(1, mean_h.size), mean_h[1:], color=f"C{j}", label=f"N alpha = {N * alpha:g}")
        ax1.axhline(f_star, ls=":", color=f"C{j}")
    ax1.set_xscale("log")
    ax1.set_xlabel("generation g")
    ax1.set_ylabel("mean homozygosity sum_i mu_g(i)^2")
    ax1.set_title("Homozygosity settles at F* (dotted)")
    ax1.legend(fontsize=8)
    ax2.errorbar(tab["N_alpha"], tab["near_fraction"], yerr=1.96 * tab["near_se"], fmt="o", color="k", capsize=3,
                 label="measured")
    ax2.plot(tab["N_alpha"], tab["near_exact"], "s", mfc="none", color="C0", ms=9, label="exact stationary chain")
    ax2.set_xscale("log")
    ax2.set_xticks(tab["N_alpha"], [f"{v:g}" for v in tab["N_alpha"]])
    ax2.minorticks_off()
    ax2.set_xlabel("N alpha")
    ax2.set_ylabel("fraction of generations near a point mass")
    ax2.set_title("Time near collapse grows as N alpha falls")
    ax2.legend(fontsize=8)
    n_ok = sum(c.holds for c in claims)
    caption = ("Theory (Borkar 2025): with a fraction alpha of fresh data recursive training no longer collapses; it "
               "'degenerates', spending a fraction of time near a point mass that grows as N alpha falls, with "
               f"stationary homozygosity F*. Seen: {n_ok} of {len(claims)} claims hold; the time near a point mass goes "
               f"from {tab['near_fraction'].iloc[-1]:.3f} at N alpha = {tab['N_alpha'].iloc[-1]:g} to "
               f"{tab['near_fraction'].iloc[0]:.3f} at N alpha = {tab['N_alpha'].iloc[0]:g}.")
    return Figure("degeneration", fig, caption)
