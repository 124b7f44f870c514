"""Traces -> episodes -> dwell-time statistics, shared by simulations and the
memorization monitor.

A trace is a matrix of integer state labels, one row per chain (or probe) and one column per
observation (step or checkpoint); -1 means "no state" (e.g. before a chain first enters any core
set). An episode is a maximal run of one state in one row. Its length is counted in observations.
An episode that is already running at the first observation is *left-censored*; one still
running at the last observation is *right-censored*.

Estimators use censored episodes instead of dropping them:

* :func:`exponential_fit`: maximum likelihood of an exponential (geometric, in discrete time)
  dwell law with right censoring: rate = (number of completed episodes) / (total exposure);
  left-censored episodes enter through memorylessness (their observed part is a draw of the same
  law);
* :func:`kaplan_meier`: the survival function without a parametric law (Greenwood errors);
  left-censored episodes are excluded there, since their start is unknown.

:func:`core_sets` turns raw labels with gaps into milestoned states: a chain keeps the state of
the last core it entered until it enters another one, which removes the flicker of a bare
threshold near the edge of a well.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Episodes",
    "detect",
    "core_sets",
    "StreamingDetector",
    "ExponentialFit",
    "Survival",
    "ExponentialTest",
    "exponential_fit",
    "kaplan_meier",
    "coefficient_of_variation",
    "exponential_test",
]


@dataclass
class Episodes:
    """Episodes of a trace, one entry per episode, ordered by (chain, start).

    Attributes
    ----------
    chain, state, start, end : ndarray of int64
        ``end`` is exclusive: the episode covers observations start .. end - 1.
    left_censored, right_censored : ndarray of bool
    n_obs : int
        Observations per chain.
    """

    chain: np.ndarray
    state: np.ndarray
    start: np.ndarray
    end: np.ndarray
    left_censored: np.ndarray
    right_censored: np.ndarray
    n_obs: int

    @property
    def length(self) -> np.ndarray:
        return self.end - self.start

    def __len__(self) -> int:
        return int(self.chain.size)

    def dwell_times(self, state: int, *, left_censored: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Lengths of the episodes in ``state`` and whether each is right-censored.

        ``left_censored=False`` drops episodes already running at the first observation (their
        start is unknown); keep them only for memoryless (exponential) estimators.
        """
        sel = self.state == state
        if not left_censored:
            sel &= ~self.left_censored
        return self.length[sel], self.right_censored[sel]

    def transition_counts(self, n_states: int) -> np.ndarray:
        """``counts[i, j]``: episodes in state i directly followed by an episode in state j in the
        same chain (with no unlabelled gap between them)."""
        same = (self.chain[1:] == self.chain[:-1]) & (self.end[:-1] == self.start[1:])
        counts = np.zeros((n_states, n_states), dtype=np.int64)
        np.add.at(counts, (self.state[:-1][same], self.state[1:][same]), 1)
        return counts

    def occupancy(self, n_states: int) -> np.ndarray:
        """Number of observations spent in each state (all chains)."""
        return np.bincount(self.state, weights=self.length, minlength=n_states)[:n_states]

    def fraction_of_time(self, n_states: int) -> np.ndarray:
        """Fraction of labelled observations spent in each state."""
        occ = self.occupancy(n_states)
        return occ / max(occ.sum(), 1)

    def transition_rates(self, n_states: int) -> np.ndarray:
        """Jump rates i -> j per observation: transitions out of i to j / time spent in i."""
        occ = self.occupancy(n_states)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(occ[:, None] > 0, self.transition_counts(n_states) / occ[:, None], 0.0)

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame({"chain": self.chain, "state": self.state, "start": self.start, "end": self.end,
                             "length": self.length, "left_censored": self.left_censored,
                             "right_censored": self.right_censored})


def _as_trace(labels) -> np.ndarray:
    L = np.asarray(labels)
    if L.ndim == 1:
        L = L[None, :]
    if L.ndim != 2:
        raise ValueError(f"labels must be 1-D (one chain) or 2-D (chains x observations), got {L.ndim}-D")
    if L.shape[1] == 0 or L.shape[0] == 0:
        raise ValueError("the trace is empty: need at least one chain and one observation")
    if not np.issubdtype(L.dtype, np.integer):
        if not np.all(np.isfinite(L)) or np.any(L != np.round(L)):
            raise ValueError("labels must be integers (state indices, -1 for no state)")
        L = L.astype(np.int64)
    if L.min() < -1:
        raise ValueError(f"labels must be >= -1 (-1: no state), got {L.min()}")
    return L.astype(np.int64, copy=False)


def detect(labels) -> Episodes:
    """All episodes of a trace of state labels (chains x observations), in one vectorised pass."""
    L = _as_trace(labels)
    C, T = L.shape
    change = np.ones((C, T), dtype=bool)
    change[:, 1:] = L[:, 1:] != L[:, :-1]
    chain, start = np.nonzero(change)
    # a run ends where the next run of the same chain starts, or at T
    end = np.empty_like(start)
    end[:-1] = np.where(chain[1:] == chain[:-1], start[1:], T)
    end[-1:] = T
    state = L[chain, start]
    keep = state >= 0
    chain, start, end, state = chain[keep], start[keep], end[keep], state[keep]
    return Episodes(chain, state, start, end, start == 0, end == T, T)


def core_sets(labels) -> np.ndarray:
    """Milestoning: replace -1 (outside every core) by the last core entered; -1 remains only
    before a chain's first core entry."""
    L = _as_trace(labels)
    idx = np.where(L >= 0, np.arange(L.shape[1])[None, :], -1)
    last = np.maximum.accumulate(idx, axis=1)
    out = np.take_along_axis(L, np.maximum(last, 0), axis=1)
    out[last < 0] = -1
    return out


class StreamingDetector:
    """Episode detection one observation at a time, in O(chains) memory.

    Feed the labels of every chain at each observation with :meth:`update`; completed episodes
    accumulate in :attr:`closed` (or are returned by :meth:`update` for immediate use); call
    :meth:`finish` after the last observation. The result equals :func:`detect` on the whole trace.
    """

    def __init__(self, n_chains: int):
        if n_chains < 1:
            raise ValueError(f"n_chains must be >= 1, got {n_chains}")
        self.n_chains = int(n_chains)
        self.t = 0
        self.current = np.full(self.n_chains, -1, dtype=np.int64)
        self.since = np.zeros(self.n_chains, dtype=np.int64)
        self.closed: list[tuple[np.ndarray, ...]] = []

    def update(self, labels) -> Episodes | None:
        """Add one observation; returns the episodes that this observation closed (or None)."""
        lab = np.array(labels, dtype=np.int64).ravel()  # a copy: the caller may reuse its array
        if lab.size != self.n_chains:
            raise ValueError(f"expected {self.n_chains} labels, got {lab.size}")
        if lab.size and lab.min() < -1:
            raise ValueError("labels must be >= -1")
        out = None
        if self.t > 0:
            changed = lab != self.current
            ended = changed & (self.current >= 0)
            if ended.any():
                c = np.flatnonzero(ended)
                out = (c, self.current[c], self.since[c], np.full(c.size, self.t), self.since[c] == 0,
                       np.zeros(c.size, dtype=bool))
                self.closed.append(out)
            self.since[changed] = self.t
        self.current = lab
        self.t += 1
        return None if out is None else Episodes(*out, n_obs=self.t)

    def finish(self) -> Episodes:
        """Close the running episodes (right-censored) and return all episodes in
        (chain, start) order."""
        if self.t == 0:
            raise ValueError("no observation was added")
        running = self.current >= 0
        c = np.flatnonzero(running)
        parts = self.closed + [(c, self.current[c], self.since[c], np.full(c.size, self.t), self.since[c] == 0,
                                np.ones(c.size, dtype=bool))]
        cols = [np.concatenate([p[j] for p in parts]) for j in range(6)]
        order = np.lexsort((cols[2], cols[0]))
        return Episodes(*(col[order] for col in cols), n_obs=self.t)


@dataclass(frozen=True)
class ExponentialFit:
    """Result of :func:`exponential_fit`: rate and mean (in observations) with standard errors,
    the number of completed episodes and the total exposure."""

    rate: float
    rate_se: float
    mean: float
    mean_se: float
    events: int
    exposure: float


@dataclass(frozen=True)
class Survival:
    """Result of :func:`kaplan_meier`: at each distinct event time, P(length > t), its Greenwood
    standard error, the number at risk and the number of events."""

    time: np.ndarray
    survival: np.ndarray
    se: np.ndarray
    at_risk: np.ndarray
    events: np.ndarray


@dataclass(frozen=True)
class ExponentialTest:
    """Result of :func:`exponential_test`: KS statistic, Monte-Carlo p-value, coefficient of
    variation."""

    statistic: float
    pvalue: float
    cv: float


def exponential_fit(lengths, censored=None) -> ExponentialFit:
    """Maximum-likelihood exponential (memoryless) dwell law from possibly right-censored lengths.

    rate = d / sum(lengths), d = number of uncensored lengths; mean = 1 / rate, with
    se(rate) = rate / sqrt(d) and se(mean) = mean / sqrt(d) (observed information). Lengths are
    in observations (steps); in discrete time this is the geometric MLE of the exit probability.

    Returns
    -------
    ExponentialFit
    """
    x, cens = _lengths(lengths, censored)
    d = int(np.sum(~cens))
    if d == 0:
        raise ValueError("no completed (uncensored) episode: the exit rate cannot be estimated")
    exposure = float(x.sum())
    rate = d / exposure
    return ExponentialFit(rate, rate / math.sqrt(d), 1 / rate, 1 / rate / math.sqrt(d), d, exposure)


def kaplan_meier(lengths, censored=None) -> Survival:
    """Kaplan-Meier estimate of the survival function P(length > t) with Greenwood standard errors.

    Returns
    -------
    Survival
    """
    x, cens = _lengths(lengths, censored)
    times = np.unique(x[~cens])
    at_risk = np.array([np.sum(x >= t) for t in times], dtype=np.float64)
    events = np.array([np.sum((x == t) & ~cens) for t in times], dtype=np.float64)
    surv = np.cumprod(1 - events / at_risk)
    with np.errstate(divide="ignore", invalid="ignore"):
        green = np.cumsum(np.where(at_risk > events, events / (at_risk * (at_risk - events)), 0.0))
    return Survival(times, surv, surv * np.sqrt(green), at_risk, events)


def coefficient_of_variation(lengths) -> float:
    """std / mean of completed lengths: about 1 for an exponential law (exits memoryless)."""
    x = np.asarray(lengths, dtype=np.float64).ravel()
    if x.size < 2:
        raise ValueError("need at least 2 lengths")
    return float(x.std(ddof=1) / x.mean())


def exponential_test(lengths, *, seed: int = 0, n_mc: int = 999) -> ExponentialTest:
    """Kolmogorov-Smirnov test of completed lengths against an exponential law with fitted
    location 0 and fitted scale, with a Monte-Carlo p-value that accounts for the fitted
    parameter (scipy.stats.goodness_of_fit). Discrete lengths are compared after subtracting 1/2
    (a geometric law is an exponential rounded up)."""
    from scipy import stats

    raw = np.asarray(lengths, dtype=np.float64).ravel()
    if raw.size < 5:
        raise ValueError("need at least 5 completed lengths for the exponential test")
    x = raw - 0.5 if np.all(raw == np.round(raw)) else raw
    res = stats.goodness_of_fit(stats.expon, x, known_params={"loc": 0.0}, statistic="ks", n_mc_samples=n_mc,
                                rng=np.random.default_rng(seed))
    return ExponentialTest(float(res.statistic), float(res.pvalue), coefficient_of_variation(raw))


def _lengths(lengths, censored):
    x = np.asarray(lengths, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError("no episode lengths given")
    if np.any(x <= 0) or not np.all(np.isfinite(x)):
        raise ValueError("lengths must be finite and > 0")
    cens = np.zeros(x.size, dtype=bool) if censored is None else np.asarray(censored, dtype=bool).ravel()
    if cens.size != x.size:
        raise ValueError(f"censored must match lengths ({x.size}), got {cens.size}")
    return x, cens
