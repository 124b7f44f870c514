"""Measuring memorization episodes in real training as a referee would: replicated runs, a time
resolution at which the result no longer changes, and a window in which the process has settled.

Input is what :class:`memdyn.monitor.MemorizationMonitor` records, for any model it watches: per
training run, the core label of every probe at every checkpoint (probes x checkpoints; the index
of the training item whose core the probe is in, -1 outside every core, and optionally one label
for the free core), taken every ``spacing`` optimizer steps.

* :func:`bootstrap_over_runs`: intervals over independent training runs, with the probes resampled
  within each run (a two-level bootstrap), so run-to-run variance is in the error;
* :func:`resolution`: the mean memorizing episode length (in steps) from the same checkpoints
  thinned to coarser spacings (1, 4, 16 x by default). Sampling every s steps misses short exits
  and rounds lengths to multiples of s, so the mean drifts with s. It is *converged* when the two
  finest spacings agree within their errors (then the finest value is reported); otherwise it is
  extrapolated to spacing 0 (linear through the two finest spacings, the change to the quadratic
  through three as its stated bias) and flagged;
* :func:`stationarity`: where the counting window starts (the truncation that minimises the
  standard error of the remaining mean, White's MSER rule, on the f_mem curve) and whether the
  window's first and second halves agree (batch-means errors); otherwise flagged.

A measurement that is not converged or not settled is flagged for the claims that rest on it; the
protocol also asks for at least :data:`MIN_RUNS` independent runs per setting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from .claims import Z_TOL, claim, detectable
from .episodes import core_sets, detect

__all__ = ["MIN_RUNS", "Resolution", "Stationarity", "bootstrap_over_runs", "mean_episode_length", "resolution",
           "resolution_claim", "stationarity"]

#: independent training runs per setting the protocol asks for
MIN_RUNS = 5


def bootstrap_over_runs(runs: Sequence[np.ndarray], statistic: Callable[[list[np.ndarray]], np.ndarray | float], *,
                        n_boot: int = 400, seed: int = 0) -> np.ndarray:
    """Two-level bootstrap: ``n_boot`` values of ``statistic`` on resampled runs.

    Each replicate draws len(runs) runs with replacement and, within each drawn run, its probes
    (the first axis) with replacement, then applies ``statistic`` to the list of resampled runs.

    Returns
    -------
    ndarray, shape (n_boot,) or (n_boot, k) for a statistic with k values
    """
    if len(runs) < 1:
        raise ValueError("need at least one run")
    if n_boot < 2:
        raise ValueError(f"n_boot must be >= 2, got {n_boot}")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_boot):
        pick = rng.integers(0, len(runs), len(runs))
        out.append(np.asarray(statistic([runs[i][rng.integers(0, len(runs[i]), len(runs[i]))] for i in pick]),
                              dtype=np.float64))
    return np.stack(out)


def _per_probe(labels: np.ndarray, free: int | None) -> np.ndarray:
    """(probes, 2): each probe's time in memorizing core sets within the window (in observations) and
    its number of exits from them (memorizing episodes that end inside the window).

    Episodes already running at the first checkpoint count with their time inside the window and
    their exit, if any: for exits at a constant rate, (total time) / (exits) is the maximum likelihood
    mean episode length whatever the episodes' start, and dropping them would select against probes
    that stay long (with stays as long as the window, only the short-lived probes would start and end
    inside it). Episodes running at the last checkpoint count as time only; a probe's stretch before
    its first core is not an episode."""
    ep = detect(core_sets(labels))
    keep = ep.state >= 0 if free is None else (ep.state >= 0) & (ep.state != free)
    P = labels.shape[0]
    exposure = np.bincount(ep.chain[keep], weights=ep.length[keep], minlength=P)
    done = np.bincount(ep.chain[keep & ~ep.right_censored], minlength=P).astype(np.float64)
    return np.stack([exposure, done], axis=1)


def mean_episode_length(runs: Sequence[np.ndarray], spacing: float, *, free: int | None = None) -> float:
    """Mean memorizing episode length in steps over all runs' probes: the censoring-aware exponential
    MLE (total time in memorizing core sets within the window over the exits seen in it) times the
    checkpoint spacing (NaN when no episode ended)."""
    tot = sum(_per_probe(np.asarray(r), free).sum(axis=0) for r in runs)
    return float(spacing) * tot[0] / tot[1] if tot[1] > 0 else math.nan


@dataclass(frozen=True)
class Resolution:
    """The mean episode length against the checkpoint spacing (see :func:`resolution`).

    Attributes
    ----------
    spacings : ndarray
        Steps between the checkpoints used, finest first.
    mean, se : ndarray
        Mean memorizing episode length (steps) at each spacing, and its standard error (bootstrap
        over runs and probes).
    converged : bool
        The two finest spacings agree: |mean_0 - mean_1| <= Z_TOL * se of their difference.
    value, value_se : float
        The finest spacing's mean when converged; else the linear extrapolation to spacing 0 through
        the two finest spacings (with its bootstrap error).
    bias : float
        0 when converged; else the change from the linear to the quadratic extrapolation through the
        three finest spacings (the extrapolation's stated bias; NaN with only two spacings).
    difference_z, difference_se : float
        (mean_1 - mean_0) / its standard error, and that standard error (steps).
    exits : ndarray
        Memorizing episodes that ended inside the window at each spacing (all runs): the mean's
        relative error is about 1 / sqrt(exits) when the probes are alike.
    boot : ndarray (n_boot, spacings)
        Bootstrap draws of ``mean`` (NaN rows where a draw had no completed episode).
    value_boot : ndarray
        Bootstrap draws of ``value``. Runs and probes are drawn in the same order for every call with
        the same seed and the same numbers of runs and probes, so draws of two settings measured on
        the same runs are paired: the spread of their difference is its standard error.
    """

    spacings: np.ndarray
    mean: np.ndarray
    se: np.ndarray
    converged: bool
    value: float
    value_se: float
    bias: float
    difference_z: float
    difference_se: float
    exits: np.ndarray
    boot: np.ndarray
    value_boot: np.ndarray


def resolution(runs: Sequence[np.ndarray], spacing: float, *, factors: Sequence[int] = (1, 4, 16),
               free: int | None = None, n_boot: int = 400, seed: int = 0) -> Resolution:
    """Mean memorizing episode length at several checkpoint spacings, and whether it has converged.

    Parameters
    ----------
    runs : sequence of ndarray (probes x checkpoints)
        Core labels per independent training run at the finest spacing (raw: -1 outside every core;
        core sets are applied after thinning, as a coarser monitor would).
    spacing : float
        Steps between the given checkpoints (> 0).
    factors : sequence of int
        Thinning factors (>= 2 distinct, increasing from 1): the spacings are ``spacing * factor``.
    free : int, optional
        The label of the free (non-memorizing) core, whose episodes are not memorization.
    n_boot, seed
        The bootstrap over runs and probes (:func:`bootstrap_over_runs`).
    """
    f = [int(v) for v in factors]
    if len(f) < 2 or f[0] != 1 or any(b <= a for a, b in zip(f, f[1:])):
        raise ValueError(f"factors must start at 1 and increase, at least two of them, got {list(factors)}")
    if not spacing > 0:
        raise ValueError(f"spacing must be > 0, got {spacing}")
    spacings = float(spacing) * np.asarray(f, dtype=np.float64)
    # per run, per probe: exposure and completed episodes at every spacing (columns 2j, 2j + 1), so that
    # the bootstrap resamples sums instead of detecting episodes again
    stats = [np.concatenate([_per_probe(np.asarray(r)[:, ::k], free) for k in f], axis=1) for r in runs]

    def stat(rs):
        tot = np.sum([r.sum(axis=0) for r in rs], axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            return spacings * tot[0::2] / np.where(tot[1::2] > 0, tot[1::2], np.nan)

    mean = np.asarray(stat(stats))
    exits = np.sum([r.sum(axis=0) for r in stats], axis=0)[1::2]
    if not np.all(np.isfinite(mean)):
        raise ValueError(f"no completed memorizing episode at spacing {spacings[~np.isfinite(mean)][0]:g}: the window "
                         "is too short or nothing is memorized")
    boot = bootstrap_over_runs(stats, stat, n_boot=n_boot, seed=seed)
    boot = np.where(np.all(np.isfinite(boot), axis=1, keepdims=True), boot, np.nan)  # keep rows: draws stay paired
    ok = np.all(np.isfinite(boot), axis=1)
    se = boot[ok].std(axis=0, ddof=1)
    d = boot[ok, 1] - boot[ok, 0]
    d_se = float(d.std(ddof=1))
    z = float((mean[1] - mean[0]) / d_se) if d_se > 0 else math.copysign(math.inf, mean[1] - mean[0])
    converged = abs(mean[1] - mean[0]) <= Z_TOL * d_se
    if converged:
        return Resolution(spacings, mean, se, True, float(mean[0]), float(se[0]), 0.0, z, d_se, exits, boot, boot[:, 0])

    def linear(m):  # through the two finest spacings, at spacing 0
        return m[..., 0] - spacings[0] * (m[..., 1] - m[..., 0]) / (spacings[1] - spacings[0])

    value = float(linear(mean))
    bias = math.nan
    if len(f) >= 3:
        c = np.polyfit(spacings[:3], mean[:3], 2)
        bias = abs(float(c[-1]) - value)
    value_se = float(np.std(linear(boot[ok]), ddof=1))
    return Resolution(spacings, mean, se, False, value, value_se, bias, z, d_se, exits, boot, linear(boot))


def resolution_claim(id: str, what: str, fine: float, fine_se: float, coarse: float, coarse_se: float, *,
                     fine_label: str, coarse_label: str, extra: str = ""):
    """The time resolution checked on a result: ``what`` measured from coarser checkpoints
    (``coarse``) against the finest (``fine``), two-sided, each with its own standard error. (A
    paired difference would detect the few steps by which a coarser spacing lengthens every episode,
    however small against what the experiment's claims can resolve.) Returns the
    :class:`~memdyn.claims.Claim`, whose detail states the shift it detects with 95 % power."""
    shift_se = math.hypot(fine_se, coarse_se)
    return claim(id, f"{what} from {coarse_label} - from {fine_label} (converged: they agree)", 0.0, coarse - fine,
                 shift_se, detail=(f"{fine:.3g} +- {fine_se:.2g} ({fine_label}) and {coarse:.3g} +- {coarse_se:.2g} "
                                   f"({coarse_label}); two-sided, each with its own error; detects with 95 % power a "
                                   f"shift of {detectable(shift_se):.2g}" + (f"; {extra}" if extra else "")))


@dataclass(frozen=True)
class Stationarity:
    """Where a counting window starts and whether the quantity has settled there (see :func:`stationarity`).

    Attributes
    ----------
    start : int
        Index of the window's first checkpoint (the MSER truncation point).
    halves : tuple of float
        Mean of the window's first and second halves.
    halves_se : tuple of float
        Their batch-means standard errors.
    z : float
        (second - first) / its standard error.
    settled : bool
        |z| <= Z_TOL.
    se : float
        The standard error of the difference of the halves.
    """

    start: int
    halves: tuple[float, float]
    halves_se: tuple[float, float]
    z: float
    settled: bool
    se: float


def _batch_se(x: np.ndarray, batches: int) -> float:
    """Standard error of the mean of a correlated series from ``batches`` batch means, their scatter
    taken about a line through them (b - 2 degrees of freedom): a drift inside the half then shows in
    the difference of the halves, not in the error that judges it (about the mean, a steady drift
    would inflate its own error and could never be more than ~5 errors away)."""
    means = np.array([b.mean() for b in np.array_split(x, batches)])
    k = np.arange(batches)
    resid = means - np.polyval(np.polyfit(k, means, 1), k)
    return float(math.sqrt(float(resid @ resid) / (batches - 2) / batches))


def stationarity(series, *, runs: Sequence[np.ndarray] | None = None, max_fraction: float = 0.5, batches: int = 8,
                 n_boot: int = 400, seed: int = 0) -> Stationarity:
    """The counting window of a monitored quantity (e.g. f_mem at every checkpoint, averaged over
    runs): it starts at the MSER truncation point d* = argmin over d <= max_fraction * n of
    sum_{i >= d} (x_i - mean_d)^2 / (n - d)^2 (White 1997: the start that minimises the squared standard
    error of the remaining mean, a transient at the start inflates it), and the quantity has settled
    when the window's two halves agree within Z_TOL standard errors.

    The halves' standard error comes, with ``runs``, from the two-level bootstrap over runs and
    probes (:func:`bootstrap_over_runs`): each probe's series is drawn whole, so its autocorrelation
    is in the error however long it is, and run-to-run variance too. Without runs it comes from
    ``batches`` batch means per half, their scatter taken about a line (so a drift is judged by the
    noise around it); each batch should then span several correlation times of the series.

    Parameters
    ----------
    series : array_like (checkpoints,)
    runs : sequence of ndarray (probes x checkpoints), optional
        The quantity per probe in each independent run (``series`` is then their mean, e.g. the
        memorized indicator of every probe, whose mean is f_mem).
    max_fraction : float
        Largest share of the series that may be cut as burn-in (0 < max_fraction < 1).
    batches : int
        Batch means per half (>= 3), without runs; the series needs at least 4 * batches checkpoints.
    n_boot, seed
        The bootstrap, with runs.
    """
    x = np.asarray(series, dtype=np.float64).ravel()
    if not 0 < max_fraction < 1:
        raise ValueError(f"max_fraction must be in (0, 1), got {max_fraction}")
    if batches < 3:
        raise ValueError(f"batches must be >= 3, got {batches}")
    if x.size < 4 * batches or not np.all(np.isfinite(x)):
        raise ValueError(f"need a finite series of at least {4 * batches} checkpoints, got {x.size}")
    if runs is not None and any(np.asarray(r).ndim != 2 or np.asarray(r).shape[1] != x.size for r in runs):
        raise ValueError(f"runs must be (probes x {x.size}) arrays, one per run, like the series")
    n = x.size
    tail = np.arange(n, 0, -1)  # n - d for d = 0 .. n - 1
    s1 = np.cumsum(x[::-1])[::-1]
    s2 = np.cumsum((x * x)[::-1])[::-1]
    mser = (s2 - s1 * s1 / tail) / tail**2
    limit = min(int(max_fraction * n), n - 4 * batches)
    start = int(np.argmin(mser[: limit + 1]))
    w = x[start:]
    h = w.size // 2
    a, b = w[:h], w[h:]
    diff = float(b.mean() - a.mean())
    if runs is None:
        sa, sb = _batch_se(a, batches), _batch_se(b, batches)
        se = math.hypot(sa, sb)
    else:  # per probe: the means of its two halves; the bootstrap draws probes (both halves together)
        halves = [np.stack([np.asarray(r, dtype=np.float64)[:, start:start + h].mean(1),
                            np.asarray(r, dtype=np.float64)[:, start + h:].mean(1)], axis=1) for r in runs]
        draws = bootstrap_over_runs(halves, lambda rs: np.concatenate(rs).mean(axis=0), n_boot=n_boot, seed=seed)
        sa, sb = (float(v) for v in draws.std(axis=0, ddof=1))
        se = float(np.std(draws[:, 1] - draws[:, 0], ddof=1))
    z = diff / se if se > 0 else (0.0 if diff == 0 else math.copysign(math.inf, diff))
    return Stationarity(start, (float(a.mean()), float(b.mean())), (sa, sb), z, abs(z) <= Z_TOL, se)
