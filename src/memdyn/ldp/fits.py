"""Arrhenius and Gibbs fits and the exact 1-D mean exit time (MODEL.md §5).

* :func:`arrhenius_fit`: mean exit times ~ a^-1 P exp(V/a) iterations, so ln(a * mean exit) is
  linear in 1/a with slope V (the barrier) and intercept ln P.
* :func:`gibbs_fit`: a ln(occupation ratio) is linear in a near 0; its intercept is the energy
  difference.

Fits are weighted least squares with the measurements' standard errors taken as known.
"""

from __future__ import annotations

import math

import numpy as np

from ..claims import weighted_line_fit

__all__ = ["arrhenius_fit", "gibbs_fit", "mean_exit_time_1d"]


def arrhenius_fit(steps, mean_exit, se) -> dict:
    """Fit ln(a * mean exit time) = ln P + V / a.

    Parameters
    ----------
    steps : array_like
        Step sizes a (>= 2 distinct).
    mean_exit, se : array_like
        Mean exit times in iterations and their standard errors.

    Returns
    -------
    dict with ``barrier`` (V), ``barrier_se``, ``log_prefactor`` (ln P), ``log_prefactor_se``,
    ``chi2``, ``dof``.
    """
    a, t, s = (np.asarray(v, dtype=np.float64).ravel() for v in (steps, mean_exit, se))
    if np.any(a <= 0) or np.any(t <= 0) or np.any(s <= 0):
        raise ValueError("steps, mean exit times and their errors must be > 0")
    y, y_se = np.log(a * t), s / t
    coef, cov = weighted_line_fit(1 / a, y, y_se)
    chi2 = float(np.sum(((y - coef[0] - coef[1] / a) / y_se) ** 2))
    return {"barrier": coef[1], "barrier_se": math.sqrt(cov[1, 1]), "log_prefactor": coef[0],
            "log_prefactor_se": math.sqrt(cov[0, 0]), "chi2": chi2, "dof": a.size - 2}


def gibbs_fit(steps, a_log_ratio, se) -> dict:
    """Extrapolate a ln(occupation ratio) linearly to a -> 0.

    Returns
    -------
    dict with ``intercept`` (the a -> 0 limit, = -(E_1 - E_0)), ``intercept_se``, ``slope``,
    ``slope_se``, ``chi2``, ``dof``.
    """
    a, y, s = (np.asarray(v, dtype=np.float64).ravel() for v in (steps, a_log_ratio, se))
    coef, cov = weighted_line_fit(a, y, s)
    chi2 = float(np.sum(((y - coef[0] - coef[1] * a) / s) ** 2))
    return {"intercept": coef[0], "intercept_se": math.sqrt(cov[0, 0]), "slope": coef[1],
            "slope_se": math.sqrt(cov[1, 1]), "chi2": chi2, "dof": a.size - 2}


def mean_exit_time_1d(landscape, sigma: float, step: float, x0: float, boundary: float, lower: float | None = None,
                      n: int = 20001) -> float:
    """Exact mean first-passage time of the SDE limit of 1-D SGD, in iterations, by quadrature.

    For dX = -F'(X) dt + sqrt(a sigma^2) dW (time t = k a) started at x0 < b = ``boundary`` and
    reflected far below (at ``lower``, default: where F exceeds its minimum by 60 a sigma^2),

        T(x0) = (2 / (a sigma^2)) int_{x0}^{b} exp(2F(y)/(a sigma^2)) int_{lower}^{y} exp(-2F(z)/(a sigma^2)) dz dy,

    returned as T / a iterations. Evaluated in log space (no overflow at small a). The discrete
    iteration differs from its SDE limit by O(a); a Brownian-bridge corrected simulation removes
    most of the grid-crossing part of that difference.
    """
    import torch
    from scipy.special import logsumexp

    if not (sigma > 0 and step > 0):
        raise ValueError("sigma and step must be > 0")
    if not x0 < boundary:
        raise ValueError(f"need x0 < boundary, got {x0}, {boundary}")
    D2 = step * sigma**2
    f = lambda x: landscape.value(torch.as_tensor(np.asarray(x, dtype=np.float64)[:, None])).numpy()  # noqa: E731
    if lower is None:
        xs = np.linspace(x0 - 50, x0, 200001)
        fx = f(xs)
        above = np.flatnonzero(fx > fx.min() + 30 * D2)
        lower = xs[above[-1]] if above.size and above[-1] < np.argmin(fx) else x0 - 50
    y = np.linspace(lower, boundary, n)
    h = y[1] - y[0]
    g = 2 * f(y) / D2
    inner = np.logaddexp.accumulate(-g + math.log(h))  # log int_lower^y exp(-g)
    outer = g + inner
    sel = y >= x0
    T = 2 / D2 * math.exp(logsumexp(outer[sel] + math.log(h)))
    return T / step
