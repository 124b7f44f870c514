"""Experiment ``diffusion-tau-mem``: when does a real diffusion model start to memorize?

Bonnaire et al. (2025) found that the training time tau_mem at which a diffusion model starts to
reproduce its training items grows in proportion to the training-set size n, while the time tau_gen
at which its samples start to look like real data does not depend on n: between the two lies a
window of generalisation that widens with n. In the theory's terms, the memorizing minima are there
from the start but are reached later when the training set is larger.

For each n and seed a residual MLP (x0 prediction, constant learning rate, Adam) is trained on n
real MNIST digits with the memorization monitor attached and stopped once f_mem passes the
threshold and the samples have reached the quality level below:

* tau_mem: the step at which f_mem first reaches ``threshold`` (linear interpolation between the
  two checkpoints around the crossing; checkpoints every ``every_per_item`` x n steps);
* tau_gen: the step at which the samples first look real, measured by how confidently a small
  classifier trained on held-out digits recognises them (:mod:`memdyn.diffusion.quality`; pixel
  distances cannot serve, since a blurry average is close to every digit): the first step at
  which the samples' mean top-class probability reaches (1 - ``quality_margin``) times that of
  the real digits the model trains on.

Claims (slopes from least-squares fits of ln tau against ln n over all runs, one point per run,
the error from the residual scatter with runs - 2 degrees of freedom):

* the slope of ln tau_mem against ln n is at most 1 and positive. Bonnaire et al.'s law is
  tau_mem ~ n; a small model also needs an n-independent number of steps t0 before it can
  memorize at all, so tau_mem = t0 + c n and the slope over a finite grid, c n / (t0 + c n) at each
  n, lies below 1 and rises toward it (quick form, 6 seeds pooled: t0 = 39, c = 17.0, local slopes
  0.82, 0.89, 0.97). A two-sided test against 1 would fail more often the more runs it gets;
  the onset line (:func:`memdyn.stats.replicated_line_fit`, with its lack-of-fit test against the
  runs' scatter at each n) and the local slopes are in the claim's detail and the summary;
* tau_gen grows more slowly than tau_mem: slope(mem) - slope(gen) >= 0 (one-sided).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure as MplFigure
from matplotlib.ticker import NullLocator
from pydantic import Field

from ..claims import claim
from ..stats import line_fit, replicated_line_fit
from .base import ConfigError, Context, Experiment, ExperimentConfig, ExperimentError, Figure, Outcome


class DiffusionTauMemConfig(ExperimentConfig):
    dataset: str = Field("mnist5k-14", pattern="^(mnist5k|mnist5k-14|mnist5k-7|digits8)$",
                         description="image dataset")
    ns: list[int] = Field([16, 32, 64, 128, 256], min_length=4, max_length=8,
                          description="training-set sizes n (at least 4, increasing, each >= 8)")
    seeds: int = Field(4, ge=2, le=20, description="training runs per n (different subsets, weights, batches)")
    width: int = Field(256, ge=16, le=2048, description="MLP width")
    lr: float = Field(1e-3, gt=0, le=0.1, description="constant Adam learning rate")
    batch: int = Field(64, ge=1, le=4096, description="batch size")
    probes: int = Field(32, ge=8, le=1024, description="probes of the monitor")
    sample_steps: int = Field(10, ge=2, le=1000, description="DDIM steps per sample")
    threshold: float = Field(0.5, gt=0, lt=1, description="f_mem that marks tau_mem")
    every_per_item: float = Field(0.25, gt=0, le=10, description="checkpoint interval in steps per training item")
    budget_per_item: float = Field(80.0, gt=1, le=10**4, description="most training steps per training item (+1000)")
    held_out: int = Field(2000, ge=200, le=4000, description="held-out digits the quality classifier trains on")
    quality_margin: float = Field(0.05, gt=0, lt=1, description="tau_gen: the samples' mean classifier confidence "
                                                                "within this fraction below that of the training "
                                                                "digits")


def _crossing(steps: np.ndarray, values: np.ndarray, level: float, rising: bool) -> float:
    """First step where ``values`` crosses ``level`` (linear interpolation); NaN if never."""
    hit = values >= level if rising else values <= level
    if not hit.any():
        return float("nan")
    k = int(np.argmax(hit))
    if k == 0:
        return float(steps[0])
    v0, v1 = values[k - 1], values[k]
    frac = (level - v0) / (v1 - v0) if v1 != v0 else 1.0
    return float(steps[k - 1] + frac * (steps[k] - steps[k - 1]))


class DiffusionTauMem(Experiment):
    name = "diffusion-tau-mem"
    section = "7. Memorization in real diffusion training"
    prediction = ("tau_mem, the training time at which a diffusion model starts to reproduce training items, grows in "
                  "proportion to the training-set size n (after an n-independent onset, so a finite grid's log-log "
                  "slope is at most 1); tau_gen, when samples start to look real, grows more slowly.")
    summary = ("MLP denoiser on n MNIST digits: tau_mem vs n (an onset, then growth like n: log-log slope in (0, 1]), "
               "tau_gen flatter")
    Config = DiffusionTauMemConfig
    quick = {"ns": [8, 16, 32, 64], "seeds": 2, "width": 128, "probes": 16}
    sample_keys = ("seeds",)
    suite_form = "quick"  # the full form trains for minutes; the default suite runs the quick one (under a minute)

    def check(self, cfg):
        if any(n < 8 for n in cfg.ns) or any(b <= a for a, b in zip(cfg.ns, cfg.ns[1:])):
            raise ConfigError(f"invalid value for diffusion-tau-mem.ns={cfg.ns}: increasing, each >= 8")

    def run(self, cfg, ctx: Context) -> Outcome:
        rows = []
        curves = {}
        for n in cfg.ns:
            for s in range(cfg.seeds):
                r = ctx.cell(f"n={n}_seed={s}", lambda n=n, s=s: _train_one(cfg, n, ctx.seed_for("run", n, s) % 2**31))
                tau_mem = _crossing(r["steps"], r["f_mem"], cfg.threshold, True)
                tau_gen = _crossing(r["steps"], r["quality"], (1 - cfg.quality_margin) * r["baseline"], True)
                rows.append({"n": n, "seed": s, "tau_mem": tau_mem, "tau_gen": tau_gen, "steps_run": int(r["steps"][-1])})
                curves[(n, s)] = r
        df = pd.DataFrame(rows)
        missing = df[df["tau_mem"].isna() | df["tau_gen"].isna()]
        if len(missing):
            bad = ", ".join(f"n={r.n} seed={r.seed}" for r in missing.itertuples())
            raise ExperimentError(f"diffusion-tau-mem: f_mem never reached {cfg.threshold} (or samples never reached "
                                  f"the quality level) within budget_per_item * n + 1000 steps for {bad}; raise "
                                  "budget_per_item or lr")
        fits = {}
        x = np.log(df["n"].to_numpy(dtype=float))
        for key in ("tau_mem", "tau_gen"):
            # one point per run: the residual scatter (seeds and any curvature) sets the error, with n - 2 dof
            y = np.log(df[key].to_numpy())
            b, a = np.polyfit(x, y, 1)
            resid = y - (a + b * x)
            s = math.sqrt(float(resid @ resid) / (y.size - 2))
            fits[key] = line_fit(x, y, np.full(y.size, max(s, 1e-6)))
        fm, fg = fits["tau_mem"], fits["tau_gen"]
        # Bonnaire et al.'s tau_mem ~ n with an n-independent onset: tau_mem = t0 + c n, weighted for a constant
        # relative scatter, its lack of fit tested against the runs' scatter at each n; the local log-log slope
        # c n / (t0 + c n) rises toward 1 from below
        onset = replicated_line_fit(df["n"].to_numpy(dtype=float), df["tau_mem"].to_numpy())
        means = df.groupby("n")["tau_mem"].mean().to_numpy()
        local = np.diff(np.log(means)) / np.diff(np.log(np.asarray(cfg.ns, dtype=float)))
        looks = "REJECTED" if onset.flagged else "not rejected"
        form = (f"tau_mem = t0 + c n gives t0 = {onset.intercept:.0f} +- {onset.intercept_se:.0f} steps and c = "
                f"{onset.slope:.1f} +- {onset.slope_se:.1f} steps per item; the line is {looks} by the runs' scatter "
                f"(lack of fit F = {onset.chi2 / onset.dof:.2f} on {onset.dof} dof, p = {onset.p_value:.2g}); local "
                f"slopes between neighbouring n: {', '.join(f'{v:.2f}' for v in local)}")
        base = (f"{cfg.seeds} runs per n, one point each; tau_mem interpolated where f_mem crosses {cfg.threshold}; "
                f"least squares, se from the residual scatter")
        claims = [
            claim("tau-mem-slope-at-most-1",
                  "slope of ln tau_mem vs ln n is at most 1 (Bonnaire et al.: tau_mem ~ n, reached from below when "
                  "memorization also needs an n-independent onset)", 1.0, fm.slope, fm.slope_se, side="at_most",
                  detail=f"{base}; {form}"),
            claim("tau-mem-slope-positive",
                  "slope of ln tau_mem vs ln n is positive (tau_mem grows with n)", 0.0, fm.slope, fm.slope_se,
                  side="at_least", detail=base),
            claim("tau-gen-slower",
                  "tau_gen grows more slowly than tau_mem: slope(mem) - slope(gen)", 0.0, fm.slope - fg.slope,
                  math.hypot(fm.slope_se, fg.slope_se), side="at_least",
                  detail=f"slope of ln tau_gen vs ln n = {fg.slope:.3f} +- {fg.slope_se:.3f}; one-sided"),
        ]
        summary = {"slope_mem": fm.slope, "slope_mem_se": fm.slope_se, "slope_gen": fg.slope,
                   "slope_gen_se": fg.slope_se, "onset": onset.intercept, "onset_se": onset.intercept_se,
                   "steps_per_item": onset.slope, "steps_per_item_se": onset.slope_se,
                   "local_slopes": [float(v) for v in local], "onset_form": bool(not onset.flagged), "verdict": form}
        return Outcome(claims, {"tau": df}, [_figure(cfg, df, fits, curves, onset)], summary)


def _train_one(cfg, n: int, seed: int) -> dict:
    from ..diffusion import NoiseSchedule, ResidualMLP, ddim_sampler, load_dataset, train
    from ..diffusion.models import seeded
    from ..diffusion.quality import fit_classifier
    from ..monitor import MemorizationMonitor

    data = load_dataset(cfg.dataset, n, held_out=cfg.held_out, seed=seed)
    every = max(1, int(round(cfg.every_per_item * n)))
    budget = int(cfg.budget_per_item * n) + 1000
    budget -= budget % every
    schedule = NoiseSchedule()
    model = seeded(lambda: ResidualMLP(data.shape, width=cfg.width), seed)
    mon = MemorizationMonitor(data.train, ddim_sampler(schedule, steps=cfg.sample_steps), probes=cfg.probes,
                              every=every, seed=seed, keep_samples=[0])
    clf = fit_classifier(data.held_out, data.held_out_labels, seed=seed)
    baseline = float(clf.confidence(data.train).mean())
    quality: dict[int, float] = {}

    def reached(step):
        # stop once both times are seen: f_mem at the threshold and samples at the quality level
        if step % every:
            return False
        quality[step] = float(clf.confidence(mon.last_samples).mean())
        good = max(quality.values()) >= (1 - cfg.quality_margin) * baseline
        return good and mon.last >= cfg.threshold

    train(model, data.train, steps=budget, lr=cfg.lr, schedule=schedule, batch_size=cfg.batch, seed=seed,
          monitor=mon, progress=False, until=reached)
    fm = mon.f_mem(n_boot=2)
    quality[0] = float(clf.confidence(mon.samples[0]).mean())  # before the first step, outside `until`
    return {"steps": fm["step"].to_numpy(), "f_mem": fm["f_mem"].to_numpy(),
            "quality": np.array([quality[int(s)] for s in fm["step"]]), "baseline": baseline}


def _figure(cfg, df, fits, curves, onset) -> Figure:
    fig = MplFigure(figsize=(13, 4))
    ax1, ax2, ax3 = fig.subplots(1, 3)
    for j, n in enumerate(cfg.ns):
        for s in range(cfg.seeds):
            r = curves[(n, s)]
            ax1.plot(r["steps"], r["f_mem"], color=f"C{j}", lw=1, alpha=0.8, label=f"n = {n}" if s == 0 else None)
            ax3.plot(r["steps"], r["quality"] / r["baseline"], color=f"C{j}", lw=1, alpha=0.8)
    ax1.axhline(cfg.threshold, color="k", ls=":", lw=1)
    ax1.set(xscale="log", xlabel="training step", ylabel="f_mem", title="Memorized share of probes")
    ax1.legend(fontsize=8)
    ns = np.array(cfg.ns, dtype=float)
    for key, c, lab in (("tau_mem", "C3", "tau_mem"), ("tau_gen", "C0", "tau_gen")):
        ax2.plot(df["n"], df[key], "o", color=c, alpha=0.6, ms=4)
        f = fits[key]
        ax2.plot(ns, np.exp(f(np.log(ns))), "-", color=c, label=f"{lab}: slope {f.slope:.2f} +- {f.slope_se:.2f}")
    fm = fits["tau_mem"]
    ax2.plot(ns, np.exp(fm.intercept + fm.slope * np.log(ns[0])) * ns / ns[0], "k--", lw=1, label="slope 1")
    fine = np.geomspace(ns[0], ns[-1], 60)
    ax2.plot(fine, onset(fine), "k:", lw=1, label=f"onset + linear: {onset.intercept:.0f} + {onset.slope:.1f} n")
    ax2.set(xscale="log", yscale="log", xlabel="training-set size n", ylabel="training steps",
            title="tau_mem and tau_gen against n")
    ax2.set_xticks(ns, [f"{v:g}" for v in ns])
    ax2.xaxis.set_minor_locator(NullLocator())
    ax2.legend(fontsize=8)
    ax3.axhline(1 - cfg.quality_margin, color="k", ls=":", lw=1)
    ax3.set(xscale="log", xlabel="training step", ylabel="classifier confidence / training digits'",
            title="Sample quality (tau_gen at the dotted line)")
    caption = (f"Residual MLP (width {cfg.width}, x0 prediction, Adam at lr {cfg.lr:g}) on n real MNIST digits "
               f"({cfg.dataset}), {cfg.seeds} runs per n, stopped when f_mem reaches {cfg.threshold} and the samples "
               "have reached the quality level. Left: f_mem over "
               "training. Middle: tau_mem and tau_gen with their fitted power laws beside slope 1 and the line "
               "t0 + c n (an n-independent onset plus Bonnaire et al.'s growth in proportion to n). Right: how "
               "confidently a classifier trained on held-out digits recognises the samples, relative to the training "
               "digits.")
    return Figure("diffusion-tau-mem", fig, caption)
