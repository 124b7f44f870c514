"""Claims: a prediction of the theory beside a measurement, with the error budget that decides
between them.

A claim's tolerance is derived, never typed in. Its parts:

* ``se``: standard error of the measurement (independent repetitions, see :mod:`memdyn.stats`);
* ``predicted_se``: standard error of the prediction, when the prediction is itself estimated;
* ``systematic``: a bias bound of the comparison that is *computed*, with its ``systematic_source``
  (for example the residual of an a -> 0 extrapolation of exact finite-step values);
* ``accuracy``: for a deterministic solver check, the solver's documented accuracy target (or the
  floating-point resolution of a closed form), with its ``accuracy_source``.

Then ``tolerance = Z_TOL * sqrt(se^2 + predicted_se^2) + |systematic| + accuracy``, and

* a two-sided claim holds when |measured - predicted| <= tolerance;
* a one-sided claim (``side="at_least"`` / ``"at_most"``) holds when measured >= predicted -
  tolerance, or measured <= predicted + tolerance; the threshold ``predicted`` must come from a
  theory object (the W-graph's pick, a solver's value, a method's theoretical order).

Z_TOL = 4 makes the chance that a true statistical claim is reported as failing 6e-5 per claim
(about 1e-3 for a suite of a dozen claims), so a failure means a real discrepancy, not bad luck.
The price is power: every claim states its minimum detectable effect, ``detectable = tolerance +
Z_POWER sqrt(se^2 + predicted_se^2)``, the smallest true difference from the prediction (for a
one-sided claim, beyond its bound in the excluded direction) that fails it with 95 % probability.

A claim is *statistical* when it carries a standard error; its standardised residual
``z = (measured - predicted) / sqrt(se^2 + predicted_se^2)`` should be N(0, 1) over seeds when the
prediction is exact (``memdyn calibrate`` checks this). ``ci_low, ci_high`` is the 95 % interval
measured +- 1.96 se. A claim built on a line fit carries the fit's misfit: ``flagged`` is set when
the fit is inconsistent with a line (see :func:`memdyn.stats.line_fit`), and the report shows it.

All numbers must be finite: a NaN never reaches results.json.

A claim with ``finding=True`` tests the theory, or a published law, on a real model (a network
trained on real data), not the software against a known answer: its failure is a result about the
model, reported like any failing claim (results.json, the report, "Theory vs practice"), but it is
not a failed check, so ``memdyn run`` still exits 0 when every other claim holds. The measurement's
own checks on a real model (a window that settled, a converged time resolution) are not findings.

Every claim has an ``id``: a short slug given by the experiment, unique within it and stable when
the claim's text is reworded (a claim about one setting of a grid carries the setting, as in
``episode-length@a=0.001``). The report's comparisons and any other reader pair claims by id, never
by their text.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

from .stats import LineFit

__all__ = ["Claim", "claim", "detectable", "ID_PATTERN", "Z_CI", "Z_POWER", "Z_TOL"]

Z_CI = 1.959963984540054
Z_TOL = 4.0
#: the one-sided 95 % normal quantile: an effect of (Z_TOL + Z_POWER) se is detected 95 % of the time
Z_POWER = 1.6448536269514722


def detectable(se: float) -> float:
    """The smallest effect a claim with standard error ``se`` detects with 95 % power, (Z_TOL + Z_POWER) se
    (its minimum detectable effect; for a two-sided claim the far tail adds under 1e-4 to the power)."""
    return (Z_TOL + Z_POWER) * se


@dataclass(frozen=True)
class Claim:
    """One prediction vs one measurement, with its error budget (see the module docstring)."""

    id: str
    name: str
    predicted: float
    measured: float
    se: float
    predicted_se: float
    systematic: float
    systematic_source: str
    accuracy: float
    accuracy_source: str
    tolerance: float
    ci_low: float
    ci_high: float
    holds: bool
    z: float | None
    flagged: bool = False
    detail: str = ""
    side: str = "both"
    finding: bool = False
    #: the smallest difference from the prediction (beyond a one-sided bound: in the excluded direction) that
    #: fails the claim with 95 % power: tolerance + Z_POWER sqrt(se^2 + predicted_se^2)
    detectable: float = 0.0

    @property
    def kind(self) -> str:
        """'statistical' (carries a standard error) or 'deterministic'."""
        return "statistical" if self.z is not None else "deterministic"

    def to_dict(self) -> dict:
        return {**asdict(self), "kind": self.kind}


#: what a claim id may look like: a lower-case slug, then optionally @ and settings
ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]*(@[A-Za-z0-9_.=,+-]+)?")


def claim(id: str, name: str, predicted: float, measured: float, se: float = 0.0, *, predicted_se: float = 0.0,
          systematic: float = 0.0, systematic_source: str = "", accuracy: float = 0.0, accuracy_source: str = "",
          fit: LineFit | None = None, detail: str = "", side: str = "both", finding: bool = False) -> Claim:
    """Build a :class:`Claim` from an estimate and its error budget (see the module docstring).

    Parameters
    ----------
    id : str
        The claim's stable id (:data:`ID_PATTERN`: ``slug`` or ``slug@key=value,...``), unique within
        the experiment.
    name : str
        What is claimed, in words (free to be reworded).
    predicted, measured : float
    se, predicted_se : float
        Standard errors of the measurement and of the prediction (>= 0).
    systematic, systematic_source : float, str
        A computed bias bound and where it comes from (required together).
    accuracy, accuracy_source : float, str
        A deterministic solver's documented accuracy target and where it is documented (required
        together).
    fit : LineFit, optional
        The line fit the measurement comes from: its misfit goes into ``detail`` and ``flagged``.
    detail : str
    side : {'both', 'at_least', 'at_most'}
    finding : bool
        The claim tests the theory on a real model: its failure is a finding, not a failed check.
    """
    if not (isinstance(id, str) and ID_PATTERN.fullmatch(id)):
        raise ValueError(f"claim {name!r}: id must be a slug such as 'episode-length@a=0.001' ({ID_PATTERN.pattern}), "
                         f"got {id!r}")
    if side not in ("both", "at_least", "at_most"):
        raise ValueError(f"claim {name!r}: side must be 'both', 'at_least' or 'at_most', got {side!r}")
    vals = {"predicted": predicted, "measured": measured, "se": se, "predicted_se": predicted_se,
            "systematic": systematic, "accuracy": accuracy}
    bad = [k for k, v in vals.items() if not math.isfinite(float(v))]
    if bad:
        raise ValueError(f"claim {name!r}: non-finite {', '.join(bad)} ({vals})")
    for key in ("se", "predicted_se", "accuracy"):
        if vals[key] < 0:
            raise ValueError(f"claim {name!r}: {key} must be >= 0, got {vals[key]}")
    if systematic and not systematic_source:
        raise ValueError(f"claim {name!r}: a systematic budget needs its source (systematic_source)")
    if accuracy and not accuracy_source:
        raise ValueError(f"claim {name!r}: an accuracy target needs its source (accuracy_source)")
    predicted, measured = float(predicted), float(measured)
    stat = math.hypot(float(se), float(predicted_se))
    tol = Z_TOL * stat + abs(float(systematic)) + float(accuracy)
    diff = measured - predicted
    holds = {"both": abs(diff) <= tol, "at_least": diff >= -tol, "at_most": diff <= tol}[side]
    flagged = bool(fit is not None and fit.flagged)
    if fit is not None:
        detail = f"{detail}; {fit.misfit}" if detail else fit.misfit
    return Claim(id, name, predicted, measured, float(se), float(predicted_se), float(systematic), systematic_source,
                 float(accuracy), accuracy_source, tol, measured - Z_CI * se, measured + Z_CI * se, bool(holds),
                 diff / stat if stat > 0 else None, flagged, detail, side, bool(finding), tol + Z_POWER * stat)
