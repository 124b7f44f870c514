"""Experiment ``collapse``: recursive training without fresh data collapses.

A model that reproduces its training data exactly, retrained on N of its own samples each
generation (alpha = 0), is multi-type Wright-Fisher over the training points. Claims:

* it collapses onto training point i with probability mu_0(i);
* the heterozygosity decays exactly as E[H_g] = (1 - 1/N)^g H_0;
* the mean collapse time equals the exact absorbing-chain value (small N, exact K-type chain) and
  the diffusion approximation -2N sum_i (1 - mu_0(i)) ln(1 - mu_0(i)) (large N).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure as MplFigure
from pydantic import Field

from ..claims import claim
from ..stats import binomial_se, mean_se
from ..collapse import exact_fit, initial_counts, wright_fisher_chain
from .base import ConfigError, Context, Experiment, ExperimentConfig, ExperimentError, Figure, Outcome


class CollapseConfig(ExperimentConfig):
    weights: list[float] = Field([0.4, 0.3, 0.2, 0.1], min_length=2, max_length=8, description=(
        "mu_0: weights of the training points (each > 0, normalised); 2 to 8 points"))
    n_small: int = Field(20, ge=2, le=40, description="N for the exact absorbing-chain check (K-type chain)")
    n_large: int = Field(1000, ge=50, le=10**5, description="N for the diffusion-approximation check")
    replicates: int = Field(4000, ge=100, le=10**6, description="independent recursive-training runs per N")


def _diffusion_time(mu0: np.ndarray, N: int) -> float:
    q = 1 - mu0
    return float(-2 * N * np.sum(q * np.log(q)))


class Collapse(Experiment):
    name = "collapse"
    section = "3. Collapse in recursive training"
    prediction = (
        'Training only on its own samples (alpha = 0) a model collapses onto one training point, with the '
        'Wright-Fisher laws of absorption, heterozygosity and collapse time.')
    summary = "exact-fit recursive training: collapse law, heterozygosity decay, collapse time vs exact chain"
    Config = CollapseConfig
    quick = {"replicates": 800, "n_large": 300}
    sample_keys = ('replicates',)

    def check(self, cfg):
        if any(w <= 0 for w in cfg.weights):
            raise ConfigError(f"invalid value for collapse.weights={cfg.weights}: each weight must be > 0")
        K, N = len(cfg.weights), cfg.n_small
        if math.comb(N + K - 1, K - 1) > 5000:
            raise ConfigError(f"invalid value for collapse.n_small={N}: the exact {K}-type chain would have "
                              f"{math.comb(N + K - 1, K - 1)} states (limit 5000)")
        if min(initial_counts(np.asarray(cfg.weights) / sum(cfg.weights), N)) == 0:
            raise ConfigError(f"invalid value for collapse.n_small={N}: too small to hold every training point")

    def run(self, cfg, ctx: Context) -> Outcome:
        w = np.asarray(cfg.weights, dtype=np.float64)
        w /= w.sum()
        K = w.size
        claims, rows, hets = [], [], {}
        for label, N in (("small", cfg.n_small), ("large", cfg.n_large)):
            mu0 = initial_counts(w, N) / N  # the initial data set's empirical law
            G = int(math.ceil(_diffusion_time(mu0, N) + 20 * N))

            gens = sorted({max(1, N // 2), N, 2 * N})  # the heterozygosity claims' generations

            def cell(N=N, G=G, label=label, gens=gens):
                h = exact_fit(w, N, G, cfg.replicates, seed=ctx.seed_for(label))
                het = h.heterozygosity
                # what the claims and the figure read: every replicate at the claims' generations, the mean
                # over replicates for the first 4N generations
                return {"het_at": het[:, gens], "het_mean": het[:, : min(het.shape[1], 4 * N)].mean(0),
                        "time": h.collapse_time, "atom": h.collapse_atom}

            c = ctx.cell(f"N={N}", cell)
            if np.any(c["time"] < 0):
                raise ExperimentError(f"{int(np.sum(c['time'] < 0))} replicates did not collapse in {G} generations")
            R = c["time"].size
            frac = np.bincount(c["atom"], minlength=K) / R
            for i in range(K):
                claims.append(claim(f"collapse-point@N={N},point={i}",
                                    f"P(collapse onto point {i}), N={N}", mu0[i], frac[i],
                                    binomial_se(frac[i], R),
                                    detail="= its initial weight mu_0(i) (martingale)"))
            H0 = 1 - float(np.sum(mu0**2))
            for j, g in enumerate(gens):
                m, se = mean_se(c["het_at"][:, j])
                claims.append(claim(f"heterozygosity@N={N},g={g}",
                                    f"E[heterozygosity] at g={g}, N={N}", H0 * (1 - 1 / N) ** g, m, se,
                                    detail="(1 - 1/N)^g H_0 exactly"))
            t_mean, t_se = mean_se(c["time"])
            diffusion = _diffusion_time(mu0, N)
            if label == "small":
                mc, S = wright_fisher_chain(N, K)
                start = np.flatnonzero((S == initial_counts(w, N)).all(1))[0]
                exact = float(mc.mean_absorption_time()[np.searchsorted(mc.transient_states, start)])
                claims.append(claim(f"collapse-time@N={N}",
                                    f"mean collapse time (generations), N={N}", exact, t_mean, t_se,
                                    detail=f"exact {K}-type Wright-Fisher absorbing chain"))
            else:
                exact = float("nan")
                claims.append(claim(f"collapse-time@N={N}",
                                    f"mean collapse time (generations), N={N}", diffusion, t_mean, t_se,
                                    detail="diffusion approximation -2N sum (1-mu0) ln(1-mu0)"))
            rows.append({"N": N, "generations": G, "replicates": R, "mean_collapse_time": t_mean,
                         "collapse_time_se": t_se, "exact_chain": exact if label == "small" else -1.0,
                         "diffusion": diffusion, "H0": H0})
            hets[N] = (c["het_mean"], frac, mu0)
        atoms = pd.DataFrame([{"N": N, "point": i, "mu0": mu0[i], "collapse_fraction": frac[i]}
                              for N, (_, frac, mu0) in hets.items() for i in range(K)])
        tables = {"collapse_time": pd.DataFrame(rows), "collapse_points": atoms}
        return Outcome(claims, tables, [_figure(hets, claims)])


def _figure(hets, claims) -> Figure:
    fig = MplFigure(figsize=(10, 4))
    ax1, ax2 = fig.subplots(1, 2)
    for j, (N, (het_mean, _, mu0)) in enumerate(hets.items()):
        g = np.arange(het_mean.size)  # the first 4N generations
        ax1.plot(g, het_mean, color=f"C{j}", label=f"N={N}, mean over replicates")
        ax1.plot(g, (1 - np.sum(mu0**2)) * (1 - 1 / N) ** g, ":", color="k")
    ax1.set_yscale("log")
    ax1.set_xscale("log")
    ax1.set_xlabel("generation g")
    ax1.set_ylabel("heterozygosity H_g")
    ax1.set_title("Heterozygosity decay (dotted: (1 - 1/N)^g H_0)")
    ax1.legend(fontsize=8)
    width = 0.8 / len(hets)
    for j, (N, (_, frac, mu0)) in enumerate(hets.items()):
        x = np.arange(mu0.size)
        ax2.bar(x + j * width, frac, width, color=f"C{j}", alpha=0.8, label=f"collapse point, N={N}")
        ax2.plot(x + j * width, mu0, "k_", ms=18, mew=2)
    ax2.set_xlabel("training point")
    ax2.set_ylabel("fraction of replicates")
    ax2.set_title("Where the model collapses (black: initial weight)")
    ax2.legend(fontsize=8)
    n_ok = sum(c.holds for c in claims)
    caption = ("Theory (Borkar 2025): without fresh data a model that reproduces its training set collapses to a "
               "single training point, chosen with probability equal to its initial weight, while the "
               f"heterozygosity decays as (1 - 1/N)^g. Seen: every replicate collapsed; {n_ok} of {len(claims)} "
               "claims hold (collapse law, exact heterozygosity decay, mean collapse time).")
    return Figure("collapse", fig, caption)
