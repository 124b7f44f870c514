"""Arrhenius and Gibbs fits (the two a -> 0 laws of constant-step SGD).

* :func:`arrhenius_fit`: mean exit times ~ a^-1 P exp(V/a) iterations, so ln(a * mean exit) is
  linear in 1/a with slope V (the barrier) and intercept ln P (the Eyring-Kramers prefactor).
* :func:`gibbs_fit`: a ln(occupation ratio) is linear in a near 0; its intercept is the energy
  difference.

Both are weighted least squares with the measurements' standard errors taken as known, and report
their misfit (:class:`memdyn.stats.LineFit`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..stats import LineFit, line_fit

__all__ = ["ArrheniusFit", "arrhenius_fit", "gibbs_fit"]


@dataclass(frozen=True)
class ArrheniusFit:
    """ln(a * mean exit) = ln P + V / a.

    Attributes
    ----------
    barrier, barrier_se : float
        V (the slope in 1/a) and its standard error.
    log_prefactor, log_prefactor_se : float
        ln P (the intercept) and its standard error.
    line : LineFit
        The underlying fit of ln(a * mean exit) against 1/a (misfit, covariance).
    """

    barrier: float
    barrier_se: float
    log_prefactor: float
    log_prefactor_se: float
    line: LineFit


def arrhenius_fit(steps, mean_exit, se) -> ArrheniusFit:
    """Fit ln(a * mean exit time) = ln P + V / a.

    Parameters
    ----------
    steps : array_like
        Step sizes a (>= 2 distinct).
    mean_exit, se : array_like
        Mean exit times in iterations and their standard errors (se / mean is the standard error
        of the logarithm, to first order).
    """
    a, t, s = (np.asarray(v, dtype=np.float64).ravel() for v in (steps, mean_exit, se))
    if np.any(a <= 0) or np.any(t <= 0) or np.any(s <= 0):
        raise ValueError("steps, mean exit times and their errors must be > 0")
    fit = line_fit(1 / a, np.log(a * t), s / t)
    return ArrheniusFit(fit.slope, fit.slope_se, fit.intercept, fit.intercept_se, fit)


def gibbs_fit(steps, a_log_ratio, se) -> LineFit:
    """Extrapolate a ln(occupation ratio) linearly to a -> 0: the intercept is -(E_1 - E_0)."""
    return line_fit(steps, a_log_ratio, se)
