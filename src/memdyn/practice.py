"""Theory vs practice: each prediction tested both in the stylized model and in a real diffusion
model, side by side (the report's "Theory vs practice" section).

A row pairs the claims of a stylized-model experiment with those of a real-training experiment
that test the same prediction, and says whether the real model agrees: "agrees" when every real
claim holds on a fit consistent with its form, "agrees in direction, not in form" when a claim
holds but rests on a line the data reject (the claim is flagged as a misfit) or the experiment
reports that another form fits its data better (``form`` names that entry of its summary),
"disagrees" when a real claim (a finding) fails, with the measured value against the prediction and
z, and "not measured reliably" when a check of the measurement itself (resolution, settling) fails. A row
can also rest on a fit of the stylized model to the real run (``fit`` names the summary entry, as
:meth:`StylizedFit.verdict` writes it): the fitted model's failure to describe the run is a
finding about the theory, reported as "disagrees" with its numbers, not a failed check of the
software (it does not change ``memdyn run``'s exit code).

:func:`stylized_fit` estimates the stylized model's parameters from a real run: the barrier V and
prefactor P of the exit law L(a) = P exp(V / a) / a iterations (the mean stay in a memorizing
well at step a, with its 1/a: ln(a L) = ln P + V / a) from mean episode lengths at several
learning rates, and the time-scale ratio eps from the network's parameter influence
(:mod:`memdyn.influence`); then it sets the fitted model's predictions beside the measurements.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .claims import Z_TOL
from .stats import LineFit, bootstrap_slopes, line_fit

__all__ = ["Comparison", "COMPARISONS", "StylizedFit", "comparisons", "stylized_fit"]


@dataclass(frozen=True)
class Comparison:
    """One prediction; ``stylized`` and ``real`` are (experiment, claim ids) pairs (``stylized`` None
    when the stylized model does not speak to it). A claim id with its settings
    (``keeps-diversity@mixed``) names one claim; a bare slug (``heterozygosity``) names every claim of
    that slug, whatever its settings (``heterozygosity@N=20,g=10``, ...), and a slug with its leading
    settings (``collapse@opt=sgd``) every claim whose settings begin with them
    (``collapse@opt=sgd,x=160,lr=0.1``). Each one must be found in an experiment that ran
    (:func:`comparisons` raises otherwise): claims are paired by id, never by their text.

    ``form``: the key of a boolean in the real experiment's summary that says whether its data have
    the predicted form (its ``verdict`` says why); ``fit``: the key of a summary entry {"verdict",
    "how"} from a fit of the stylized model to the real run (:meth:`StylizedFit.verdict`), which
    decides the row when no real claim fails; ``when``: the key of a summary entry the real
    experiment writes only when it measured this row (an optional part, such as
    diffusion-temperature's Adam runs): without it the row is left out rather than failing;
    ``form_verdict``: the verdict when every claim holds but the ``form`` check is False."""

    prediction: str
    stylized: tuple[str, tuple[str, ...]] | None
    real: tuple[str, tuple[str, ...]]
    form: str | None = None
    fit: str | None = None
    when: str | None = None
    form_verdict: str = "agrees in direction, not in form"


COMPARISONS = [
    Comparison("Larger steps give shorter memorization episodes (at least as 1/lr: a barrier V >= 0)",
               ("noise-mitigation", ("episode-length-ratio@knob=step",)),
               ("diffusion-episodes", ("shorter-episodes",)), form="shorter_shown",
               form_verdict="agrees, not shown beyond the bound"),
    Comparison("Fitted to a real run (barrier V from its episode lengths, eps from its parameters' influence), the "
               "stylized law L = P exp(V / a) / a with V >= 0 describes the run's episode lengths",
               ("memorization", ("arrhenius-slope",)),
               ("diffusion-episodes", ("shorter-episodes",)), fit="stylized_fit"),
    Comparison("Under constant-step SGD the temperature is lr / B: settings at equal B / lr give equal episode times "
               "lr L", None, ("diffusion-temperature", ("collapse@opt=sgd",))),
    Comparison("Colder is longer under SGD: ln(lr L) grows with B / lr (a barrier V > 0 in ln(lr L) = ln P + V B / lr), "
               "stable under a coarser time resolution",
               ("memorization", ("arrhenius-slope",)),
               ("diffusion-temperature", ("direction@opt=sgd", "resolution@opt=sgd")), form="sgd_barrier",
               form_verdict="agrees in direction, V not shown > 0"),
    Comparison("Episode times follow the Arrhenius law in the SGD temperature, ln(lr L) = ln P + V B / lr (with the "
               "first-order temperature correction of P)",
               ("memorization", ("arrhenius-slope",)), ("diffusion-temperature", ("arrhenius-form@opt=sgd",)),
               when="form_test"),
    Comparison("Practical comparison, not a prediction: with Adam, lr / B acts as the same temperature",
               None, ("diffusion-temperature", ("collapse@opt=adam", "direction@opt=adam")), form="adam_barrier",
               when="adam", form_verdict="no temperature effect shown"),
    Comparison("Less noise in the sampled parameters lengthens episodes (stylized: smaller sigma; real: EMA weights)",
               ("noise-mitigation", ("episode-length-ratio@knob=sigma",)),
               ("diffusion-episodes", ("ema-lengthens",)), when="ema_measured", form="ema_shown",
               form_verdict="agrees in direction, not shown > 0"),
    Comparison("Retrained on its own samples, a model loses diversity at least as fast as Wright-Fisher resampling "
               "(replace)",
               ("collapse", ("heterozygosity",)),
               ("self-consuming", ("replace-diversity",)), when="replace_test"),
    Comparison("Fresh real data or accumulated samples keep diversity",
               ("degeneration", ("homozygosity",)),
               ("self-consuming", ("keeps-diversity@mixed", "keeps-diversity@accumulate")), form="keeps_shown",
               form_verdict="agrees in direction, not shown > 0"),
    Comparison("Memorization sets in later for a larger training set: tau_mem grows like n (log-log slope 1)",
               None, ("diffusion-tau-mem", ("tau-mem-slope", "resolution@time=tau_mem")), when="slope_test"),
    Comparison("The time at which samples look real does not depend on n (log-log slope of tau_gen 0)",
               None, ("diffusion-tau-mem", ("tau-gen-slope", "resolution@time=tau_gen")), when="slope_test"),
    Comparison("Forecast before training: tau_mem at the largest n, from tau_mem = t0 + c n fitted to the smaller n, "
               "is what those runs then measure", None, ("diffusion-tau-mem", ("forecast",)),
               when="forecasts_in_advance"),
    Comparison("A barrier measured without episode lengths: the kinetic model's quasi-potential U along ln(d1/d2), "
               "fitted at one SGD temperature, has the barrier V of the Arrhenius law of the episode lengths",
               ("memorization", ("arrhenius-slope",)), ("diffusion-temperature", ("kinetic-barrier@opt=sgd",)),
               when="kinetic_trusted"),
    Comparison("The kinetic model fitted at one SGD temperature predicts the episode lengths at the others (U fixed, "
               "D in proportion to lr / B)", None, ("diffusion-temperature", ("kinetic@opt=sgd",)),
               when="kinetic_predicted"),
]


def _matches(claim_id: str, wanted: str) -> bool:
    """A full id names itself; a bare slug names every claim of that slug, whatever its settings; a slug
    with its leading settings (``collapse@opt=sgd``) names every claim that has those settings first."""
    if claim_id == wanted:
        return True
    return claim_id.startswith(wanted + ("," if "@" in wanted else "@"))


def _find(claims: list[dict], where) -> list[dict]:
    """The claims ``where`` = (experiment, ids) names, in the run's order; [] when that experiment did not
    run. Raises ValueError when it ran and one of the ids has no claim (a claim renamed or dropped
    would otherwise leave its row silently incomplete)."""
    if where is None:
        return []
    exp, ids = where
    ran = [c for c in claims if c.get("experiment") == exp]
    if not ran:
        return []
    for wanted in ids:
        if not any(_matches(c.get("id", ""), wanted) for c in ran):
            raise ValueError(f"theory vs practice: {exp} ran but has no claim with id {wanted!r} (its ids: "
                             f"{', '.join(sorted({c.get('id', '?') for c in ran}))}); a comparison needs it")
    return [c for c in ran if any(_matches(c.get("id", ""), w) for w in ids)]


def _verdict(real: list[dict], summary: dict, form: str | None, fit: str | None = None,
             form_verdict: str = "agrees in direction, not in form") -> tuple[str, str]:
    failing = [c for c in real if not c["holds"]]
    checks = [c for c in failing if not c.get("finding")]
    if checks:  # the measurement failed its own check (resolution, settling): no verdict on the model
        return "not measured reliably", "; ".join(f"{c['name']}: measured {c['measured']:.4g} against "
                                                  f"{c['predicted']:.4g}" for c in checks)
    if failing:
        how = "; ".join(f"{c['name']}: measured {c['measured']:.4g} against {c['predicted']:.4g}"
                        + (f" (z = {c['z']:+.2f})" if c.get("z") is not None else "") for c in failing)
        return "disagrees", how
    if fit is not None:
        return str(summary[fit]["verdict"]), str(summary[fit].get("how", ""))
    misfit = [c for c in real if c.get("flagged")]
    if misfit:
        return "agrees in direction, not in form", "; ".join(c.get("detail", "") for c in misfit)
    if form is not None and summary.get(form) is False:
        return form_verdict, str(summary.get("verdict", ""))
    return "agrees", ""


def comparisons(claims: list[dict], summaries: dict | None = None) -> list[dict]:
    """The rows for which the run measured the real model: prediction, the stylized and real claims,
    the verdict and, where the real model disagrees, by how much. ``summaries``: {experiment: its
    summary dict} (for the ``form`` checks)."""
    rows = []
    for comp in COMPARISONS:
        summary = (summaries or {}).get(comp.real[0], {})
        if comp.when is not None and comp.when not in summary:
            continue  # the optional part this row needs was not run
        real = _find(claims, comp.real)
        if not real or (comp.fit is not None and not isinstance(summary.get(comp.fit), dict)):
            continue  # not measured in this run (or by an older version without the fit)
        verdict, how = _verdict(real, summary, comp.form, comp.fit, comp.form_verdict)
        rows.append({"prediction": comp.prediction, "stylized": _find(claims, comp.stylized), "real": real,
                     "stylized_experiment": comp.stylized[0] if comp.stylized else None,
                     "real_experiment": comp.real[0], "verdict": verdict, "how": how})
    return rows


@dataclass(frozen=True)
class StylizedFit:
    """The stylized model fitted to a real run (see :func:`stylized_fit`).

    Attributes
    ----------
    steps : ndarray
        The learning rates a.
    log_length, log_length_se : ndarray
        Measured ln L (mean episode length in iterations) and its standard error.
    barrier, barrier_se : float
        V (in units of the step a) and its standard error: the slope of ln(a L) in 1/a.
    log_prefactor : float
        ln P, the intercept.
    fit : LineFit
        The weighted line ln(a L) = ln P + V / a, with its chi^2 and p.
    bounded_log_prefactor : float
        ln P of the best law with V >= 0: the free fit when V >= 0, else V = 0 (L = P / a).
    rise, rise_se : float
        ln(a L) at the largest step minus at the smallest, and its standard error (paired when
        bootstrap resamples are given). Any barrier V >= 0 makes a L = P exp(V / a) non-increasing
        in a, so rise <= 0 is the stylized model's prediction, whatever V and P.
    eps, eps_se : ndarray
        The empirical eps at each step (NaN when not given) and its standard error.
    """

    steps: np.ndarray
    log_length: np.ndarray
    log_length_se: np.ndarray
    barrier: float
    barrier_se: float
    log_prefactor: float
    fit: LineFit
    bounded_log_prefactor: float
    rise: float
    rise_se: float
    eps: np.ndarray
    eps_se: np.ndarray

    @property
    def predicted(self) -> np.ndarray:
        """ln L of the fitted law at each step."""
        return self.log_prefactor + self.barrier / self.steps - np.log(self.steps)

    @property
    def bounded(self) -> np.ndarray:
        """ln L of the best law with V >= 0 at each step."""
        v = max(self.barrier, 0.0)
        return self.bounded_log_prefactor + v / self.steps - np.log(self.steps)

    @property
    def bounded_chi2(self) -> float:
        """chi^2 of the measured ln L against :attr:`bounded` (len(steps) - 1 dof when V < 0)."""
        return float((((self.log_length - self.bounded) / self.log_length_se) ** 2).sum())

    @property
    def slow_time(self) -> np.ndarray:
        """1 / (a eps): the stylized model's slow time scale in iterations at each step."""
        return 1.0 / (self.steps * self.eps)

    def verdict(self) -> dict:
        """{"verdict", "how"}: "disagrees" when a L rises from the smallest to the largest step by
        more than Z_TOL standard errors (no law with V >= 0 describes the run), "agrees in direction,
        not in form" when the fitted line is rejected (chi^2 p < MISFIT_P), else "agrees"."""
        v, se = self.barrier, self.barrier_se
        z = v / se if se > 0 else math.copysign(math.inf, v)
        head = (f"fitted to the run, ln(a L) = ln P + V / a gives V = {v:.3g} +- {se:.2g} (z = {z:+.1f}) and "
                f"ln P = {self.log_prefactor:.3g}; {self.fit.misfit}")
        if np.isfinite(self.eps).any():
            head += (f"; eps from the network's influence {span_text(self.eps)}, slow time 1/(a eps) "
                     f"{span_text(self.slow_time, '.3g')} steps against episodes of "
                     f"{span_text(np.exp(self.log_length), '.0f')}")
        if self.rise - Z_TOL * self.rise_se > 0:
            zr = self.rise / self.rise_se if self.rise_se > 0 else math.inf
            return {"verdict": "disagrees", "how": (
                f"{head}. a L, the episode length in the theory's time t = k a, grows with the step: ln(a L) rises by "
                f"{self.rise:.3g} +- {self.rise_se:.2g} (z = {zr:+.1f}) from a = {self.steps[0]:.3g} to "
                f"{self.steps[-1]:.3g}, while any barrier V >= 0 makes it fall or stay flat; the best such law "
                f"(V = {max(v, 0.0):.3g}) misses the lengths by chi2 = {self.bounded_chi2:.3g}")}
        if self.fit.flagged:
            return {"verdict": "agrees in direction, not in form", "how": head}
        return {"verdict": "agrees", "how": head}


def span_text(values, fmt: str = ".2g") -> str:
    """'lo to hi' of the finite values, formatted (one number when they print the same)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    lo, hi = format(v.min(), fmt), format(v.max(), fmt)
    return lo if lo == hi else f"{lo} to {hi}"


def stylized_fit(steps, log_length, log_length_se, *, boot=None, eps=None, eps_se=None) -> StylizedFit:
    """Fit the stylized model's exit law to measured mean episode lengths.

    The mean stay in a memorizing well at constant step a is L(a) = P exp(V / a) / a iterations
    (the Freidlin-Wentzell exit time with its prefactor; time t = k a), so ln(a L) is linear in
    1/a with slope the barrier V. The line is fitted by weighted least squares (:func:`line_fit`).

    Parameters
    ----------
    steps : array (k,)
        Learning rates, k >= 2, increasing and > 0.
    log_length, log_length_se : array (k,)
        ln of the measured mean episode length (iterations) and its standard error (> 0).
    boot : array (resamples, k), optional
        Paired bootstrap resamples of ln L (the same probes resampled at every step): the barrier's
        standard error is then their spread of slopes, which keeps the correlation between steps
        (multiplied by the Birge ratio when the line is flagged, as :func:`line_fit` does).
    eps, eps_se : array (k,), optional
        The empirical eps at each step (:meth:`memdyn.influence.Influence.split`).
    """
    a = np.asarray(steps, dtype=np.float64)
    y, se = np.asarray(log_length, dtype=np.float64), np.asarray(log_length_se, dtype=np.float64)
    if a.ndim != 1 or a.size < 2 or y.shape != a.shape or se.shape != a.shape:
        raise ValueError(f"steps, log_length and log_length_se must be 1-D of one length >= 2, got shapes "
                         f"{a.shape}, {y.shape}, {se.shape}")
    if not (np.all(a > 0) and np.all(np.isfinite(a))):
        raise ValueError(f"steps must be finite and > 0, got {a.tolist()}")
    if np.any(np.diff(a) <= 0):
        raise ValueError(f"steps must be increasing, got {a.tolist()}")
    fit = line_fit(1 / a, y + np.log(a), se)
    v_se = fit.slope_se
    rise = float(y[-1] - y[0] + math.log(a[-1] / a[0]))
    rise_se = math.hypot(se[0], se[-1])
    if boot is not None:
        b = np.asarray(boot, dtype=np.float64)
        if b.ndim != 2 or b.shape[1] != a.size:
            raise ValueError(f"boot must have shape (resamples, {a.size}), got {b.shape}")
        slopes = bootstrap_slopes(1 / a, b + np.log(a), se)
        if slopes.size < 2:
            raise ValueError("boot has fewer than 2 finite resamples")
        v_se = float(np.std(slopes, ddof=1)) * fit.birge if fit.flagged else float(np.std(slopes, ddof=1))
        ends = b[:, -1] - b[:, 0]
        rise_se = float(np.std(ends[np.isfinite(ends)], ddof=1))
    w = 1 / se**2
    bounded = fit.intercept if fit.slope >= 0 else float((w * (y + np.log(a))).sum() / w.sum())
    nan = np.full(a.size, np.nan)
    e = nan if eps is None else np.broadcast_to(np.asarray(eps, dtype=np.float64), a.shape).copy()
    es = nan if eps_se is None else np.broadcast_to(np.asarray(eps_se, dtype=np.float64), a.shape).copy()
    return StylizedFit(a, y, se, fit.slope, float(v_se), fit.intercept, fit, bounded, rise, rise_se, e, es)
