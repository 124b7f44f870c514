"""Experiment ``timescales``: SGD on quadratics runs on two time scales.

Three measurements, each against an exact prediction for the discrete iteration:

1. Stationary covariance of constant-step SGD on F = 1/2 theta^T H theta with noise sigma^2 I:
   the discrete Lyapunov solution S = (I - aH) S (I - aH)^T + a^2 sigma^2 I, i.e. variance
   a sigma^2 / (lambda (2 - a lambda)) along an eigenvector of curvature lambda. The SDE value
   a sigma^2 / (2 lambda) is shown beside it.
2. Relaxation times on the S1 quadratic F = lx x^2/2 + eps (ly y^2/2 + k x y) for several eps:
   the mean of the mode with eigenvalue h of H decays as (1 - a h)^k, relaxation time
   -1 / ln|1 - a h| steps; the slow/fast ratio is close to (lx/ly) / eps.
3. Tracking error e = x - lambda(y), lambda(y) = -eps k y / lx, along the relaxation of y from a
   displaced start: E e_k^2 = (w^T m_k)^2 + w^T S_k w exactly, with m_{k+1} = M m_k and
   S_{k+1} = M S_k M^T + a^2 C (M = I - aH, w = (1, eps k / lx)): a lag part that vanishes with
   eps and a noise part proportional to sqrt(a) sigma.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure as MplFigure
from pydantic import Field
from scipy.linalg import solve_discrete_lyapunov
from scipy.stats import special_ortho_group

from ..claims import claim
from ..stats import mean_se
from ..dynamics import simulate
from ..landscapes import S1, Quadratic
from ..noise import Gaussian, s1_noise
from ..observers import Moments, Trace
from .base import ConfigError, Context, Experiment, ExperimentConfig, Figure, Outcome

BURN_IN = 10.0  # relaxation times before sampling: initial-condition bias <= exp(-20)
MAX_STEPS = 300_000  # per simulation; longer configurations are refused with an explanation


class TimescalesConfig(ExperimentConfig):
    step: float = Field(0.05, ge=1e-3, le=10.0, description=(
        "constant step size a (>= 0.001; run length grows as 1/a). Stable iff a*lambda < 2 for every "
        "curvature; a larger step is reported as a divergence with its step and chain"))
    sigma: float = Field(1.0, gt=0, le=1e3, description="gradient-noise scale sigma (noise covariance sigma^2 I)")
    curvatures: list[float] = Field([0.5, 2.0, 6.0], min_length=1, max_length=8, description=(
        "eigenvalues of H for the covariance test (each > 0); H = R diag(curvatures) R^T, R a seeded rotation"))
    eps: list[float] = Field([0.1, 0.03], min_length=2, max_length=6, description=(
        "time-scale ratios eps of the S1 quadratic (each in (0, 0.5]; at least two distinct values)"))
    fast_curvature: float = Field(1.0, gt=0, le=100, description="lx: curvature of F0(x) = lx x^2 / 2")
    slow_curvature: float = Field(1.0, gt=0, le=100, description="ly: curvature of F1 in y")
    coupling: float = Field(0.5, ge=0, le=100, description="k: bilinear coupling eps*k*x*y (need lx*ly > eps*k^2)")
    tracking_noise: float = Field(0.25, gt=0, lt=1, description=(
        "second noise level for the tracking test, as a fraction of sigma"))
    chains: int = Field(10000, ge=200, le=10**6, description="independent chains per simulation")
    relax: float = Field(40.0, ge=5, le=10**4, description=(
        "stationary sampling length in units of the slowest relaxation time (covariance test)"))
    dtype: str = Field("float64", pattern="^(float32|float64)$", description="simulation precision")


class Timescales(Experiment):
    name = "timescales"
    section = '1. Two time scales'
    prediction = ("Under a loss that depends strongly on x and weakly (eps) on y, constant-step SGD relaxes x about 1/eps times faster than y, and its stationary spread is the discrete Lyapunov solution, not the SDE's.")
    summary = "stationary covariance vs discrete Lyapunov, relaxation-time ratio vs 1/eps, tracking error"
    Config = TimescalesConfig
    quick = {"chains": 1000, "relax": 15.0}
    sample_keys = ('chains',)

    def check(self, cfg):
        if any(not 0 < e <= 0.5 for e in cfg.eps) or len(set(cfg.eps)) < 2:
            raise ConfigError(f"invalid value for timescales.eps={cfg.eps}: need >= 2 distinct values in (0, 0.5]")
        if any(c <= 0 for c in cfg.curvatures):
            raise ConfigError(f"invalid value for timescales.curvatures={cfg.curvatures}: each must be > 0")
        for e in cfg.eps:
            if cfg.fast_curvature * cfg.slow_curvature <= e * cfg.coupling**2:
                raise ConfigError(f"invalid value for timescales.coupling={cfg.coupling}: need "
                                  f"fast_curvature*slow_curvature > eps*coupling^2 (eps={e})")
        a = cfg.step
        slowest = -1 / math.log1p(-a * min(cfg.curvatures)) if a * min(cfg.curvatures) < 1 else 1.0
        if (BURN_IN + cfg.relax) * slowest > MAX_STEPS:
            raise ConfigError(f"invalid value for timescales.step={a}: with curvature {min(cfg.curvatures):g} the "
                              f"covariance run needs {(BURN_IN + cfg.relax) * slowest:.3g} steps (limit {MAX_STEPS}); "
                              "raise step or the smallest curvature, or lower relax")
        h_slow = min(np.linalg.eigvalsh(S1.quadratic(cfg.fast_curvature, cfg.slow_curvature, cfg.coupling, e)
                                        .hessian(np.zeros(2)))[0] for e in cfg.eps)
        if a * h_slow < 1 and -4 / math.log1p(-a * h_slow) > MAX_STEPS:
            raise ConfigError(f"invalid value for timescales.step={a}: the slowest S1 mode (eps={min(cfg.eps):g}) "
                              f"relaxes in {-1 / math.log1p(-a * h_slow):.3g} steps (limit {MAX_STEPS // 4}); raise "
                              "step, eps or slow_curvature")

    def run(self, cfg, ctx: Context) -> Outcome:
        import torch

        dtype = getattr(torch, cfg.dtype)
        claims, tables, figures = [], {}, []

        # 1. stationary covariance ------------------------------------------------------------
        a, sigma = cfg.step, cfg.sigma
        lam = np.sort(np.asarray(cfg.curvatures, dtype=np.float64))
        d = lam.size
        R = special_ortho_group.rvs(d, random_state=np.random.default_rng(ctx.seed_for("rotation"))) if d > 1 else np.eye(1)
        H = R @ np.diag(lam) @ R.T
        M = np.eye(d) - a * H
        S = solve_discrete_lyapunov(M, a * a * sigma**2 * np.eye(d))
        mu = 1 - a * lam
        tau = _relaxation(mu)
        stable = np.abs(mu) < 1
        t_max = float(tau[stable].max()) if stable.any() else 1.0
        burn = int(math.ceil(BURN_IN * t_max))
        n_steps = max(200, burn + int(math.ceil(cfg.relax * t_max)))
        if not stable.all():  # long enough for an unstable mode to reach the divergence bound
            n_steps = max(n_steps, min(10**6, int(math.ceil(30 / max(np.log(np.abs(mu).max()), 1e-12)))))

        thin = max(1, int(tau[stable].min() / 2)) if stable.any() else 1  # keeps nearly all information

        def cov_cell():
            sim = simulate(Quadratic(H), Gaussian(sigma), a, n_steps, cfg.chains, init=np.zeros(d),
                           seed=ctx.seed_for("covariance"), observers=[Moments(start=burn, every=thin)], dtype=dtype,
                           progress=ctx.progress)
            return {"second": sim["moments"].chain_second}

        second = ctx.cell("covariance", cov_cell)["second"]
        rows = []
        for i in range(d):
            v = R[:, i]
            per_chain = np.einsum("i,nij,j->n", v, second, v)
            m, se = mean_se(per_chain)
            lyap, sde = float(v @ S @ v), a * sigma**2 / (2 * lam[i])
            claims.append(claim(f"stationary-variance@curvature={lam[i]:g}",
                                f"stationary variance, curvature {lam[i]:g} (a*lambda={a * lam[i]:.3g})", lyap, m, se,
                                detail="discrete Lyapunov a*sigma^2/(lambda(2-a*lambda)); SDE value in table"))
            rows.append({"curvature": lam[i], "a_lambda": a * lam[i], "measured": m, "se": se,
                         "lyapunov": lyap, "sde": sde, "relaxation_steps": float(tau[i])})
        cov_table = pd.DataFrame(rows)
        tables["covariance"] = cov_table

        # 2-3. S1 quadratic: relaxation times and tracking ---------------------------------------
        lx, ly, k = cfg.fast_curvature, cfg.slow_curvature, cfg.coupling
        relax_rows, track_rows, curves = [], [], []
        for eps in sorted(cfg.eps, reverse=True):
            land = S1.quadratic(lx, ly, k, eps)
            Hs = land.hessian(np.zeros(2))
            h, V = np.linalg.eigh(Hs)  # h[0] slow, h[1] fast
            mu = 1 - a * h
            if np.any(np.abs(mu) >= 1):
                tau_s = tau_f = float("nan")
            else:
                tau_s, tau_f = _relaxation(mu)
            K = int(math.ceil(4 * tau_s)) if math.isfinite(tau_s) else 4096
            every = max(1, K // 400)
            lag_f = max(1, int(round(tau_f))) if math.isfinite(tau_f) else 1
            w = np.array([1.0, eps * k / lx])
            levels = (("main", 1.0), ("low", cfg.tracking_noise))  # noise factors on sigma
            n = cfg.chains
            starts = [np.full(2, 1.0 + 20 * sigma * f * math.sqrt(a)) for _, f in levels]

            def s1_cell(land=land, eps=eps, K=K, every=every, lag_f=lag_f, starts=starts, w=w, V=V, tau_f=tau_f,
                        tau_s=tau_s):
                # both noise levels in one simulation: per-chain noise factors, one group of chains each
                sim = simulate(land, s1_noise(sigma, 1, 2, eps), a, K, 2 * n, init=np.repeat(starts, n, axis=0),
                               noise_scale=np.repeat([f for _, f in levels], n), seed=ctx.seed_for("s1", eps),
                               dtype=dtype, progress=ctx.progress,
                               observers=[Trace(every=every, name="coarse"), Trace(every=lag_f, until=lag_f, name="early")])
                steps, tr = sim["coarse"].steps, sim["coarse"].values  # (steps, 2n, 2)
                es, ev = sim["early"].steps, sim["early"].values
                err2 = (tr @ w) ** 2  # squared tracking error (steps, 2n)
                i_f = int(np.argmin(np.abs(es - max(1.0, tau_f))))
                i_s = int(np.argmin(np.abs(steps - tau_s)))
                by_level = lambda x: x.reshape(x.shape[0], 2, n, *x.shape[2:]).mean(axis=2)  # noqa: E731
                # what the claims and figures read: per chain, the time-averaged squared error after 5 fast
                # relaxation times and the eigenmode projections at the two lags; per level, the means over chains
                return {"coarse_steps": steps, "err2": err2[steps >= 5 * tau_f].mean(axis=0),
                        "err2_mean": by_level(err2), "proj_mean": by_level(tr @ V),
                        "lag_f": es[i_f], "proj_f": ev[i_f] @ V[:, 1], "lag_s": steps[i_s], "proj_s": tr[i_s] @ V[:, 0]}

            both = ctx.cell(f"s1_eps={eps:g}", s1_cell)
            steps = both["coarse_steps"]
            for j, ((level, factor), theta0) in enumerate(zip(levels, starts)):
                sig = sigma * factor
                C = sig**2 * np.diag([1.0, eps**2])
                group = slice(j * n, (j + 1) * n)
                # exact moments along the saved steps
                m_k, S_k = _exact_moments(np.eye(2) - a * Hs, a * a * C, theta0, steps)
                e2_exact = (m_k @ w) ** 2 + np.einsum("i,kij,j->k", w, S_k, w)
                window = steps >= 5 * tau_f
                ms, ms_se = mean_se(both["err2"][group])
                rms, rms_pred = math.sqrt(ms), math.sqrt(float(e2_exact[window].mean()))
                track_rows.append({"eps": eps, "noise": level, "sigma": sig, "sqrt_a_sigma": math.sqrt(a) * sig,
                                   "rms_measured": rms, "rms_se": ms_se / (2 * rms), "rms_exact": rms_pred,
                                   "noise_floor": sig * math.sqrt(a / (lx * (2 - a * lx)))})
                claims.append(claim(f"tracking-error@eps={eps:g},sigma={sig:g}",
                                    f"rms tracking error |x-lambda(y)|, eps={eps:g}, sigma={sig:g}", rms_pred, rms,
                                    ms_se / (2 * rms), detail="exact moment recursion of the linear iteration"))
                if level != "main":
                    continue
                curves.append((eps, steps, np.sqrt(both["err2_mean"][:, j]), np.sqrt(e2_exact), both["proj_mean"][:, j],
                               m_k @ V))
                # relaxation times from the mean projections on the eigenmodes
                est = _relaxation_estimates(both["proj_f"][group], both["lag_f"], both["proj_s"][group], both["lag_s"],
                                            V, theta0)
                pred_ratio = tau_s / tau_f
                claims.append(claim(f"fast-relaxation@eps={eps:g}",
                                    f"fast relaxation time (steps), eps={eps:g}", tau_f, est["tau_f"], est["se_f"],
                                    detail="-1/ln|1-a*h_fast|"))
                claims.append(claim(f"slow-relaxation@eps={eps:g}",
                                    f"slow relaxation time (steps), eps={eps:g}", tau_s, est["tau_s"], est["se_s"],
                                    detail="-1/ln|1-a*h_slow|"))
                claims.append(claim(f"relaxation-ratio@eps={eps:g}",
                                    f"slow/fast relaxation ratio, eps={eps:g} (1/eps={1 / eps:g})", pred_ratio,
                                    est["ratio"], est["se_ratio"], detail="exact discrete ratio; ~ (lx/ly)/eps"))
                relax_rows.append({"eps": eps, "inv_eps": 1 / eps, "tau_fast": tau_f, "tau_slow": tau_s,
                                   "ratio_exact": pred_ratio, "ratio_measured": est["ratio"],
                                   "ratio_se": est["se_ratio"], "tau_fast_measured": est["tau_f"],
                                   "tau_slow_measured": est["tau_s"]})
        tables["relaxation"] = pd.DataFrame(relax_rows)
        tables["tracking"] = pd.DataFrame(track_rows)

        figures.append(_figure_covariance(cov_table, a, sigma, claims))
        figures.append(_figure_relaxation(tables["relaxation"], curves, cfg))
        figures.append(_figure_tracking(tables["tracking"], curves, a))
        return Outcome(claims, tables, figures)


def _relaxation(mu: np.ndarray) -> np.ndarray:
    """Relaxation time -1/ln|mu| (steps) of a mode multiplied by mu per step (0 when mu = 0;
    negative for an unstable mode, |mu| > 1)."""
    with np.errstate(divide="ignore"):
        return -1.0 / np.log(np.abs(np.asarray(mu, dtype=np.float64)))


def _exact_moments(M, Q, m0, steps):
    """Mean and covariance of theta_k = M theta_{k-1} - a xi_k from theta_0 = m0 at ``steps``."""
    out_m, out_S = [], []
    m, S, k = np.asarray(m0, dtype=np.float64), np.zeros_like(Q), 0
    for target in steps:
        while k < target:
            m, S, k = M @ m, M @ S @ M.T + Q, k + 1
        out_m.append(m)
        out_S.append(S)
    return np.asarray(out_m), np.asarray(out_S)


def _relaxation_estimates(proj_f, L_f, proj_s, L_s, V, theta0) -> dict:
    """tau = -L / ln|mean projection at lag L / projection at 0|, with delta-method errors from
    the per-chain spread (chains are independent). ``proj_f``, ``proj_s``: each chain's projection on
    the fast and the slow eigenvector at the lags L_f and L_s (steps)."""
    u = np.stack([proj_f / (theta0 @ V[:, 1]), proj_s / (theta0 @ V[:, 0])], axis=1)
    mean = u.mean(axis=0)
    cov = np.cov(u, rowvar=False) / u.shape[0]
    r = np.abs(mean)
    t_f, t_s = -L_f / math.log(r[0]), -L_s / math.log(r[1])
    # d tau / d r = L / (r ln(r)^2), sign through |.|
    g_f = L_f / (r[0] * math.log(r[0]) ** 2) * np.sign(mean[0])
    g_s = L_s / (r[1] * math.log(r[1]) ** 2) * np.sign(mean[1])
    se_f, se_s = math.sqrt(g_f**2 * cov[0, 0]), math.sqrt(g_s**2 * cov[1, 1])
    ratio = t_s / t_f
    J = np.array([-ratio / t_f * g_f, ratio / t_s * g_s])  # d ratio / d (mean_f, mean_s)
    se_ratio = math.sqrt(max(0.0, float(J @ cov @ J)))
    return {"tau_f": t_f, "tau_s": t_s, "se_f": se_f, "se_s": se_s, "ratio": ratio, "se_ratio": se_ratio}


def _figure_covariance(tab, a, sigma, claims) -> Figure:
    fig = MplFigure(figsize=(6.2, 4.2))
    ax = fig.subplots()
    al = np.linspace(0, max(1.9, tab["a_lambda"].max() * 1.05), 200)
    ax.plot(al, 1 / (2 - al), "-", color="C0", label="discrete Lyapunov 1/(2 - a lambda)")
    ax.axhline(0.5, ls="--", color="C3", label="SDE approximation 1/2")
    norm = tab["curvature"] / (a * sigma**2)
    ax.errorbar(tab["a_lambda"], tab["measured"] * norm, yerr=1.96 * tab["se"] * norm, fmt="o", color="k",
                capsize=3, label="SGD, measured (95% CI)")
    ax.set_xlabel("a * lambda  (step x curvature)")
    ax.set_ylabel("variance x lambda / (a sigma^2)")
    ax.set_title("Stationary variance of constant-step SGD along each eigenvector")
    ax.legend(fontsize=8)
    worst = tab.iloc[int(np.argmax(tab["a_lambda"]))]
    caption = (f"Theory: the stationary variance along a mode of curvature lambda is a sigma^2/(lambda(2 - a lambda)) "
               f"(discrete Lyapunov), not the SDE's a sigma^2/(2 lambda). Seen: at a*lambda = {worst.a_lambda:.2f} the "
               f"measured variance is {worst.measured:.4g} +- {1.96 * worst.se:.2g}; Lyapunov {worst.lyapunov:.4g}, "
               f"SDE {worst.sde:.4g}.")
    return Figure("covariance", fig, caption)


def _figure_relaxation(tab, curves, cfg) -> Figure:
    fig = MplFigure(figsize=(10, 4))
    ax1, ax2 = fig.subplots(1, 2)
    for j, (eps, steps, _, _, proj, proj_exact) in enumerate(curves):
        c = f"C{j}"
        for mode, ls in ((1, "-"), (0, "--")):
            ok = steps > 0
            ax1.plot(steps[ok], np.abs(proj[ok, mode]), ls, color=c, alpha=0.8,
                     label=f"eps={eps:g}, {'fast' if mode else 'slow'} mode")
            ax1.plot(steps[ok], np.abs(proj_exact[ok, mode]), ":", color="k", lw=0.8)
    ax1.set_xscale("log")
    ax1.set_yscale("log")
    top = max(float(np.abs(c[5][0]).max()) for c in curves)
    ax1.set_ylim(top * 1e-3, top * 2)  # below this the mean is lost in the chains' noise
    ax1.set_xlabel("step k")
    ax1.set_ylabel("|mean projection on eigenmode|")
    ax1.set_title("Mean relaxation (dotted: exact (1 - a h)^k)")
    ax1.legend(fontsize=7)
    inv = tab["inv_eps"].to_numpy()
    ax2.errorbar(inv, tab["ratio_measured"], yerr=1.96 * tab["ratio_se"], fmt="o", color="k", capsize=3,
                 label="measured tau_slow / tau_fast")
    ax2.plot(inv, tab["ratio_exact"], "s", mfc="none", color="C0", label="exact discrete ratio")
    xs = np.linspace(0, inv.max() * 1.1, 50)
    ax2.plot(xs, xs * cfg.fast_curvature / cfg.slow_curvature, "--", color="C3", label="(lx/ly) / eps")
    ax2.set_xlabel("1 / eps")
    ax2.set_ylabel("tau_slow / tau_fast")
    ax2.set_title("Ratio of time scales")
    ax2.legend(fontsize=8)
    r = tab.iloc[-1]
    caption = (f"Theory: x relaxes in ~1/(a lx) steps, y in ~1/(a eps ly), so the ratio is ~(lx/ly)/eps. Seen: at "
               f"eps={r.eps:g} the ratio is {r.ratio_measured:.4g} +- {1.96 * r.ratio_se:.2g} (exact {r.ratio_exact:.4g}, "
               f"1/eps = {r.inv_eps:g}).")
    return Figure("relaxation", fig, caption)


def _figure_tracking(tab, curves, a) -> Figure:
    fig = MplFigure(figsize=(10, 4))
    ax1, ax2 = fig.subplots(1, 2)
    for j, (eps, steps, rms, rms_exact, _, _) in enumerate(curves):
        ax1.plot(steps, rms, color=f"C{j}", label=f"eps={eps:g} measured")
        ax1.plot(steps, rms_exact, ":", color="k", lw=1)
    ax1.set_xscale("symlog", linthresh=1)
    ax1.set_yscale("log")
    ax1.set_xlabel("step k")
    ax1.set_ylabel("rms |x - lambda(y)|")
    ax1.set_title("Tracking of the slow manifold (dotted: exact)")
    ax1.legend(fontsize=8)
    for j, (eps, g) in enumerate(tab.groupby("eps", sort=False)):
        ax2.errorbar(g["sqrt_a_sigma"], g["rms_measured"], yerr=1.96 * g["rms_se"], fmt="o", color=f"C{j}",
                     capsize=3, label=f"eps={eps:g}")
        ax2.plot(g["sqrt_a_sigma"], g["rms_exact"], "x", color="k")
    xs = np.linspace(0, tab["sqrt_a_sigma"].max() * 1.1, 20)
    lx_floor = (tab["noise_floor"] / tab["sigma"]).iloc[0] / math.sqrt(a)
    ax2.plot(xs, xs * lx_floor, "--", color="gray", label="noise floor sqrt(a) sigma / sqrt(lx (2 - a lx))")
    ax2.set_xlabel("sqrt(a) * sigma")
    ax2.set_ylabel("time-averaged rms tracking error")
    ax2.set_title("Error grows with sqrt(a) sigma")
    ax2.legend(fontsize=8)
    main = tab[tab["noise"] == "main"].iloc[0]
    caption = (f"Theory: x tracks lambda(y) with error O(eps) + O(sqrt(a) sigma). Seen: the error is set by the noise "
               f"floor; at eps={main.eps:g}, sqrt(a) sigma={main.sqrt_a_sigma:.3g}, rms error {main.rms_measured:.4g} "
               f"(exact {main.rms_exact:.4g}); it scales in proportion to sqrt(a) sigma.")
    return Figure("tracking", fig, caption)
