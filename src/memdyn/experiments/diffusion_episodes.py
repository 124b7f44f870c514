"""Experiment ``diffusion-episodes``: memorization episodes in a real diffusion model, against the
learning rate and with or without EMA.

The theory's fast variable hops between memorizing states at rates set by the step size: with a
barrier V in the loss landscape, the mean dwell time in a memorizing state grows like exp(V / a)
(Arrhenius in the step a), so larger steps give shorter episodes; anything that lowers the noise of
the sampled parameters (an exponential moving average of the weights, EMA) lengthens them.

Here a residual MLP denoiser (x0 prediction, Adam at a constant learning rate) trains on n real
MNIST digits with the memorization monitor attached. After ``burn`` steps (memorization has set in:
f_mem is near 1) every probe's sample is labelled every ``every`` steps for ``window`` steps with
the core sets of :func:`memdyn.memorization.probe_states`; a probe's memorization episode is a stay
in the core of one training digit. Each replicate uses the same training digits, initial weights,
batches and probes at every learning rate (common random numbers), so the conditions differ only in
the learning rate and EMA.

Per condition: the mean episode length in steps (exponential maximum likelihood, pooled over probes
and replicates: exposure / completed episodes; episodes running at the start of the window are
dropped, those running at its end are censored), the coefficient of variation of completed lengths,
the number of episodes and f_mem. Standard errors come from a bootstrap over probes (resampled
jointly across conditions, so differences are paired), since probes differ widely in how stable
their digit is (CV ~ 2: the pooled lengths are not one exponential law).

Claims (what the theory predicts, tested one-sided where it predicts only a direction):

* larger steps, shorter episodes: ln L(smallest lr) - ln L(largest lr) >= 0;
* the Arrhenius slope of ln L against 1/lr is >= 0 (a positive barrier); its line's chi^2 and p
  say whether the data look Arrhenius at all, and the slope of ln L against ln lr (a power law) is
  reported beside it;
* EMA sampling lengthens episodes: the exit rate from memorized states (completed episodes per
  step spent in them) is lower with EMA, rate(no EMA) - rate(EMA) >= 0 at each EMA learning rate (a
  rate stays finite when an EMA run sees few or no episodes end; its mean length is then a lower
  bound, marked in the table).

The stylized model fitted to the run (:func:`memdyn.practice.stylized_fit`): its barrier V and
prefactor P from ln(lr L) = ln P + V / lr (the exit law with its 1/a prefactor), and eps from the
trained network's Hessian-diagonal influence (the fewest parameters carrying half the total are
the strong group; a network's ln I has no gap). Its predictions beside the measurements are the
table ``stylized``; whether a law with V >= 0 describes the run is the summary's ``stylized_fit``
verdict (shown in "Theory vs practice"). With Adam, a parameter's step is divided by its gradient's
RMS, so eps from the influence does not set the groups' speeds as it does under SGD; the slow time
1/(lr eps) is the stylized model's, reported, not tested.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure as MplFigure
from pydantic import Field

from ..claims import claim
from ..episodes import coefficient_of_variation, detect
from ..practice import span_text, stylized_fit
from ..stats import bootstrap_slopes, line_fit
from .base import ConfigError, Context, Experiment, ExperimentConfig, ExperimentError, Figure, Outcome

BOOT = 1000  # bootstrap resamples of the probes
INFLUENCE_BATCHES = 4  # batches (x 4 Hutchinson probes) for the trained network's influence
EPS_MASS = 0.5  # the strong group: the fewest parameters that carry this share of the total influence
RELAX_STEPS = 300  # Adam steps over which the two groups' relaxation after a perturbation is followed


class DiffusionEpisodesConfig(ExperimentConfig):
    dataset: str = Field("mnist5k-14", pattern="^(mnist5k|mnist5k-14|mnist5k-7|digits8)$", description="image dataset")
    n: int = Field(16, ge=4, le=256, description="training digits")
    lrs: list[float] = Field([2.5e-4, 1e-3, 4e-3], min_length=3, max_length=8,
                             description="constant Adam learning rates (>= 3, increasing, each in (0, 0.05])")
    ema: float = Field(0.999, gt=0, lt=1, description="EMA decay of the weights in the EMA runs")
    ema_lrs: list[float] | None = Field(None, min_length=1, max_length=8, description=(
        "learning rates (from lrs) also run with EMA sampling; default: all of them"))
    replicates: int = Field(2, ge=1, le=20, description=(
        "training runs per condition (each: its own digits, weights, batches and probes, shared across conditions)"))
    width: int = Field(256, ge=16, le=2048, description="MLP width")
    batch: int = Field(64, ge=1, le=4096, description="batch size")
    probes: int = Field(32, ge=8, le=1024, description="probes of the monitor")
    sample_steps: int = Field(10, ge=2, le=1000, description="DDIM steps per sample")
    burn: int = Field(2000, ge=0, le=10**6, description="training steps before episodes are counted")
    window: int = Field(4000, ge=100, le=10**7, description="training steps over which episodes are counted")
    every: int = Field(20, ge=1, le=10**4, description="steps between checkpoints (the episodes' time resolution)")


class DiffusionEpisodes(Experiment):
    name = "diffusion-episodes"
    section = "7. Memorization in real diffusion training"
    prediction = ("Memorization episodes in a real diffusion model get shorter as the learning rate grows (Arrhenius in "
                  "the step: ln L ~ V / lr) and longer when samples come from an EMA of the weights.")
    summary = "MLP denoiser on MNIST digits: memorization episode lengths vs learning rate and EMA"
    Config = DiffusionEpisodesConfig
    quick = {"ema_lrs": [1e-3], "replicates": 1, "burn": 1000, "window": 2000, "width": 128, "batch": 32}
    sample_keys = ("replicates", "probes")
    suite_form = "quick"  # the default suite runs the quick form (about a minute)

    def check(self, cfg):
        lrs = cfg.lrs
        if any(b <= a for a, b in zip(lrs, lrs[1:])) or lrs[0] <= 0 or lrs[-1] > 0.05:
            raise ConfigError(f"invalid value for diffusion-episodes.lrs={lrs}: increasing, each in (0, 0.05]")
        bad = [v for v in (cfg.ema_lrs or []) if not any(math.isclose(v, a) for a in lrs)]
        if bad:
            raise ConfigError(f"invalid value for diffusion-episodes.ema_lrs={cfg.ema_lrs}: each must be one of lrs "
                              f"{lrs}")
        if cfg.window < 10 * cfg.every:
            raise ConfigError(f"invalid value for diffusion-episodes.window={cfg.window}: need at least 10 checkpoints "
                              f"(window >= 10 * every = {10 * cfg.every})")

    def run(self, cfg, ctx: Context) -> Outcome:
        ema_lrs = cfg.lrs if cfg.ema_lrs is None else cfg.ema_lrs
        conds = [(lr, False) for lr in cfg.lrs] + [(lr, True) for lr in ema_lrs]
        k0 = cfg.burn // cfg.every
        # per condition and replicate: each probe's exposure (checkpoints in memorized episodes) and completed count
        per, runs = {}, {}
        for lr, ema in conds:
            for r in range(cfg.replicates):
                seed = ctx.seed_for("replicate", r) % 2**31  # the same at every learning rate
                res = ctx.cell(f"lr={lr:g}_ema={int(ema)}_rep={r}", lambda lr=lr, ema=ema, seed=seed:
                               _train_one(cfg, lr, cfg.ema if ema else None, seed))
                runs[(lr, ema, r)] = res
                per[(lr, ema, r)] = _probe_counts(res["states"][:, k0:], cfg.n, cfg.probes)
        rows, lnl, boot = [], {}, {}
        rng = np.random.default_rng(ctx.seed_for("bootstrap"))
        weights = rng.multinomial(cfg.probes, np.full(cfg.probes, 1 / cfg.probes), size=(BOOT, cfg.replicates))
        rate, rate_b = {}, {}
        for lr, ema in conds:
            expo = np.stack([per[(lr, ema, r)]["exposure"] for r in range(cfg.replicates)])
            done = np.stack([per[(lr, ema, r)]["completed"] for r in range(cfg.replicates)])
            if expo.sum() == 0 or (not ema and done.sum() < 5):
                raise ExperimentError(f"diffusion-episodes: at lr={lr:g}{' with EMA' if ema else ''} only "
                                      f"{int(done.sum())} memorization episodes ended within the window; raise burn, "
                                      "window or replicates")
            e_b, d_b = np.einsum("brp,rp->b", weights, expo), np.einsum("brp,rp->b", weights, done)
            rate[(lr, ema)] = done.sum() / (expo.sum() * cfg.every)  # exits per step in memorized states
            rate_b[(lr, ema)] = d_b / np.maximum(e_b * cfg.every, 1e-300)
            lnl[(lr, ema)] = math.log(expo.sum() * cfg.every / max(done.sum(), 1))  # a lower bound when none ended
            with np.errstate(divide="ignore"):
                b = np.log(e_b * cfg.every / d_b)
            boot[(lr, ema)] = b
            lengths = np.concatenate([per[(lr, ema, r)]["lengths"] for r in range(cfg.replicates)]) * cfg.every
            fm = np.mean([runs[(lr, ema, r)]["f_mem"][k0:].mean() for r in range(cfg.replicates)])
            rows.append({"lr": lr, "ema": ema, "mean_length": math.exp(lnl[(lr, ema)]),
                         "lower_bound": bool(done.sum() == 0), "exit_rate": rate[(lr, ema)],
                         "exit_rate_se": _sd(rate_b[(lr, ema)]),
                         "log_mean_length": lnl[(lr, ema)], "log_mean_length_se": _sd(b) if done.sum() >= 5 else None,
                         "completed": int(done.sum()), "censored": int(sum(per[(lr, ema, r)]["censored"]
                                                                          for r in range(cfg.replicates))),
                         "cv": coefficient_of_variation(lengths) if lengths.size > 2 else None,
                         "f_mem": float(fm)})
        tab = pd.DataFrame(rows).astype({"cv": "Float64", "log_mean_length_se": "Float64"})  # NA: too few episodes
        plain = cfg.lrs
        y = np.array([lnl[(lr, False)] for lr in plain])
        yb = np.stack([boot[(lr, False)] for lr in plain], axis=1)  # (BOOT, lrs)
        se = np.array([_sd(yb[:, i]) for i in range(len(plain))])
        inv, logs = 1 / np.asarray(plain), np.log(plain)
        arr = line_fit(inv, y, se)
        slope_b = bootstrap_slopes(inv, yb, se)
        power = line_fit(logs, y, se)
        power_b = bootstrap_slopes(logs, yb, se)
        claims = []
        d, db = y[0] - y[-1], yb[:, 0] - yb[:, -1]
        claims.append(claim("shorter-episodes",
                            f"larger steps, shorter episodes: ln L(lr={plain[0]:g}) - ln L(lr={plain[-1]:g})", 0.0, d,
                            _sd(db), side="at_least",
                            detail=(f"mean episode lengths {math.exp(y[0]):.0f} and {math.exp(y[-1]):.0f} steps; "
                                    "one-sided; se from a bootstrap over probes, paired across learning rates")))
        claims.append(claim("arrhenius-slope",
                            "Arrhenius slope of ln L against 1/lr (a barrier V > 0)", 0.0, arr.slope, _sd(slope_b),
                            side="at_least", fit=arr,
                            detail=(f"the line's chi2 = {arr.chi2:.3g} on {arr.dof} dof (p = {arr.p_value:.2g}); a power "
                                    f"law ln L = c + b ln lr gives b = {power.slope:.3f} +- {_sd(power_b):.3f} "
                                    f"(p = {power.p_value:.2g}); se from the bootstrap")))
        for lr in ema_lrs:
            e, eb = rate[(lr, False)] - rate[(lr, True)], rate_b[(lr, False)] - rate_b[(lr, True)]
            bound = "at least " if rate[(lr, True)] == 0 else ""
            claims.append(claim(f"ema-lengthens@lr={lr:g}",
                                f"EMA ({cfg.ema:g}) lengthens episodes at lr={lr:g}: exit rate (per step) without EMA - "
                                "with EMA", 0.0, e, _sd(eb), side="at_least",
                                detail=(f"mean lengths {bound}{math.exp(lnl[(lr, True)]):.0f} (EMA) and "
                                        f"{math.exp(lnl[(lr, False)]):.0f} steps; one-sided, paired bootstrap")))
        def mean_of(key, power=1):  # per plain lr, over replicates (power 2: standard errors of the mean)
            return np.array([np.mean([float(runs[(lr, False, r)][key]) ** power for r in range(cfg.replicates)])
                             for lr in plain])

        eps, eps_se = mean_of("eps"), np.sqrt(mean_of("eps_se", 2) / cfg.replicates)
        sty = stylized_fit(plain, y, se, boot=yb, eps=eps, eps_se=eps_se)

        stylized = pd.DataFrame({"lr": plain, "mean_length": np.exp(y), "log_mean_length_se": se,
                                 "stylized_length": np.exp(sty.predicted), "bounded_length": np.exp(sty.bounded),
                                 "eps": eps, "eps_se": eps_se, "slow_time": sty.slow_time,
                                 "strong_share": mean_of("strong_share"), "left_strong": mean_of("left_strong"),
                                 "left_weak": mean_of("left_weak"), "relax_strong": mean_of("relax_strong")})
        # NA: the strong group's distance never fell below its start within RELAX_STEPS (no relaxation time)
        stylized["relax_strong"] = pd.array([v if math.isfinite(v) else None for v in stylized["relax_strong"]],
                                            dtype="Float64")
        sty_verdict = sty.verdict()
        tau = stylized["relax_strong"].to_numpy(dtype=float, na_value=np.nan)
        tau_text = span_text(tau[np.isfinite(tau)], ".2g") if np.isfinite(tau).any() else "beyond reach"
        sty_verdict["how"] += (
            f". The stylized model also assumes that inside a well the fast variable relaxes much faster than it "
            f"leaves: after {RELAX_STEPS} Adam steps the network keeps {span_text(stylized['left_strong'], '.0%')} of a "
            f"small perturbation of its strong parameters and {span_text(stylized['left_weak'], '.0%')} of the weak ones "
            f"(strong relaxation time about {tau_text} steps, against episodes of {span_text(np.exp(y), '.0f')} "
            "steps): episodes end long before the parameters forget a perturbation")
        looks = "are inconsistent with the Arrhenius line" if arr.flagged else "are not rejected by the Arrhenius line"
        favour = ("the power law fits better" if power.p_value > arr.p_value else "the Arrhenius line fits better")
        summary = {"arrhenius_form": bool(not arr.flagged and arr.p_value >= power.p_value),
                   "arrhenius_slope": arr.slope, "arrhenius_slope_se": _sd(slope_b), "arrhenius_p": arr.p_value,
                   "power_slope": power.slope, "power_slope_se": _sd(power_b), "power_p": power.p_value,
                   "verdict": (f"the episode lengths {looks} in 1/lr (chi2 p = {arr.p_value:.2g}); a power law in lr, "
                               f"exponent {power.slope:.3f} +- {_sd(power_b):.3f}, has p = {power.p_value:.2g}: "
                               f"{favour}; over a {cfg.lrs[-1] / cfg.lrs[0]:g}-fold range of learning rates the mean "
                               f"length changes {math.exp(y[0] - y[-1]):.2f}-fold"),
                   "stylized_barrier": sty.barrier, "stylized_barrier_se": sty.barrier_se,
                   "stylized_log_prefactor": sty.log_prefactor, "eps": float(eps.mean()),
                   "stylized_fit": sty_verdict}
        fits = pd.DataFrame([{"model": "arrhenius: ln L vs 1/lr", "slope": arr.slope, "slope_se": _sd(slope_b),
                              "chi2": arr.chi2, "dof": arr.dof, "p_value": arr.p_value},
                             {"model": "power law: ln L vs ln lr", "slope": power.slope, "slope_se": _sd(power_b),
                              "chi2": power.chi2, "dof": power.dof, "p_value": power.p_value}])
        fits = pd.concat([fits, pd.DataFrame([{"model": "stylized law: ln(lr L) vs 1/lr", "slope": sty.barrier,
                                               "slope_se": sty.barrier_se, "chi2": sty.fit.chi2, "dof": sty.fit.dof,
                                               "p_value": sty.fit.p_value}])], ignore_index=True)
        return Outcome(claims, {"episodes": tab, "fits": fits, "stylized": stylized},
                       [_figure(cfg, tab, runs, k0, arr, power, summary["verdict"], sty, sty_verdict)], summary)


def _sd(values) -> float:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(np.std(v, ddof=1)) if v.size > 1 else float("nan")


def _probe_counts(states: np.ndarray, n: int, probes: int) -> dict:
    """Per probe, over the window: checkpoints spent in memorization episodes that started inside it
    (exposure) and how many of those ended inside it (completed)."""
    ep = detect(states)
    keep = (ep.state < n) & ~ep.left_censored
    exposure = np.bincount(ep.chain[keep], weights=ep.length[keep], minlength=probes)
    completed = np.bincount(ep.chain[keep & ~ep.right_censored], minlength=probes)
    return {"exposure": exposure, "completed": completed, "censored": int((keep & ep.right_censored).sum()),
            "lengths": ep.length[keep & ~ep.right_censored]}


def _train_one(cfg, lr: float, ema: float | None, seed: int) -> dict:
    from ..diffusion import NoiseSchedule, ResidualMLP, ddim_sampler, load_dataset, train
    from ..diffusion.models import seeded
    from ..monitor import MemorizationMonitor

    data = load_dataset(cfg.dataset, cfg.n, seed=seed)
    schedule = NoiseSchedule()
    model = seeded(lambda: ResidualMLP(data.shape, width=cfg.width), seed)
    mon = MemorizationMonitor(data.train, ddim_sampler(schedule, steps=cfg.sample_steps), probes=cfg.probes,
                              every=cfg.every, seed=seed)
    steps = cfg.burn + cfg.window
    res = train(model, data.train, steps=steps - steps % cfg.every, lr=lr, schedule=schedule, batch_size=cfg.batch,
                ema=ema, seed=seed, monitor=mon, progress=False)
    fm = mon.f_mem(n_boot=2)
    out = {"states": mon.states(), "steps": fm["step"].to_numpy(), "f_mem": fm["f_mem"].to_numpy()}
    if ema is None:  # the stylized model's eps and the two groups' relaxation, from the trained network
        out.update(_two_scales(cfg, res, data.train, schedule, seed))
    return out


def _two_scales(cfg, res, train_data, schedule, seed: int) -> dict:
    """The trained denoiser's two time scales. eps: Hessian-diagonal influence (Hutchinson) of the
    DDPM loss on INFLUENCE_BATCHES batches, split at EPS_MASS of the total influence (a network's
    ln I has no gap). Relaxation: each group's distance between the model and a copy perturbed by
    1e-3 N(0, 1) per parameter, both stepped RELAX_STEPS times by Adam from its trained state on
    the same fresh batches."""
    import torch

    from ..diffusion import denoising_loss
    from ..influence import influence, relaxation_times

    gen = torch.Generator().manual_seed(seed + 1)

    def batch():
        idx = torch.randint(0, train_data.shape[0], (cfg.batch,), generator=gen)
        t = torch.randint(0, schedule.steps, (cfg.batch,), generator=gen)
        return train_data[idx], t, torch.randn(train_data[idx].shape, generator=gen)

    def loss(m, b):
        return denoising_loss(m, schedule, *b)

    inf = influence(res.raw, loss, [batch() for _ in range(INFLUENCE_BATCHES)], method="hessian", probes=4, seed=seed)
    sp = inf.split(mass=EPS_MASS)
    state = res.optimizer.state_dict()

    def adam(params):
        opt = torch.optim.Adam(params, lr=state["param_groups"][0]["lr"])
        opt.load_state_dict(state)
        return opt

    rel = relaxation_times(res.raw, loss, [batch() for _ in range(RELAX_STEPS)], {"strong": sp.strong,
                           "weak": ~sp.strong}, steps=RELAX_STEPS, optimizer=adam, seed=seed)
    left = {k: float(d[-1] / d[0]) for k, d in rel.distance.items()}
    return {"eps": sp.eps, "eps_se": sp.eps_se, "strong_share": sp.n_strong / sp.strong.size,
            "relax_strong": rel.time["strong"], "left_strong": left["strong"], "left_weak": left["weak"]}


def _figure(cfg, tab, runs, k0, arr, power, verdict, sty, sty_verdict) -> Figure:
    fig = MplFigure(figsize=(14, 4.2))
    ax1, ax2, ax3 = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1.5, 1, 1]})
    show = [(cfg.lrs[0], False), (cfg.lrs[-1], False)] + [(lr, True) for lr in (cfg.ema_lrs or cfg.lrs)[:1]]
    rows, ticks, labels = [], [], []
    for lr, ema in show:
        st = runs[(lr, ema, 0)]["states"][:12, k0:]
        ticks.append(len(rows) + st.shape[0] / 2)
        labels.append(f"lr {lr:g}{' EMA' if ema else ''}")
        rows.extend(st)
        rows.append(np.full(st.shape[1], -1))
    img = np.array(rows[:-1], dtype=float)
    img = np.ma.masked_where((img < 0) | (img >= cfg.n), img)  # separators and free stays: blank
    ax1.imshow(img, aspect="auto", interpolation="nearest", cmap="tab20", vmin=0, vmax=max(cfg.n, 20),
               extent=(cfg.burn, cfg.burn + img.shape[1] * cfg.every, img.shape[0], 0))
    ax1.set_yticks(ticks, labels, fontsize=8)
    ax1.set(xlabel="training step", title="Training digit each probe copies (12 probes per condition; blank: none)")
    plain = tab[~tab["ema"]]
    inv = 1 / plain["lr"].to_numpy()
    se = lambda t: t["log_mean_length_se"].to_numpy(dtype=float, na_value=0.0)  # noqa: E731 (NA: too few episodes)
    ax2.errorbar(inv, plain["log_mean_length"], yerr=se(plain), fmt="o", color="C0",
                 label="no EMA")
    xs = np.linspace(inv.min(), inv.max(), 50)
    ax2.plot(xs, arr.intercept + arr.slope * xs, "C0--", lw=1,
             label=f"Arrhenius line, p = {arr.p_value:.2g}")
    ax2.plot(xs, sty.log_prefactor + sty.barrier * xs + np.log(xs), "k:", lw=1,
             label=f"stylized law P e^(V/a)/a fitted, V = {sty.barrier:.2g}")
    if sty.barrier < 0:  # the stylized model needs V >= 0: its best law is then L = P / a
        ax2.plot(xs, sty.bounded_log_prefactor + np.log(xs), "k-", lw=0.8, label="best stylized law with V >= 0")
    em = tab[tab["ema"]]
    ax2.errorbar(1 / em["lr"].to_numpy(), em["log_mean_length"], yerr=se(em), fmt="s", color="C3",
                 label=f"EMA {cfg.ema:g}")
    ax2.set(xlabel="1 / learning rate", ylabel="ln mean episode length (steps)", title="Arrhenius plot")
    ax2.legend(fontsize=8)
    lr = plain["lr"].to_numpy()
    ax3.errorbar(lr, plain["mean_length"], yerr=plain["mean_length"] * se(plain), fmt="o",
                 color="C0")
    ax3.plot(lr, np.exp(power.intercept + power.slope * np.log(lr)), "C0--", lw=1,
             label=f"power law, exponent {power.slope:.2f}")
    ax3.set(xscale="log", yscale="log", xlabel="learning rate", ylabel="mean episode length (steps)",
            title="Episode length against the step")
    ax3.set_xticks(lr, [f"{v:g}" for v in lr], fontsize=8)
    ax3.minorticks_off()
    ax3.set_yticks(plain["mean_length"].to_numpy(), [f"{v:.0f}" for v in plain["mean_length"]], fontsize=8)
    ax3.legend(fontsize=8)
    fig.tight_layout()
    caption = (f"Residual MLP (width {cfg.width}, x0 prediction, Adam) on {cfg.n} MNIST digits ({cfg.dataset}); "
               f"episodes counted over steps {cfg.burn}..{cfg.burn + cfg.window}, checkpoints every {cfg.every} steps, "
               f"{cfg.probes} probes x {cfg.replicates} replicate(s) per condition. Left: core-set raster (colour = "
               "training digit). Middle: ln of the mean episode length against 1/lr (the theory's Arrhenius form) "
               "with EMA runs beside, and the stylized model's exit law fitted to the run (dotted). Right: the same on "
               "log-log axes. Verdict: " + verdict + ". Stylized model: " + sty_verdict["verdict"] + ": "
               + sty_verdict["how"] + ".")
    return Figure("diffusion-episodes", fig, caption)
