"""Experiment ``diffusion-temperature``: is the learning rate over the batch size a temperature for
memorization in a real diffusion model trained by plain constant-step SGD?

Theory. Constant-step SGD with step a and batch size B follows, for small a, the SDE
d theta = -grad L dt + sqrt(a / B) Sigma^(1/2) dW in the time t = a k (k the step count, Sigma the
per-example gradient covariance): the temperature is T = a / B. Exits from a memorizing state over
a barrier V take a time P exp(V / T) in t, i.e. a mean episode length L (in steps) with

    ln(a L) = ln P + V B / a.

Before any run the claims were fixed as:

* **temperature collapse** (two-sided): ln(a L) depends on (a, B) only through B / a, so two
  settings with equal B / a give equal ln(a L) (their difference is 0);
* **Arrhenius form** (with ``form_test``; the quick form's window gives its coldest settings too few
  exits to decide it): the Eyring-Kramers law is asymptotic, T -> 0, and its prefactor has a
  first-order correction in T (P(T) = P0 (1 + k T + ...)), so ln(a L) = ln P0 + V x + c / x + O(1/x^2)
  with x = B / a. Fitted by generalised least squares with the bootstrap covariance of the settings
  (they share runs); its chi^2 against its distribution on n - 3 dof (one-sided: only a large chi^2
  rejects the form; tolerance Z_TOL sqrt(2 dof)); the claim states the curvature it detects with
  95 % power, and the plain line's chi^2 and a power law ln(a L) = c + b ln(B / a) are reported
  beside it. (The first form tested the plain line; it failed on one of three seeds, see the docs.);
* **direction** (one-sided): colder is longer, the slope c1 = V of the line is >= 0; the claim states
  its minimum detectable effect (the V it would show to be > 0 at 95 % power).

**Predicted, not fitted** (SGD only; :mod:`memdyn.kinetics`): at one setting, fixed by rule before
any run (the one whose ln(B / a) is nearest the middle of the grid's range; the larger a on a tie),
a one-dimensional kinetic model (free energy F and diffusion D on 40 bins) is fitted to the probes'
coordinate r = ln(d1/d2) over that setting's settled window, at the temperature T = a / B with time
in a x steps, its bootstrap over whole runs. Its mean first passage from r = ln(1/3) (a probe enters
a memorizing core) to ln(0.6) (the free core), at each setting's own temperature (U = T (F - ln D)
kept, D proportional to T), predicts ln(a L) there; the claims (two-sided, findings):

* **kinetic prediction** per usable setting: predicted ln(a L) against the measured one, the error
  the model's (bootstrap over runs and the lag's systematic term) and the measurement's in quadrature
  (the fitted setting's own claim is in-sample; every other is a prediction at a temperature the
  model never saw);
* **two barriers**: the barrier of U(r) from the well's bottom to ln(0.6) against the Arrhenius
  slope V of the measured lengths: two estimates of V from different data (the coordinate's motion
  at one temperature; the lengths at all of them).

If the model's implied time scales do not level off (the coordinate is not Markovian at the lags
tried), its predictions are reported in the table but not claimed, and the summary says so: the
kinetic model itself says they are unreliable.

The measurement follows :mod:`memdyn.protocol`. Each of ``replicates`` independent training runs
(its own digits, initial weights, probes) is pre-trained by SGD (``pretrain_lr``, ``pretrain_batch``)
for ``pretrain_time`` in t = a k, so that memorization has set in; from that state every setting
(a, B) continues by plain SGD (fresh batches per setting, no momentum, no weight decay) for
``burn_time`` and then ``window_time`` in t, with every probe labelled at every step of the window.
Per setting: the mean memorizing episode length L at checkpoint spacings ``factors`` (1, 2, 4 steps
by default; L at spacing 1 is used); f_mem's counting window from the MSER rule and its halves
compared (a claim per setting); a setting that has not settled, or whose window saw fewer than
``min_exits`` = 20 exits (ln L then known to worse than about 0.22), is left out of the collapse and form
claims and listed in the summary; errors by a bootstrap over the runs with probes resampled within runs, paired across
settings (the runs are shared). The time resolution is checked on the result: the slope V from
checkpoints every ``factors[1]`` steps against every step, two-sided, each with its own error (a
paired difference would detect the few steps by which a coarser spacing lengthens every episode,
however small against what the claims can resolve).

The same grid is run with Adam, every learning rate (and the time) multiplied by ``adam_scale``, so
that the step counts match: the practical comparison (Adam's update is divided by the gradient's
RMS, so the theory does not predict that a / B is its temperature; the data say whether it acts as one).

All settings of one learning rate train together as one vectorised ensemble
(:func:`memdyn.diffusion.ensemble.train_ensemble`); each member is an ordinary residual MLP
trained alone.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
from matplotlib.figure import Figure as MplFigure
from pydantic import Field

from ..claims import Z_TOL, claim, detectable
from ..kinetics import ReactionCoordinateModel
from ..protocol import MIN_RUNS, mean_episode_length, resolution_claim
from ..stats import line_fit
from .base import ConfigError, Context, Experiment, ExperimentError, Figure, Outcome
from .sgd_runs import SGDRunsConfig, check_runs, continue_runs, f_mem, log_time, measure, nullable, pretrain

OPTIMIZERS = ("sgd", "adam")
KINETIC_BINS = 40  # bins of ln(d1/d2) for the kinetic model
KINETIC_BOOT = 40  # its bootstrap replicates (over whole runs)
ENTER, FREE = math.log(1 / 3), math.log(0.6)  # a probe enters a memorizing core below ENTER, the free core above FREE


class DiffusionTemperatureConfig(SGDRunsConfig):
    lrs: list[float] = Field([0.005, 0.01, 0.02, 0.05], min_length=4, max_length=8, description=(
        "SGD learning rates (>= 4, increasing, spanning >= 10-fold)"))
    batches: list[int] = Field([4, 8, 16], min_length=3, max_length=6, description="batch sizes (>= 3, increasing)")
    form_test: bool = Field(True, description=(
        "test the Arrhenius form (chi2 of the law with its first-order temperature correction); the quick form's "
        "window gives its coldest settings too few exits for it"))
    adam: bool = Field(True, description="also run the grid with Adam (learning rates times adam_scale)")
    adam_scale: float = Field(0.02, gt=0, le=1, description="Adam's learning rates and times relative to SGD's")


def settings(cfg) -> list[tuple[float, int]]:
    """The (lr, B) grid, lr-major."""
    return [(lr, b) for lr in cfg.lrs for b in cfg.batches]


def kinetic_setting(cfg) -> tuple[float, int]:
    """The setting the kinetic model is fitted at: ln(B / lr) nearest the middle of the grid's range,
    the larger lr on a tie (a rule fixed before any run)."""
    x = {(lr, b): math.log(b / lr) for lr, b in settings(cfg)}
    mid = (min(x.values()) + max(x.values())) / 2
    return min(x, key=lambda k: (round(abs(x[k] - mid), 9), -k[0]))


class DiffusionTemperature(Experiment):
    name = "diffusion-temperature"
    section = "7. Memorization in real diffusion training"
    prediction = ("Under plain constant-step SGD the temperature is lr / B: episode lengths depend on (lr, B) only "
                  "through B / lr (collapse) and ln(lr L) is a line in B / lr with a slope V >= 0 (Arrhenius).")
    summary = "MLP denoiser under plain SGD: memorization episodes against lr / B (temperature collapse, Arrhenius)"
    Config = DiffusionTemperatureConfig
    quick = {"replicates": MIN_RUNS, "pretrain_time": 800.0, "burn_time": 10.0, "window_time": 20.0,
             "form_test": False, "adam": False}
    sample_keys = ("replicates", "probes")
    suite_form = "quick"

    def check(self, cfg):
        lrs, bs = cfg.lrs, cfg.batches
        if any(b <= a for a, b in zip(lrs, lrs[1:])) or lrs[-1] > 1 or lrs[0] <= 0:
            raise ConfigError(f"invalid value for diffusion-temperature.lrs={lrs}: increasing, each in (0, 1]")
        if lrs[-1] / lrs[0] < 10:
            raise ConfigError(f"invalid value for diffusion-temperature.lrs={lrs}: must span at least a 10-fold range")
        if any(b <= a for a, b in zip(bs, bs[1:])) or bs[0] < 1:
            raise ConfigError(f"invalid value for diffusion-temperature.batches={bs}: increasing integers >= 1")
        x = sorted(b / lr for lr, b in settings(cfg))
        pairs = sum(math.isclose(u, v, rel_tol=1e-9) for u, v in zip(x, x[1:]))
        if x[-1] / x[0] < 10 or pairs < 2:
            raise ConfigError(f"invalid values for diffusion-temperature.lrs={lrs} and batches={bs}: B / lr must span at "
                              f"least 10-fold (spans {x[-1] / x[0]:.3g}) with at least two pairs of settings at equal "
                              f"B / lr (has {pairs})")
        check_runs(cfg, self.name, lrs[-1])

    def run(self, cfg, ctx: Context) -> Outcome:
        opts = OPTIMIZERS if cfg.adam else OPTIMIZERS[:1]
        rows, claims, summary, traces = [], [], {}, {}
        lr0, b0 = kinetic_setting(cfg)
        coordinate = None
        for opt in opts:
            scale = 1.0 if opt == "sgd" else cfg.adam_scale
            pre = ctx.cell(f"pretrain_opt={opt}", lambda opt=opt, scale=scale: pretrain(cfg, ctx, opt, scale))
            for lr in cfg.lrs:
                keep = cfg.batches.index(b0) if opt == "sgd" and lr == lr0 else None
                res = ctx.cell(f"opt={opt}_lr={lr:g}", lambda opt=opt, lr=lr, scale=scale, pre=pre, keep=keep:
                               continue_runs(cfg, ctx, opt, lr * scale, scale, pre, [(b, 0.0) for b in cfg.batches],
                                             coordinate=keep))
                if keep is not None:
                    coordinate = res["log_ratio"]
                for j, b in enumerate(cfg.batches):
                    members = [j * cfg.replicates + r for r in range(cfg.replicates)]
                    runs = [res["states"][m] for m in members]
                    mem = [res["memorized"][m] for m in members]
                    row, boot = measure(cfg, lr * scale, runs, mem, optimizer=opt, lr=lr * scale, batch=b,
                                        x=b / (lr * scale))
                    rows.append(row)
                    traces[(opt, lr, b)] = {"f_mem": f_mem(mem), "boot": boot, "runs": runs,
                                            "per_run": [log_time(lr * scale, mean_episode_length([r], 1, free=cfg.n))
                                                        for r in runs]}
            c, s = _claims(cfg, opt, [r for r in rows if r["optimizer"] == opt], traces)
            claims += c
            summary[opt] = s
        sgd_rows = [r for r in rows if r["optimizer"] == "sgd"]
        kc, summary["kinetic"], kin_tab, model = _kinetic(cfg, ctx, sgd_rows, coordinate, (lr0, b0), summary["sgd"])
        if summary["kinetic"]["trusted"]:  # its claims are made: Theory vs practice shows them
            summary["kinetic_trusted"] = True
        if any(c.id.startswith("kinetic@") for c in kc):
            summary["kinetic_predicted"] = True
        claims += kc
        tab = nullable(pd.DataFrame(rows))
        summary["verdict"] = " ".join(summary[o]["verdict"] + "." for o in (*opts, "kinetic"))
        if cfg.form_test:
            summary["form_test"] = True
        for o in opts:  # the theory-vs-practice form: a barrier shown > 0, not only not < 0
            summary[f"{o}_barrier"] = bool(summary[o].get("barrier_shown", False))
        fits = pd.DataFrame([{"optimizer": o, **{k: v for k, v in summary[o].items() if k not in ("verdict", "excluded")},
                              "excluded": ", ".join(summary[o]["excluded"])} for o in opts])
        return Outcome(claims, {"settings": tab, "fits": nullable(fits), "kinetic": nullable(kin_tab)},
                       [_figure(cfg, tab, traces, summary), _kinetic_figure(cfg, model, kin_tab, summary)], summary)


def _kinetic(cfg, ctx: Context, rows: list[dict], coordinate: np.ndarray, at: tuple[float, int], sgd: dict):
    """The kinetic model fitted at setting ``at`` from its runs' ln(d1/d2) (runs x probes x steps) over
    the settled window, its predictions at every usable setting and its barrier: (claims, summary,
    table, model)."""
    lr0, b0 = at
    row0 = next(r for r in rows if math.isclose(r["lr"], lr0) and r["batch"] == b0)
    R, P, _ = coordinate.shape
    r = coordinate[:, :, int(row0["window_start"]):].reshape(R * P, -1).astype(np.float64)
    lo = float(np.quantile(r, 0.001))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # an unconverged lag choice is reported below instead
        model = ReactionCoordinateModel.fit(r, lr0 / b0, bins=KINETIC_BINS, range=(lo, 0.0), dt=lr0,
                                            n_boot=KINETIC_BOOT, groups=np.repeat(np.arange(R), P),
                                            seed=ctx.seed_for("kinetic") % 2**31)
    # the model can time an episode only if its bins reach into a memorizing core and out to the free core
    covers = model.edges[0] < ENTER and model.edges[-1] > FREE
    trusted = covers and model.converged
    # the well: the most visited bin inside a memorizing core (U's minimum can fall in a sparse tail bin)
    core = model.centers < ENTER
    well = float(model.centers[core][np.argmin(model.F[core])]) if core.any() else float(model.centers[0])
    U, U_se = model.barrier(well, FREE) if covers else (math.nan, math.nan)
    usable = [q for q in rows if q["settled"] and q["exits"] >= cfg.min_exits]
    tab, claims = [], []
    for q in rows:
        pred, pred_se = (model.at_temperature(q["lr"] / q["batch"]).mean_first_passage(ENTER, FREE, return_se=True,
                                                                                      log=True)
                         if covers else (math.nan, math.nan))
        t = math.exp(pred)
        use = q in usable
        z = (pred - q["log_time"]) / math.hypot(pred_se, q["log_time_se"]) if use and math.isfinite(pred_se) else math.nan
        inside = math.isclose(q["lr"], lr0) and q["batch"] == b0
        tab.append({"lr": q["lr"], "batch": q["batch"], "x": q["x"], "predicted_log_time": pred,
                    "predicted_log_time_se": pred_se, "log_time": q["log_time"] if use else math.nan,
                    "log_time_se": q["log_time_se"] if use else math.nan, "z": z, "fitted_here": inside,
                    "usable": use})
        if use and trusted and math.isfinite(pred_se):  # an unbounded error would make a claim that cannot fail
            claims.append(claim(
                f"kinetic@opt=sgd,lr={q['lr']:g},B={q['batch']}",
                f"SGD lr={q['lr']:g}, B={q['batch']}: ln(lr L) predicted by the kinetic model fitted at lr={lr0:g}, "
                f"B={b0}" + (" (in sample)" if inside else ""), pred, q["log_time"], q["log_time_se"],
                predicted_se=pred_se, finding=True,
                detail=(f"mean first passage of ln(d1/d2) from ln(1/3) to ln(0.6) at T = lr/B = {q['lr'] / q['batch']:.3g} "
                        f"({t / q['lr']:.3g} steps) against the measured mean episode length "
                        f"{math.exp(q['log_time']) / q['lr']:.3g} steps; model lag {model.lag} steps, bootstrap over "
                        f"{R} runs; two-sided")))
    summary = {"lr": lr0, "batch": b0, "lag": model.lag, "converged": model.converged, "diagnosis": model.diagnosis,
               "barrier": U, "barrier_se": U_se, "arrhenius_barrier": sgd["slope"],
               "arrhenius_barrier_se": sgd["slope_se"]}
    if trusted:
        claims.append(claim(
            "kinetic-barrier@opt=sgd", f"SGD: the barrier of the kinetic model's U(r) (fitted at lr={lr0:g}, B={b0}) "
            "against the Arrhenius slope V of the measured episode lengths", sgd["slope"], U, U_se,
            predicted_se=sgd["slope_se"], finding=True,
            detail=(f"U = T (F - ln D) from the most visited bin of the cores (r = {well:.2f}) to ln(0.6); V from ln(lr L) against B/lr over "
                    f"{sgd['usable']} settings; two estimates from different data; two-sided")))
        summary["verdict"] = (f"kinetic model fitted at lr={lr0:g}, B={b0} (lag {model.lag} steps): barrier of U "
                              f"{U:.3g} +- {U_se:.2g} against the Arrhenius slope {sgd['slope']:.3g} +- "
                              f"{sgd['slope_se']:.2g}")
    elif not covers:
        summary["verdict"] = (f"kinetic model fitted at lr={lr0:g}, B={b0}: its probes' ln(d1/d2) spans "
                              f"[{model.edges[0]:.2f}, {model.edges[-1]:.2f}], not from below ln(1/3) = {ENTER:.2f} to "
                              f"above ln(0.6) = {FREE:.2f}: it saw no episode to time; nothing predicted")
    else:
        summary["verdict"] = (f"kinetic model fitted at lr={lr0:g}, B={b0}: {model.diagnosis}; its predictions are in "
                              "the table, not claimed")
    summary["trusted"] = trusted
    return claims, summary, pd.DataFrame(tab), model


def _kinetic_figure(cfg, model: ReactionCoordinateModel, tab: pd.DataFrame, summary) -> Figure:
    k = summary["kinetic"]
    fig = MplFigure(figsize=(13, 4))
    ax1, ax2, ax3 = fig.subplots(1, 3)
    its = model.implied
    ax1.plot(its.lags, its.timescales[:, 0] / model.dt, "o-")
    ax1.axvline(model.lag, color="grey", ls=":", label=f"lag used ({model.lag} steps)")
    ax1.set(xscale="log", xlabel="lag (steps)", ylabel="slowest implied time scale (steps)",
            title="Is ln(d1/d2) Markovian? " + ("yes: levels off" if model.converged else "no: does not level off"))
    ax1.legend(fontsize=8)
    r = model.centers
    U, band = model.quasi_potential(return_se=True)
    ax2.fill_between(r, U - 2 * band, U + 2 * band, alpha=0.3, label="±2 bootstrap se (runs)")
    ax2.plot(r, U, "-", label="U = T (F - ln D)")
    for v, name in ((ENTER, "ln(1/3): enter"), (FREE, "ln(0.6): free")):
        ax2.axvline(v, color="grey", ls=":", lw=1)
        ax2.text(v, 0.03, name, fontsize=7, rotation=90, ha="right", va="bottom", transform=ax2.get_xaxis_transform())
    ax2.set(xlabel="r = ln(d1/d2)", ylabel="U (units of lr / B)",
            title=f"quasi-potential, fitted at lr={k['lr']:g}, B={k['batch']}")
    ax2.legend(fontsize=8)
    tab = tab.astype({c: "float64" for c in ("x", "predicted_log_time", "predicted_log_time_se", "log_time",
                                             "log_time_se")})  # NA (nothing measured or predicted) as NaN
    use = tab[tab["usable"]]
    ax3.errorbar(use["x"], use["log_time"], use["log_time_se"], fmt="o", color="C0", label="measured (SGD)")
    ax3.errorbar(tab["x"] * 1.03, tab["predicted_log_time"], tab["predicted_log_time_se"], fmt="x", color="C2",
                 label="kinetic model (prediction)")
    ax3.axvline(k["batch"] / k["lr"], color="grey", ls=":", label="fitted here")
    ax3.set(xscale="log", xlabel="B / lr", ylabel="ln(lr L)", title="episode time: predicted beside measured")
    ax3.legend(fontsize=8)
    fig.tight_layout()
    caption = (f"The kinetic model (memdyn.kinetics) of the probes' ln(d1/d2) at lr={k['lr']:g}, B={k['batch']} "
               f"({cfg.replicates} runs x {cfg.probes} probes, the settled window; errors by a bootstrap over runs and "
               "the lag's systematic term). Left: the lag choice; middle: the fitted quasi-potential; right: its "
               "predicted ln(lr L) at every setting beside the measured one (out of sample except where fitted). "
               "Verdict: " + k["verdict"] + ".")
    return Figure("diffusion-temperature-kinetic", fig, caption)


def _ident(opt, lr, b):
    return f"opt={opt},lr={lr:g},B={b}"


def _claims(cfg, opt: str, rows: list[dict], traces) -> tuple[list, dict]:
    label = "SGD" if opt == "sgd" else "Adam (practical comparison)"
    scale = 1.0 if opt == "sgd" else cfg.adam_scale
    out = []
    for r in rows:
        out.append(claim(f"settled@{_ident(opt, r['lr'] / scale, r['batch'])}",
                         f"{label} lr={r['lr']:g}, B={r['batch']}: f_mem in the window's second half - first half",
                         0.0, r["halves_diff"], r["halves_se"],
                         detail=(f"window from step {r['window_start']} of the counting window (MSER), f_mem "
                                 f"{r['f_mem']:.2f}; bootstrap over runs and whole probe series")))
    usable = [r for r in rows if r["settled"] and r["exits"] >= cfg.min_exits]
    key = {(r["lr"], r["batch"]): i for i, r in enumerate(usable)}
    # paired draws (BOOT, settings, spacings) of ln(lr L); the claims use the finest spacing
    draws = np.stack([traces[(opt, r["lr"] / scale, r["batch"])]["boot"] for r in usable], axis=1) if usable else None
    boot = draws[:, :, 0] if usable else None
    # temperature collapse: every usable setting against the usable setting of lowest lr at the same B / lr
    groups: dict[float, list[dict]] = {}
    for r in usable:
        groups.setdefault(round(r["x"], 6), []).append(r)
    for x, g in sorted(groups.items()):
        g = sorted(g, key=lambda r: r["lr"])
        for r in g[1:]:
            i, j = key[(r["lr"], r["batch"])], key[(g[0]["lr"], g[0]["batch"])]
            d = boot[:, i] - boot[:, j]
            out.append(claim(f"collapse@opt={opt},x={x:g},lr={r['lr'] / scale:g}",
                             f"{label} temperature collapse at B/lr = {x:g}: ln(lr L) at lr={r['lr']:g}, B={r['batch']} - "
                             f"at lr={g[0]['lr']:g}, B={g[0]['batch']}", 0.0, r["log_time"] - g[0]["log_time"],
                             float(np.nanstd(d, ddof=1)), detail="two-sided; paired bootstrap over the shared runs",
                             finding=True))
    s = {"settings": len(rows), "usable": len(usable),
         "excluded": [f"{_ident(opt, r['lr'] / scale, r['batch'])} ("
                      + ("not settled" if not r["settled"] else f"{r['exits']} exits < {cfg.min_exits}") + ")"
                      for r in rows if r not in usable]}
    xs = np.array(sorted({r["x"] for r in usable}))
    if xs.size < 4:
        raise ExperimentError(f"diffusion-temperature: {label} has only {xs.size} distinct B/lr among the settings that "
                              f"settled and saw at least min_exits = {cfg.min_exits} exits (left out: "
                              f"{'; '.join(s['excluded'])}); raise window_time, replicates or probes")
    x = np.array([r["x"] for r in usable])
    y = np.array([r["log_time"] for r in usable])
    se = np.array([r["log_time_se"] for r in usable])
    ok = np.all(np.isfinite(draws), axis=(1, 2))
    power = line_fit(np.log(x), y, se)

    def slope_of(v):  # the weighted line's slope (weights 1 / se^2, as line_fit)
        return np.polyfit(x, v, 1, w=1 / se)[0]

    slope = slope_of(y)
    slope_se = float(np.std([slope_of(v) for v in boot[ok]], ddof=1))
    # the result against the time resolution: the slope from checkpoints every factors[1] steps, and its own error
    f2 = cfg.factors[1]
    y2 = np.array([math.log(r["lr"] * r[f"length_at_{f2}"]) for r in usable])
    slope2, slope2_se = slope_of(y2), float(np.std([slope_of(v) for v in draws[ok, :, 1]], ddof=1))
    paired_se = float(np.std([slope_of(v2) - slope_of(v1) for v1, v2 in zip(draws[ok, :, 0], draws[ok, :, 1])],
                             ddof=1))
    out.append(resolution_claim(
        f"resolution@opt={opt}", f"{label}: slope V of ln(lr L) against B/lr", slope, slope_se, slope2, slope2_se,
        fine_label="every step", coarse_label=f"checkpoints every {f2} steps",
        extra=(f"the paired difference's own error is {paired_se:.2g} (shift / paired error = "
               f"{(slope2 - slope) / paired_se:.2f}); per setting the mean length at spacing {f2} exceeds that at "
               f"spacing 1 by {_spacing_gap(usable, f2)} (short exits missed), see the table")))
    line = _form_test(x, y, boot[ok], kramers=False)
    chi = _form_test(x, y, boot[ok], kramers=True)
    if cfg.form_test:
        out.append(claim(f"arrhenius-form@opt={opt}",
                         f"{label}: chi2 of ln(lr L) = ln P + V B/lr + c lr/B (Arrhenius with the first-order temperature "
                         f"correction of its prefactor; chi2 ~ its {chi['dof']} dof)",
                         float(chi["dof"]), chi["chi2"], predicted_se=math.sqrt(2 * chi["dof"]), side="at_most", finding=True,
                         detail=(f"generalised least squares with the bootstrap covariance of the {len(usable)} settings "
                                 f"(shared runs); p = {chi['p']:.2g}; V = {chi['V']:.3g}, c = {chi['c']:.3g}; the test "
                                 f"detects with 95 % power a curvature of {chi['mde']:.2g} in ln(lr L) across B/lr "
                                 f"{x.min():g}..{x.max():g} (a quadratic term c2 (x_max - x_min)^2); the line alone has "
                                 f"chi2 = {line['chi2']:.3g} on {line['dof']} dof (p = {line['p']:.2g}); a power law "
                                 f"ln(lr L) = c + b ln(B/lr) has b = {power.slope:.3g}, p = {power.p_value:.2g} (diagonal "
                                 "errors)")))
    mde = detectable(slope_se)
    out.append(claim(f"direction@opt={opt}", f"{label}: slope V of ln(lr L) against B/lr (colder is longer: V >= 0)",
                     0.0, slope, slope_se, side="at_least", finding=True,
                     detail=(f"one-sided; a barrier V >= {mde:.2g} would be shown > 0 with 95 % power; V / se = "
                             f"{slope / slope_se:.2f}; paired bootstrap over runs and probes")))
    span = x.max() - x.min()
    s.update({"slope": float(slope), "slope_se": slope_se, "slope_mde": float(mde), "slope_coarse": float(slope2),
              "slope_coarse_se": slope2_se, "line_chi2": line["chi2"], "line_p": line["p"], "form_chi2": chi["chi2"],
              "form_dof": chi["dof"], "form_p": chi["p"], "form_barrier": chi["V"], "form_correction": chi["c"],
              "curvature_mde": chi["mde"], "power_law_exponent": power.slope, "power_law_p": power.p_value})
    significant = slope > Z_TOL * slope_se
    s["barrier_shown"] = bool(significant)
    s["verdict"] = (f"{label}: over B/lr {x.min():g}..{x.max():g} ({len(usable)} settings) ln(lr L) has slope V = "
                    f"{slope:.3g} +- {slope_se:.2g} ({'positive' if significant else 'not shown to differ from 0'}: the "
                    f"episode time lr L changes {math.exp(slope * span):.3g}-fold across the range; a V of {mde:.2g} "
                    f"would have been shown > 0); the line has chi2 = {line['chi2']:.3g} on {line['dof']} dof (p = "
                    f"{line['p']:.2g}), the line with the first-order temperature correction {chi['chi2']:.3g} on "
                    f"{chi['dof']} dof (p = {chi['p']:.2g})")
    return out, s


def _form_test(x, y, boot, *, kramers: bool) -> dict:
    """The Arrhenius line y = ln P + V x (x = B / lr), with ``kramers`` plus the first-order correction
    of the Eyring-Kramers prefactor in the temperature T = 1 / x (P(T) = P0 (1 + k T + O(T^2)), so
    ln P gains c / x), by generalised least squares with the covariance C of y from its paired
    bootstrap draws (the settings share runs): chi2 = r' C^-1 r on n - p dof, its p, the fitted V and c,
    and the curvature it detects with 95 % power: the c2 (x_max - x_min)^2 of a quadratic term whose
    non-centrality lambda = c2^2 q (q = |the quadratic's residual after the fit|^2 in the C^-1 metric)
    makes P(chi2'(dof, lambda) > dof + Z_TOL sqrt(2 dof)) = 0.95."""
    from scipy import optimize
    from scipy import stats as st

    W = np.linalg.inv(np.cov(boot, rowvar=False))
    X = np.stack([np.ones_like(x), x] + ([1 / x] if kramers else []), axis=1)

    def fit(v):
        beta = np.linalg.solve(X.T @ W @ X, X.T @ W @ v)
        return beta, v - X @ beta

    beta, r = fit(y)
    chi2 = float(r @ W @ r)
    dof = x.size - X.shape[1]
    u = fit(((x - x.min()) / (x.max() - x.min())) ** 2)[1]  # a unit curvature across the range, less the fit
    q = float(u @ W @ u)
    cut = dof + Z_TOL * math.sqrt(2 * dof)
    lam = optimize.brentq(lambda v: st.ncx2.sf(cut, dof, v) - 0.95, 1e-6, 1e6)
    return {"chi2": chi2, "dof": dof, "p": float(st.chi2.sf(chi2, dof)), "mde": math.sqrt(lam / q),
            "V": float(beta[1]), "c": float(beta[2]) if kramers else 0.0}


def _spacing_gap(rows, f) -> str:
    d = [r[f"length_at_{f}"] - r["length_at_1"] for r in rows]
    return f"{min(d):.1f} to {max(d):.1f} steps"


def _figure(cfg, tab, traces, summary) -> Figure:
    fig = MplFigure(figsize=(14, 4.2))
    ax1, ax2, ax3 = fig.subplots(1, 3)
    marks = dict(zip(cfg.batches, "osD^v<"))
    for c, opt in zip(("C0", "C3"), [o for o in OPTIMIZERS if (tab["optimizer"] == o).any()]):
        t = tab[tab["optimizer"] == opt]
        scale = 1.0 if opt == "sgd" else cfg.adam_scale
        for _, r in t[t["log_time"].notna()].iterrows():
            per = traces[(opt, r["lr"] / scale, r["batch"])]["per_run"]
            x0, dy = r["x"] * scale, -math.log(scale)  # Adam in its grid's nominal units: B / (lr / adam_scale)
            ax1.plot(np.full(len(per), x0), np.asarray(per) + dy, ".", color=c, alpha=0.3, ms=4)
            use = bool(r["settled"])
            ax1.errorbar(x0, r["log_time"] + dy, yerr=r["log_time_se"], fmt=marks[r["batch"]], color=c,
                         mfc=c if use else "none", ms=6)
        s = summary[opt]
        if "slope" in s:
            xs = np.linspace(t["x"].min(), t["x"].max(), 20)  # in the optimizer's own units
            u = t[t["settled"] & t["log_time"].notna()]
            c0 = np.polyfit(u["x"].to_numpy(float), u["log_time"].to_numpy(float), 1,
                            w=1 / u["log_time_se"].to_numpy(float))
            ax1.plot(xs * scale, np.polyval(c0, xs) - math.log(scale), "--", color=c, lw=1,
                     label=f"{opt.upper() if opt == 'sgd' else 'Adam'}: V = {s['slope']:.2g} +- {s['slope_se']:.1g}")
        for _, r in t.iterrows():
            if pd.notna(r.get("length_at_1", math.nan)):
                ls = [r[f"length_at_{f}"] for f in cfg.factors]
                ax2.plot(cfg.factors, ls, "-" + marks[r["batch"]], color=c, alpha=0.6, ms=4)
        for lr in cfg.lrs:
            fm = traces[(opt, lr, cfg.batches[0])]["f_mem"]
            k = max(1, fm.size // 40)  # running mean over 1/40 of the window
            smooth = np.convolve(fm, np.ones(k) / k, mode="valid")
            ax3.plot(lr * (np.arange(smooth.size) + k / 2), smooth, color=c, lw=1,
                     alpha=0.4 + 0.6 * (lr == cfg.lrs[-1]), label=f"{opt} lr = {lr * scale:g}")
    for b, mk in marks.items():
        ax1.plot([], [], mk, color="gray", label=f"B = {b}")
    ax1.set(xlabel="B / lr (inverse temperature; Adam: lr / adam_scale)",
            ylabel="ln(lr L)  (episode time in lr * steps)",
            title="Arrhenius plot (open: not settled, left out)")
    ax1.legend(fontsize=8)
    ax2.set(xscale="log", yscale="log", xlabel="checkpoint spacing (steps)", ylabel="mean episode length (steps)",
            title="Resolution: L against the spacing")
    ax2.set_xticks(cfg.factors, [str(f) for f in cfg.factors])
    ax2.minorticks_off()
    ax3.set(xlabel="lr * steps into the window (Adam: lr / adam_scale)", ylabel="f_mem (mean over runs, running mean)",
            title=f"f_mem in the window (B = {cfg.batches[0]})")
    ax3.legend(fontsize=7)
    fig.tight_layout()
    caption = (f"Residual MLP (width {cfg.width}) on {cfg.n} MNIST digits ({cfg.dataset}), {cfg.replicates} runs x "
               f"{cfg.probes} probes per setting, pre-trained by SGD to lr * steps = {cfg.pretrain_time:g}, then each "
               f"(lr, B) for {cfg.burn_time:g} + {cfg.window_time:g} in lr * steps, every step sampled. Left: ln(lr L) "
               "against B / lr, every run (dots) and the setting (marker per batch size), with the weighted line; "
               "middle: the mean episode length at checkpoint spacings 1, 2, 4 steps; right: f_mem in the window. "
               "Verdict: " + summary["verdict"] + ".")
    return Figure("diffusion-temperature", fig, caption)
