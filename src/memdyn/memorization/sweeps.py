"""The slow variable sweeping the memorization weight: onset and trapping, measured and predicted.

* :func:`time_scale`: the factor s that maps a predicted adiabatic curve f(k) onto the measured
  fraction, f_measured(k) ~ f(k / s), fitted over the whole sweep (s = 1: the onset comes when the
  slow variable's path says), with a standard error from resampling probes.
* :func:`survival`: the probability that a probe in the quasi-stationary law of a training point's
  core is still there after a sweep, exp(-sum_k kappa(c_k)), from exact per-step exit rates
  kappa(c) at a few values of c (interpolated in ln kappa by two schemes whose difference is the
  interpolation's bias). It ignores the time a probe needs to reach that law; for sweeps not much
  longer than that, :func:`memdyn.reference.survival_2d` is exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["TimeScale", "survival", "time_scale"]


def survival(c_grid, log_kappa, c_path) -> tuple[float, float]:
    """P(no exit along a path of the memorization weight) = exp(-sum_k kappa(c_k)).

    Parameters
    ----------
    c_grid, log_kappa : array_like
        ln kappa(c) (per-step exit probability from the quasi-stationary law) at increasing c.
    c_path : array_like
        c_k at every step of the sweep (within the grid's range).

    Returns
    -------
    (survival, bias)
        From a cubic spline of ln kappa; ``bias``: the change when a monotone (PCHIP) interpolant is
        used instead.
    """
    from scipy.interpolate import CubicSpline, PchipInterpolator

    c_grid, lk = np.asarray(c_grid, dtype=np.float64), np.asarray(log_kappa, dtype=np.float64)
    path = np.asarray(c_path, dtype=np.float64)
    if path.min() < c_grid[0] - 1e-12 or path.max() > c_grid[-1] + 1e-12:
        raise ValueError(f"c_path leaves the grid [{c_grid[0]:g}, {c_grid[-1]:g}]")
    s1 = float(np.exp(-np.exp(CubicSpline(c_grid, lk)(path)).sum()))
    s2 = float(np.exp(-np.exp(PchipInterpolator(c_grid, lk)(path)).sum()))
    return s1, abs(s1 - s2)


@dataclass(frozen=True)
class TimeScale:
    """Result of :func:`time_scale`: the fitted factor ``s``, its standard error ``se`` over probe
    resamples, and the measured mean curve ``curve`` at ``steps``."""

    s: float
    se: float
    curve: np.ndarray
    steps: np.ndarray


def time_scale(history, steps, predicted, *, bounds=(0.25, 4.0), n_boot: int = 200, seed: int = 0) -> TimeScale:
    """Least-squares factor s with mean_probes(history)[k] ~ predicted(k / s).

    Parameters
    ----------
    history : array_like (probes, columns) bool
    steps : array_like (columns,)
    predicted : callable
        The predicted fraction as a function of (an array of) steps.
    bounds : (float, float)
        Search interval for s.
    """
    from scipy.optimize import minimize_scalar

    H = np.asarray(history, dtype=np.float64)
    steps = np.asarray(steps, dtype=np.float64)
    if H.ndim != 2 or H.shape[1] != steps.size or H.shape[0] < 2:
        raise ValueError(f"history must be (probes >= 2, len(steps)), got {H.shape} and {steps.size} steps")

    def fit(curve):
        res = minimize_scalar(lambda s: float(np.sum((curve - predicted(steps / s)) ** 2)), bounds=bounds,
                              method="bounded", options={"xatol": 1e-6})
        return float(res.x)

    curve = H.mean(axis=0)
    s = fit(curve)
    rng = np.random.default_rng(seed)
    boots = [fit(np.bincount(rng.integers(0, H.shape[0], H.shape[0]), minlength=H.shape[0]) @ H / H.shape[0])
             for _ in range(n_boot)]
    return TimeScale(s, float(np.std(boots, ddof=1)), curve, steps)
