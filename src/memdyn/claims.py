"""Claims: a prediction of the theory beside a measurement, with its confidence interval.

Convention (used by every experiment, stated once here):

* ``ci_low, ci_high`` is the two-sided 95 % confidence interval of the measurement,
  measured +- 1.96 se.
* ``tolerance = Z_TOL * se + abs_floor``: the claim holds when |measured - predicted| <= tolerance.
  Z_TOL = 4 makes the chance that a true claim is reported as failing 6e-5 per claim (about 1e-3
  for a suite of a dozen claims), so a failure means a real discrepancy, not bad luck.
  ``abs_floor`` is used only for deterministic checks (se = 0), where it is the floating-point
  tolerance of the computation or the accuracy target of a numerical method.
* One-sided claims (``side="at_least"`` / ``"at_most"``: a convergence order of at least 1, an
  action below the symmetric path's) hold when measured >= predicted - tolerance, or
  measured <= predicted + tolerance.

All numbers must be finite: a NaN never reaches results.json.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["Claim", "claim", "Z_CI", "Z_TOL", "mean_se", "weighted_line_fit"]

Z_CI = 1.959963984540054
Z_TOL = 4.0


@dataclass(frozen=True)
class Claim:
    """One prediction vs one measurement."""

    name: str
    predicted: float
    measured: float
    ci_low: float
    ci_high: float
    tolerance: float
    holds: bool
    detail: str = ""
    side: str = "both"

    def to_dict(self) -> dict:
        return asdict(self)


def claim(name: str, predicted: float, measured: float, se: float, *, abs_floor: float = 0.0,
          detail: str = "", side: str = "both") -> Claim:
    """Build a :class:`Claim` from an estimate and its standard error (see module docstring)."""
    if side not in ("both", "at_least", "at_most"):
        raise ValueError(f"claim {name!r}: side must be 'both', 'at_least' or 'at_most', got {side!r}")
    vals = {"predicted": predicted, "measured": measured, "se": se}
    bad = [k for k, v in vals.items() if not math.isfinite(float(v))]
    if bad:
        raise ValueError(f"claim {name!r}: non-finite {', '.join(bad)} ({vals})")
    if se < 0:
        raise ValueError(f"claim {name!r}: se must be >= 0, got {se}")
    predicted, measured, se = float(predicted), float(measured), float(se)
    tol = Z_TOL * se + abs_floor
    diff = measured - predicted
    holds = {"both": abs(diff) <= tol, "at_least": diff >= -tol, "at_most": diff <= tol}[side]
    return Claim(name, predicted, measured, measured - Z_CI * se, measured + Z_CI * se, tol, bool(holds), detail, side)


def mean_se(samples) -> tuple[float, float]:
    """Mean of independent samples and its standard error s / sqrt(n)."""
    x = np.asarray(samples, dtype=np.float64).ravel()
    if x.size < 2:
        raise ValueError("need at least 2 independent samples for a standard error")
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(x.size))


def weighted_line_fit(x, y, se) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least squares y = c0 + c1 x with known standard errors of y.

    Returns
    -------
    coef : ndarray (c0, c1)
    cov : ndarray (2, 2)
        Covariance of the coefficients, (X^T W X)^-1 with W = diag(1/se^2). It is not rescaled
        by the residual chi^2: the se are taken as known.
    """
    x, y, se = (np.asarray(v, dtype=np.float64).ravel() for v in (x, y, se))
    if not (x.size == y.size == se.size) or x.size < 2:
        raise ValueError("need matching x, y, se with at least 2 points")
    if np.any(se <= 0):
        raise ValueError("standard errors must be > 0")
    X = np.stack([np.ones_like(x), x], axis=1)
    W = 1.0 / se**2
    cov = np.linalg.inv(X.T @ (X * W[:, None]))
    coef = cov @ (X.T @ (W * y))
    return coef, cov
