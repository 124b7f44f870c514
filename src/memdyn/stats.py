"""Statistics shared by every experiment: means with standard errors, line fits that check their
own misfit, polynomial extrapolation with a residual-bias estimate, and z summaries.

Conventions
-----------
* A standard error is the standard deviation of an estimator over independent repetitions:
  ``mean_se`` needs independent samples (one per chain, never consecutive steps of one chain).
* :func:`line_fit` is weighted least squares with the standard errors of y taken as known. Its
  misfit is reported as chi^2 on n - 2 degrees of freedom and the upper-tail p-value. A fit with
  p < :data:`MISFIT_P` is *flagged*: the points are not consistent with a straight line within
  their errors, and the coefficient standard errors are multiplied by the Birge ratio
  sqrt(chi^2 / dof) (the usual scale factor for inconsistent data; R. T. Birge, Phys. Rev. 40
  (1932) 207).
* :func:`extrapolate` is for noise-free values (an exact reference computed on a grid): it fits
  polynomials in the grid variable of degree ``degree`` and ``degree - 1`` and reports the
  difference of the two intercepts as the residual (truncation) bias of the higher-order one
  (Richardson's principle: the better estimate, with the change from the cruder one as its error).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as _st

__all__ = ["MISFIT_P", "LineFit", "Extrapolation", "ZSummary", "mean_se", "line_fit", "replicated_line_fit",
           "relative_line_coef",
           "bootstrap_slopes", "extrapolate", "z_summary", "binomial_se", "bootstrap_se", "bootstrap_ci", "clopper_pearson"]

#: a line fit whose chi^2 p-value is below this is flagged as inconsistent with a line
MISFIT_P = 1e-3


def mean_se(samples) -> tuple[float, float]:
    """Mean of independent samples and its standard error s / sqrt(n) (s with ddof = 1)."""
    x = np.asarray(samples, dtype=np.float64).ravel()
    if x.size < 2:
        raise ValueError("need at least 2 independent samples for a standard error")
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(x.size))


def binomial_se(p: float, n: int) -> float:
    """Standard error of a proportion from n independent trials, sqrt(p (1 - p) / n), never
    below the resolution 1 / n (so that an observed 0 or 1 still carries an error)."""
    if n < 1:
        raise ValueError(f"need n >= 1 trials, got {n}")
    return max(math.sqrt(p * (1 - p) / n), 1.0 / n)


def bootstrap_se(samples, statistic, *, n_boot: int = 2000, seed: int = 0) -> float:
    """Bootstrap standard error of ``statistic(samples)`` over independent samples: the standard
    deviation of the statistic over ``n_boot`` resamples with replacement (seeded)."""
    x = np.asarray(samples, dtype=np.float64).ravel()
    if x.size < 2:
        raise ValueError("need at least 2 independent samples for a bootstrap standard error")
    rng = np.random.default_rng(seed)
    reps = np.array([statistic(x[rng.integers(0, x.size, x.size)]) for _ in range(int(n_boot))])
    return float(reps.std(ddof=1))


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) confidence interval of a proportion from k successes in n trials:
    the beta quantiles B(a/2; k, n - k + 1) and B(1 - a/2; k + 1, n - k), a = 1 - level; the
    lower end is 0 when k = 0 and the upper end 1 when k = n."""
    if not (isinstance(n, (int, np.integer)) and n >= 1):
        raise ValueError(f"need n >= 1 trials, got {n!r}")
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    a = 1.0 - level
    lo = 0.0 if k == 0 else float(_st.beta.ppf(a / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(_st.beta.ppf(1 - a / 2, k + 1, n - k))
    return lo, hi


def bootstrap_ci(samples, statistic=np.mean, *, level: float = 0.95, n_boot: int = 2000,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of ``statistic(samples)`` over independent
    samples (for a share of probes: resample the probes)."""
    x = np.asarray(samples, dtype=np.float64).ravel()
    if x.size < 1:
        raise ValueError("need at least 1 sample for a bootstrap interval")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    rng = np.random.default_rng(seed)
    reps = np.array([statistic(x[rng.integers(0, x.size, x.size)]) for _ in range(int(n_boot))])
    a = 1.0 - level
    return float(np.quantile(reps, a / 2)), float(np.quantile(reps, 1 - a / 2))


@dataclass(frozen=True)
class LineFit:
    """Result of :func:`line_fit`: y = intercept + slope * x.

    Attributes
    ----------
    intercept, slope : float
    intercept_se, slope_se : float
        Standard errors, multiplied by :attr:`birge` when the fit is flagged.
    cov : ndarray (2, 2)
        Covariance of (intercept, slope), scaled like the standard errors.
    chi2 : float
        Sum of squared standardised residuals.
    dof : int
        n - 2.
    p_value : float
        P(chi^2_dof >= chi2); 1 when dof = 0.
    birge : float
        sqrt(chi2 / dof) (1 when dof = 0).
    flagged : bool
        p_value < MISFIT_P: the data are not consistent with a line.
    """

    intercept: float
    slope: float
    intercept_se: float
    slope_se: float
    cov: np.ndarray
    chi2: float
    dof: int
    p_value: float
    birge: float
    flagged: bool

    def __call__(self, x):
        return self.intercept + self.slope * np.asarray(x, dtype=np.float64)

    @property
    def misfit(self) -> str:
        """One line on the fit's consistency, for a claim's detail and the report."""
        text = f"line fit chi2/dof = {self.chi2:.3g}/{self.dof} (p = {self.p_value:.3g})"
        if self.flagged:
            text += f"; INCONSISTENT with a line (p < {MISFIT_P:g}), errors inflated by the Birge ratio {self.birge:.3g}"
        return text


def line_fit(x, y, se) -> LineFit:
    """Weighted least squares y = c0 + c1 x with known standard errors of y.

    The covariance is (X^T W X)^-1 with W = diag(1 / se^2); it is multiplied by chi2/dof (the
    standard errors by the Birge ratio) only when the fit is flagged (p < MISFIT_P).
    """
    x, y, se = (np.asarray(v, dtype=np.float64).ravel() for v in (x, y, se))
    if not (x.size == y.size == se.size) or x.size < 2:
        raise ValueError(f"need matching x, y, se with at least 2 points, got sizes {x.size}, {y.size}, {se.size}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y)) and np.all(np.isfinite(se))):
        raise ValueError("x, y and se must be finite")
    if np.any(se <= 0):
        raise ValueError("standard errors must be > 0")
    if np.unique(x).size < 2:
        raise ValueError("need at least 2 distinct x values")
    X = np.stack([np.ones_like(x), x], axis=1)
    W = 1.0 / se**2
    cov = np.linalg.inv(X.T @ (X * W[:, None]))
    coef = cov @ (X.T @ (W * y))
    chi2 = float(np.sum(((y - X @ coef) / se) ** 2))
    dof = x.size - 2
    p = float(_st.chi2.sf(chi2, dof)) if dof > 0 else 1.0
    birge = math.sqrt(chi2 / dof) if dof > 0 else 1.0
    flagged = p < MISFIT_P
    if flagged:
        cov = cov * birge**2
    return LineFit(float(coef[0]), float(coef[1]), math.sqrt(cov[0, 0]), math.sqrt(cov[1, 1]), cov, chi2, dof, p,
                   birge, flagged)


def relative_line_coef(x, y) -> tuple[np.ndarray, np.ndarray]:
    """(c0, c1) of y = c0 + c1 x by weighted least squares for a constant relative scatter: each point
    weighted by 1 / (mean y at its x)^2, as in :func:`replicated_line_fit`. Vectorised over the leading
    axes of ``y`` (..., len(x)), so a bootstrap's resamples (rows) fit in one call."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    levels, idx = np.unique(x, return_inverse=True)
    means = np.stack([y[..., idx == k].mean(-1) for k in range(levels.size)], -1)
    w = 1.0 / means[..., idx] ** 2
    sw, swx, swy = w.sum(-1), (w * x).sum(-1), (w * y).sum(-1)
    swxx, swxy = (w * x * x).sum(-1), (w * x * y).sum(-1)
    c1 = (sw * swxy - swx * swy) / (sw * swxx - swx**2)
    return (swy - c1 * swx) / sw, c1


def replicated_line_fit(x, y) -> LineFit:
    """y = c0 + c1 x for data with replicates at each x and a constant relative scatter (each point
    weighted by 1 / (mean y at its x)^2), with the lack-of-fit test that replicates allow.

    The weighted residual sum of squares splits into pure error (replicates about their x's mean,
    N - k dof for N points at k distinct x) and lack of fit (the means about the line, k - 2 dof).
    ``chi2`` is the lack-of-fit sum in units of the pure-error variance, ``dof`` = k - 2, and
    ``p_value`` the F test's P(F_{k-2, N-k} >= (chi2 / dof)); ``flagged`` when p < MISFIT_P. The
    coefficients' covariance is (X^T W X)^-1 times the residual variance (N - 2 dof). Unlike
    :func:`line_fit` with errors taken from the residual scatter, whose chi^2 equals its dof by
    construction, this test can reject the line.
    """
    x, y = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    if x.size != y.size or not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError(f"need finite x and y of one length, got sizes {x.size}, {y.size}")
    levels, idx = np.unique(x, return_inverse=True)
    k, n = levels.size, x.size
    if k < 3 or n - k < 1:
        raise ValueError(f"need at least 3 distinct x and a replicate, got {k} distinct x in {n} points")
    means = np.bincount(idx, weights=y) / np.bincount(idx)
    if np.any(means <= 0):
        raise ValueError("relative weights need a positive mean y at every x")
    w = 1.0 / means[idx] ** 2
    X = np.stack([np.ones_like(x), x], axis=1)
    A = X.T @ (X * w[:, None])
    coef = np.array(relative_line_coef(x, y))
    ss_res = float((w * (y - X @ coef) ** 2).sum())
    ss_pe = float((w * (y - means[idx]) ** 2).sum())
    var_pe = ss_pe / (n - k)
    chi2 = (ss_res - ss_pe) / var_pe if var_pe > 0 else math.inf
    dof = k - 2
    p = float(_st.f.sf(chi2 / dof, dof, n - k)) if math.isfinite(chi2) else 0.0
    cov = np.linalg.inv(A) * ss_res / (n - 2)
    return LineFit(float(coef[0]), float(coef[1]), math.sqrt(cov[0, 0]), math.sqrt(cov[1, 1]), cov, float(chi2), dof,
                   p, math.sqrt(chi2 / dof), p < MISFIT_P)


def bootstrap_slopes(x, yb, se) -> np.ndarray:
    """The weighted least-squares slope (weights 1/se^2, as in :func:`line_fit`) of each bootstrap
    row of ``yb`` (resamples, len(x)) against ``x``; rows with a non-finite entry are dropped. Their
    spread is the slope's standard error when the points share data (paired resamples), which the
    independent errors of :func:`line_fit` leave out."""
    x, se = np.asarray(x, dtype=np.float64), np.asarray(se, dtype=np.float64)
    yb = np.atleast_2d(np.asarray(yb, dtype=np.float64))
    w = 1 / se**2
    xm = (w * x).sum() / w.sum()
    ok = np.isfinite(yb).all(axis=1)
    ym = (yb[ok] * w).sum(axis=1, keepdims=True) / w.sum()
    return ((yb[ok] - ym) * (w * (x - xm))).sum(axis=1) / (w * (x - xm) ** 2).sum()


@dataclass(frozen=True)
class Extrapolation:
    """Result of :func:`extrapolate`: the limit x -> 0 of noise-free values on a grid.

    Attributes
    ----------
    value : float
        Intercept of the degree-``degree`` polynomial fit: the estimate of the limit.
    lower : float
        Intercept of the fit of one degree less.
    bias : float
        |value - lower|: the residual (truncation) bias bound of ``value``. It is the full error
        of ``lower`` when the values are a polynomial of degree ``degree``, and bounds the smaller
        error of ``value`` when higher powers are small on the grid (Richardson's principle).
    coef, coef_lower : ndarray
        Polynomial coefficients, constant term first.
    degree : int
    """

    value: float
    lower: float
    bias: float
    coef: np.ndarray
    coef_lower: np.ndarray
    degree: int


def extrapolate(x, y, degree: int = 2) -> Extrapolation:
    """Extrapolate noise-free values y(x) on a grid to x = 0 by polynomial least squares.

    Parameters
    ----------
    x, y : array_like
        Grid (distinct values) and exact values on it; at least ``degree + 1`` points.
    degree : int
        Degree of the estimate (>= 1); the fit of one degree less gives its residual bias.
    """
    x, y = (np.asarray(v, dtype=np.float64).ravel() for v in (x, y))
    if degree < 1:
        raise ValueError(f"degree must be >= 1, got {degree}")
    if x.size != y.size or np.unique(x).size < degree + 1:
        raise ValueError(f"need >= {degree + 1} distinct points for a degree-{degree} extrapolation, got "
                         f"{np.unique(x).size}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("x and y must be finite")
    scale = float(np.max(np.abs(x)))

    def fit(d):
        V = np.vander(x / scale, d + 1, increasing=True)
        c = np.linalg.lstsq(V, y, rcond=None)[0]
        return c / scale ** np.arange(d + 1)

    hi, lo = fit(degree), fit(degree - 1)
    return Extrapolation(float(hi[0]), float(lo[0]), float(abs(hi[0] - lo[0])), hi, lo, degree)


@dataclass(frozen=True)
class ZSummary:
    """Distribution of standardised residuals z = (measured - predicted) / se over many runs.

    Attributes
    ----------
    n : int
    mean, sd : float
        Sample mean and standard deviation (ddof = 1).
    ks_p : float
        p-value of the Kolmogorov-Smirnov test of z against N(0, 1).
    max_abs : float
    """

    n: int
    mean: float
    sd: float
    ks_p: float
    max_abs: float

    def off(self, sd_max: float = 1.3, mean_max: float = 0.5) -> bool:
        """True when the distribution is far from N(0, 1): sd > sd_max or |mean| > mean_max."""
        return self.sd > sd_max or abs(self.mean) > mean_max


def z_summary(z) -> ZSummary:
    """Mean, sd and the KS test against N(0, 1) of standardised residuals."""
    z = np.asarray(z, dtype=np.float64).ravel()
    z = z[np.isfinite(z)]
    if z.size < 2:
        raise ValueError("need at least 2 finite z values")
    ks = _st.kstest(z, "norm")
    return ZSummary(int(z.size), float(z.mean()), float(z.std(ddof=1)), float(ks.pvalue), float(np.abs(z).max()))
