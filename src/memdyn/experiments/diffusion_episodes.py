"""Experiment ``diffusion-episodes``: memorization episodes in a real diffusion model under plain
constant-step SGD, against the learning rate and with or without sampling from an EMA of the weights.

Theory. At step a (batch size B fixed) a memorizing state is left over a barrier after a mean time
P exp(V B / a) in t = a k, so the mean episode length in steps is L(a) = P exp(V B / a) / a: with
V >= 0 larger steps give shorter episodes. Sampling from an exponential moving average (EMA) of the
weights low-pass filters the fast variable: an excursion of the weights shorter than the EMA's
horizon moves the average less, so fewer of them take its samples out of a memorizing core, and
episodes of the EMA model are at least as long as those of the weights it averages.

Before any run the claims were fixed as (one-sided where the theory predicts a direction, each
stating the violation it detects with 95 % power, and the summary saying whether the effect is shown
beyond its bound by Z_TOL errors):

* **larger steps, shorter episodes**: ln L(smallest lr) - ln L(largest lr) >= ln(largest lr / smallest
  lr) (L in steps): with V >= 0 the 1/a of L alone shortens episodes that much, so this says that
  ln(a L) does not rise with a (the first form, >= 0, would have held under Adam's negative barrier;
  changed on a referee's reading before any failure, and run on new seeds);
* **EMA lengthens episodes** at each learning rate: ln L(EMA) - ln L(weights) >= 0, on the same
  training trajectories (the EMA members take the same batches: only the sampled model differs);
* per setting, **settled**: f_mem in the counting window's halves agree (two-sided);
* **resolution** (two-sided): each of the two effects above measured from checkpoints every
  ``factors[1]`` steps agrees with every step (each with its own error).

The measurement is that of ``diffusion-temperature`` (:mod:`memdyn.experiments.sgd_runs`,
:mod:`memdyn.protocol`): ``replicates`` runs (own digits, initial weights, probes) pre-trained by SGD,
then each learning rate continued for ``burn_time`` and ``window_time`` in t = lr x steps, every probe
labelled at every step; intervals by the bootstrap over runs with probes within runs, paired across
settings (they share runs). A setting that has not settled or saw fewer than ``min_exits`` exits
is left out of the claims on lengths. The EMA is done right: bias-corrected (an average of the
trained iterates only, nothing of the pre-trained weights), with decay d = 1 - lr / ``ema_time`` (a
horizon of ``ema_time`` in t at every learning rate) and a burn-in of at least 5 / (1 - d) steps.

The stylized model fitted to the run (:func:`memdyn.practice.stylized_fit`): its barrier V and
prefactor P from ln(lr L) = ln P + V / lr over the settled learning rates, and eps from each trained
network's Hessian-diagonal influence (the fewest parameters carrying half the total are the strong
group; a network's ln I has no gap); beside it, how much of a small perturbation of each group is
left after ``relax_time`` (in t) of the same SGD. Its predictions beside the measurements are the
table ``stylized``; whether a law with V >= 0 describes the run is the summary's ``stylized_fit``
verdict (shown in "Theory vs practice").
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure as MplFigure
from pydantic import Field

from ..claims import Z_TOL, claim, detectable
from ..practice import span_text, stylized_fit
from .base import ConfigError, Context, Experiment, ExperimentError, Figure, Outcome
from ..protocol import resolution_claim
from .sgd_runs import SGDRunsConfig, check_runs, continue_runs, f_mem, measure, nullable, pretrain

INFLUENCE_BATCHES = 4  # batches (x 4 Hutchinson probes) for the trained network's influence
EPS_MASS = 0.5  # the strong group: the fewest parameters that carry this share of the total influence


class DiffusionEpisodesConfig(SGDRunsConfig):
    lrs: list[float] = Field([0.005, 0.01, 0.02, 0.05], min_length=3, max_length=8, description=(
        "plain SGD learning rates (>= 3, increasing, each in (0, 1])"))
    batch: int = Field(8, ge=1, le=4096, description="batch size")
    ema_time: float = Field(0.2, gt=0, le=1e4, description=(
        "EMA horizon in lr * steps: decay 1 - lr / ema_time at each learning rate (burn_time > 5 ema_time)"))
    ema_lrs: list[float] | None = Field(None, min_length=1, max_length=8, description=(
        "learning rates (from lrs) also sampled from the EMA; default: all of them"))
    relax_time: float = Field(2.0, gt=0, le=1e4, description=(
        "lr * steps over which the two parameter groups' relaxation after a small perturbation is followed"))


class DiffusionEpisodes(Experiment):
    name = "diffusion-episodes"
    section = "7. Memorization in real diffusion training"
    prediction = ("Under plain SGD, memorization episodes of a real diffusion model get shorter as the learning rate "
                  "grows (L = P exp(V B / lr) / lr steps) and longer when samples come from an EMA of the weights.")
    summary = "MLP denoiser under plain SGD: memorization episode lengths vs learning rate and EMA sampling"
    Config = DiffusionEpisodesConfig
    quick = {"replicates": 5, "pretrain_time": 800.0, "burn_time": 10.0, "window_time": 20.0}
    sample_keys = ("replicates", "probes")
    suite_form = "quick"

    def check(self, cfg):
        lrs = cfg.lrs
        if any(b <= a for a, b in zip(lrs, lrs[1:])) or lrs[0] <= 0 or lrs[-1] > 1:
            raise ConfigError(f"invalid value for diffusion-episodes.lrs={lrs}: increasing, each in (0, 1]")
        bad = [v for v in (cfg.ema_lrs or []) if not any(math.isclose(v, a) for a in lrs)]
        if bad:
            raise ConfigError(f"invalid value for diffusion-episodes.ema_lrs={cfg.ema_lrs}: each must be one of lrs "
                              f"{lrs}")
        if cfg.ema_time >= cfg.burn_time / 5:
            raise ConfigError(f"invalid value for diffusion-episodes.ema_time={cfg.ema_time}: the EMA needs a burn-in "
                              f"of 5 horizons, so ema_time < burn_time / 5 = {cfg.burn_time / 5:g}")
        if cfg.ema_time <= lrs[-1]:
            raise ConfigError(f"invalid value for diffusion-episodes.ema_time={cfg.ema_time}: the decay 1 - lr / "
                              f"ema_time must be > 0 at lr={lrs[-1]:g}")
        check_runs(cfg, self.name, lrs[-1])

    def run(self, cfg, ctx: Context) -> Outcome:
        ema_lrs = [a for a in cfg.lrs if cfg.ema_lrs is None or any(math.isclose(a, v) for v in cfg.ema_lrs)]
        pre = ctx.cell("pretrain", lambda: pretrain(cfg, ctx))
        R = cfg.replicates
        rows, boot, traces = [], {}, {}
        for lr in cfg.lrs:
            sets = [(cfg.batch, 0.0)] + ([(cfg.batch, 1 - lr / cfg.ema_time)] if lr in ema_lrs else [])
            res = ctx.cell(f"lr={lr:g}", lambda lr=lr, sets=sets: continue_runs(
                cfg, ctx, "sgd", lr, 1.0, pre, sets, after=lambda r, m, lr=lr: _two_scales(cfg, lr, r, m)))
            for j, (_, d) in enumerate(sets):
                runs = [res["states"][j * R + r] for r in range(R)]
                mem = [res["memorized"][j * R + r] for r in range(R)]
                row, b = measure(cfg, lr, runs, mem, lr=lr, ema=d > 0, decay=d)
                row["log_length"] = row["log_time"] - math.log(lr)  # ln L, L in steps
                rows.append(row)
                boot[(lr, d > 0)] = b - math.log(lr)  # draws of ln L at every spacing
                traces[(lr, d > 0)] = {"f_mem": f_mem(mem), "states": runs[0]}
            for k in ("eps", "strong_share", "left_strong", "left_weak"):
                rows[-len(sets)][k] = float(np.mean(res[k]))
            rows[-len(sets)]["eps_se"] = float(np.std(res["eps"], ddof=1) / math.sqrt(R))  # over the runs
        tab = nullable(pd.DataFrame(rows))
        claims, summary, sty = _claims(cfg, rows, boot, ema_lrs)
        stylized = None
        if sty is not None:
            fit, use = sty
            stylized = nullable(pd.DataFrame({
                "lr": fit.steps, "mean_length": np.exp(fit.log_length), "log_mean_length_se": fit.log_length_se,
                "stylized_length": np.exp(fit.predicted), "bounded_length": np.exp(fit.bounded), "eps": fit.eps,
                "eps_se": fit.eps_se, "slow_time": fit.slow_time,
                **{k: [r[k] for r in use] for k in ("strong_share", "left_strong", "left_weak")}}))
        tables = {"settings": tab} | ({"stylized": stylized} if stylized is not None else {})
        return Outcome(claims, tables, [_figure(cfg, tab, traces, boot, summary, sty)], summary)


def _claims(cfg, rows, boot, ema_lrs):
    """The claims on the measured rows and the summary; the stylized fit (fit, its rows) or None."""
    out = []
    for r in rows:
        what = f"lr={r['lr']:g}" + (f" EMA (decay {r['decay']:.4g})" if r["ema"] else "")
        out.append(claim(f"settled@lr={r['lr']:g},ema={int(r['ema'])}",
                         f"{what}: f_mem in the window's second half - first half", 0.0, r["halves_diff"],
                         r["halves_se"], detail=(f"window from step {r['window_start']} of the counting window (MSER), "
                                                 f"f_mem {r['f_mem']:.2f}; bootstrap over runs and whole probe series")))
    usable = {(r["lr"], r["ema"]): r for r in rows if r["settled"] and r["exits"] >= cfg.min_exits}
    excluded = [f"lr={r['lr']:g}{' EMA' if r['ema'] else ''} ("
                + ("not settled" if not r["settled"] else f"{r['exits']} exits < {cfg.min_exits}") + ")"
                for r in rows if (r["lr"], r["ema"]) not in usable]
    plain = [a for a in cfg.lrs if (a, False) in usable]
    if len(plain) < 2:
        raise ExperimentError(f"diffusion-episodes: only {len(plain)} learning rate(s) settled with at least min_exits "
                              f"= {cfg.min_exits} exits (left out: {'; '.join(excluded)}); raise window_time, "
                              "replicates or probes")
    f2 = cfg.factors[1]

    def one_sided(cid, text, bound, value, draws, detail):
        """A one-sided finding value >= bound; whether the value is shown above the bound (by Z_TOL se)."""
        se = float(np.nanstd(draws[:, 0], ddof=1))
        out.append(claim(cid, text, bound, value, se, side="at_least", finding=True,
                         detail=(f"{detail}; one-sided: fails when below {bound:.3g} by more than {Z_TOL:g} se, which "
                                 f"a true value {detectable(se):.2g} below it does with 95 % power; paired bootstrap over "
                                 "runs and probes")))
        return se, value - bound > Z_TOL * se

    lo, hi = plain[0], plain[-1]
    d_lr = boot[(lo, False)] - boot[(hi, False)]  # (BOOT, spacings)
    value_lr = usable[(lo, False)]["log_length"] - usable[(hi, False)]["log_length"]
    # L = P exp(V B / a) / a with V >= 0: ln L(lo) - ln L(hi) >= ln(hi / lo) (the 1 / a alone gives that much)
    se_lr, shorter_shown = one_sided(
        "shorter-episodes", f"larger steps, shorter episodes, at least as 1/lr (a barrier V >= 0): ln L(lr={lo:g}) - "
        f"ln L(lr={hi:g}) against ln({hi:g}/{lo:g})", math.log(hi / lo), value_lr, d_lr,
        f"mean episode lengths {math.exp(usable[(lo, False)]['log_length']):.0f} and "
        f"{math.exp(usable[(hi, False)]['log_length']):.0f} steps (batch {cfg.batch}); equivalently ln(lr L) does not "
        "rise with lr")
    effects = {"lr": (d_lr, value_lr)}
    ema_rows = []
    for a in ema_lrs:
        if (a, True) in usable and (a, False) in usable:
            d = boot[(a, True)] - boot[(a, False)]
            v = usable[(a, True)]["log_length"] - usable[(a, False)]["log_length"]
            _, shown = one_sided(f"ema-lengthens@lr={a:g}", f"EMA lengthens episodes at lr={a:g}: ln L(EMA) - ln L(weights)",
                                 0.0, v, d, f"mean lengths {math.exp(usable[(a, True)]['log_length']):.0f} (EMA, horizon {cfg.ema_time:g} in "
                      f"lr * steps = {cfg.ema_time / a:.0f} steps) and {math.exp(usable[(a, False)]['log_length']):.0f} "
                                 "steps, on the same trajectories")
            ema_rows.append((a, d, v, shown))
    if ema_rows:  # the EMA effect averaged over learning rates, for the resolution check
        effects["ema"] = (np.mean([r[1] for r in ema_rows], axis=0), float(np.mean([r[2] for r in ema_rows])))
    for key, (d, v) in effects.items():
        ok = np.isfinite(d).all(axis=1)
        s1, s2 = float(np.std(d[ok, 0], ddof=1)), float(np.std(d[ok, 1], ddof=1))
        v2 = _at_spacing(rows, key, f2, plain, ema_rows)
        name = f"ln L(lr={lo:g}) - ln L(lr={hi:g})" if key == "lr" else "mean over lr of ln L(EMA) - ln L"
        out.append(resolution_claim(f"resolution@effect={key}", name, v, s1, v2, s2, fine_label="every step",
                                    coarse_label=f"checkpoints every {f2} steps"))
    y = np.array([usable[(a, False)]["log_length"] for a in plain])
    se = np.array([usable[(a, False)]["log_time_se"] for a in plain])
    use = [usable[(a, False)] for a in plain]
    fit = stylized_fit(plain, y, se, boot=np.stack([boot[(a, False)][:, 0] for a in plain], axis=1),
                       eps=[r["eps"] for r in use], eps_se=[r["eps_se"] for r in use])
    verdict = fit.verdict()
    verdict["how"] += (f". The stylized model also assumes that inside a well the fast variable relaxes much faster "
                       f"than it leaves: after {cfg.relax_time:g} in lr * steps of the same SGD the network keeps "
                       f"{span_text([r['left_strong'] for r in use], '.0%')} of a small perturbation of its strong "
                       f"parameters and {span_text([r['left_weak'] for r in use], '.0%')} of the weak ones, against "
                       f"episodes of {span_text(np.exp(y) * np.array(plain), '.2g')} in lr * steps")
    ratio = {r[0]: math.exp(r[2]) for r in ema_rows}
    summary = {"shorter_by": float(value_lr), "shorter_by_se": se_lr, "excluded": excluded,
               "shorter_shown": bool(shorter_shown),
               "ema_ratio": {f"{a:g}": r for a, r in ratio.items()},
               "stylized_barrier": fit.barrier, "stylized_barrier_se": fit.barrier_se,
               "stylized_log_prefactor": fit.log_prefactor, "eps": float(np.mean(fit.eps)), "stylized_fit": verdict,
               "verdict": (f"from lr {lo:g} to {hi:g} (batch {cfg.batch}) the mean episode length falls "
                           f"{math.exp(value_lr):.3g}-fold ({math.exp(y[0]):.0f} to {math.exp(y[-1]):.0f} steps); "
                           + (f"sampling from the EMA (horizon {cfg.ema_time:g} in lr * steps) multiplies it by "
                              f"{span_text(list(ratio.values()), '.3g')}" if ratio else "no EMA setting was usable")
                           + (f"; left out: {'; '.join(excluded)}" if excluded else ""))}
    if ema_rows:  # the EMA row of "Theory vs practice" needs a measured EMA effect
        summary["ema_measured"] = True
        summary["ema_shown"] = all(r[3] for r in ema_rows)
    return out, summary, (fit, use)


def _at_spacing(rows, key, f, plain, ema_rows) -> float:
    """The effect (``key``: 'lr' or 'ema') from the mean lengths at checkpoint spacing f."""
    ln = {(r["lr"], r["ema"]): math.log(r[f"length_at_{f}"]) for r in rows if r.get(f"length_at_{f}", 0) > 0}
    if key == "lr":
        return ln[(plain[0], False)] - ln[(plain[-1], False)]
    return float(np.mean([ln[(r[0], True)] - ln[(r[0], False)] for r in ema_rows]))


def _two_scales(cfg, lr: float, res, members) -> dict:
    """Per run, from its trained network (the members sampled from their weights): eps from the
    Hessian-diagonal influence (Hutchinson) of the DDPM loss on INFLUENCE_BATCHES batches, split at
    EPS_MASS of the total influence, and the share of a perturbation (1e-3 N(0, 1) per parameter) of
    each group left after relax_time / lr plain SGD steps on fresh batches."""
    import torch

    from ..diffusion import NoiseSchedule, denoising_loss
    from ..influence import influence, relaxation_times

    schedule = NoiseSchedule()
    out = {k: [] for k in ("eps", "eps_se", "strong_share", "left_strong", "left_weak")}
    steps = max(2, round(cfg.relax_time / lr))
    for m, (b, d, r) in enumerate(members):
        if d > 0:
            continue
        model, items = res.model.member(m), res.monitors[m].train
        gen = torch.Generator().manual_seed(7919 * (r + 1))

        def batch():
            idx = torch.randint(0, items.shape[0], (b,), generator=gen)
            t = torch.randint(0, schedule.steps, (b,), generator=gen)
            return items[idx], t, torch.randn(items[idx].shape, generator=gen)

        def loss(mod, bt):
            return denoising_loss(mod, schedule, *bt)

        inf = influence(model, loss, [batch() for _ in range(INFLUENCE_BATCHES)], method="hessian", probes=4, seed=r)
        sp = inf.split(mass=EPS_MASS)
        rel = relaxation_times(model, loss, [batch() for _ in range(steps)], {"strong": sp.strong, "weak": ~sp.strong},
                               lr=lr, steps=steps, seed=r)
        left = {k: float(v[-1] / v[0]) for k, v in rel.distance.items()}
        for k, v in (("eps", sp.eps), ("eps_se", sp.eps_se), ("strong_share", sp.n_strong / sp.strong.size),
                     ("left_strong", left["strong"]), ("left_weak", left["weak"])):
            out[k].append(float(v))
    return {k: np.array(v) for k, v in out.items()}


def _figure(cfg, tab, traces, boot, summary, sty) -> Figure:
    fig = MplFigure(figsize=(14, 4.2))
    ax1, ax2, ax3 = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1.5, 1, 1]})
    ema_lrs = sorted({lr for lr, e in traces if e})
    show = [(cfg.lrs[0], False), (cfg.lrs[-1], False)] + [(a, True) for a in ema_lrs[-1:]]
    rows, ticks, labels = [], [], []
    for lr, ema in show:
        st = traces[(lr, ema)]["states"][:8]
        k = max(1, st.shape[1] // 400)  # at most 400 columns
        st = st[:, ::k]
        ticks.append(len(rows) + st.shape[0] / 2)
        labels.append(f"lr {lr:g}{' EMA' if ema else ''}")
        rows.extend(st)
        rows.append(np.full(st.shape[1], -1))
    width = min(len(r) for r in rows)
    img = np.array([r[:width] for r in rows[:-1]], dtype=float)
    img = np.ma.masked_where((img < 0) | (img >= cfg.n), img)  # separators and free stays: blank
    ax1.imshow(img, aspect="auto", interpolation="nearest", cmap="tab10", vmin=0, vmax=10, extent=(0, 1, img.shape[0], 0))
    ax1.set_yticks(ticks, labels, fontsize=8)
    ax1.set(xlabel="fraction of the counting window", title="Training digit each probe copies (8 probes, 1 run)")
    for c, ema in (("C0", False), ("C3", True)):
        t = tab[(tab["ema"] == ema) & tab["log_length"].notna()]
        for _, r in t.iterrows():  # open: left out of the claims (not settled, or fewer than min_exits exits)
            use = bool(r["settled"]) and r["exits"] >= cfg.min_exits
            ax2.errorbar(1 / r["lr"], r["log_length"], yerr=r["log_time_se"], fmt="s" if ema else "o", color=c,
                         mfc=c if use else "none")
        ax2.plot([], [], "s" if ema else "o", color=c, label="EMA" if ema else "weights")
    if sty is not None:
        fit = sty[0]
        xs = np.linspace(1 / fit.steps.max(), 1 / fit.steps.min(), 50)
        ax2.plot(xs, fit.log_prefactor + fit.barrier * xs + np.log(xs), "k:", lw=1,
                 label=f"stylized law P e^(V/a)/a, V = {fit.barrier:.2g}")
    ax2.set(xlabel="1 / learning rate", ylabel="ln mean episode length (steps)",
            title="Episode length against the step (open: left out)")
    ax2.legend(fontsize=8)
    for c, ema in (("C0", False), ("C3", True)):
        t = tab[(tab["ema"] == ema) & tab["log_length"].notna()]
        for _, r in t.iterrows():
            ax3.plot(cfg.factors, [r[f"length_at_{f}"] for f in cfg.factors], "-o", color=c, ms=3, alpha=0.7)
        ax3.plot([], [], "-o", color=c, label="EMA" if ema else "weights")
    ax3.set(xscale="log", yscale="log", xlabel="checkpoint spacing (steps)", ylabel="mean episode length (steps)",
            title="Resolution: L against the spacing")
    ax3.set_xticks(cfg.factors, [str(f) for f in cfg.factors])
    ax3.minorticks_off()
    ax3.legend(fontsize=8)
    fig.tight_layout()
    caption = (f"Residual MLP (width {cfg.width}) on {cfg.n} MNIST digits ({cfg.dataset}), plain SGD at batch "
               f"{cfg.batch}, {cfg.replicates} runs x {cfg.probes} probes per setting, pre-trained to lr * steps = "
               f"{cfg.pretrain_time:g}, then {cfg.burn_time:g} + {cfg.window_time:g} in lr * steps per learning rate, "
               f"every step sampled; EMA: bias-corrected, horizon {cfg.ema_time:g} in lr * steps. Left: core-set raster "
               "(colour = training digit); middle: ln L against 1 / lr with the stylized law fitted (dotted); right: L "
               "at checkpoint spacings. Verdict: " + summary["verdict"] + ". Stylized model: "
               + summary["stylized_fit"]["verdict"] + ".")
    return Figure("diffusion-episodes", fig, caption)
