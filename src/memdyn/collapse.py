"""Recursive training: fit -> sample -> refit, over many independent replicates.

Generation g holds a data set of N points; a model P_g is fitted to it; the next data set is N
draws from nu_g = (1 - alpha) P_g + alpha mu_0 (``alpha``: fraction of fresh real data). Strategy
``"replace"`` fits each generation's model to the newest data only; ``"accumulate"`` fits it to
all data drawn so far.

* :func:`exact_fit`: the model is the empirical measure itself (a model that memorizes its
  training points). Over the atoms s_1..s_n of mu_0 this is multi-type Wright-Fisher: with
  alpha = 0 it collapses to one atom (a Dirac mass) almost surely.
* :func:`gaussian_refit`: a Gaussian fitted by maximum likelihood (ddof 0) or unbiasedly (ddof 1).

Randomness: replicates are grouped in blocks of :data:`REPLICATE_BLOCK`; block b uses the numpy
generator spawned from ``SeedSequence(seed)`` with key b, so replicate r's history depends only on
(seed, r), not on how many replicates run beside it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "REPLICATE_BLOCK", "ExactFitHistory", "exact_fit", "GaussianHistory", "gaussian_refit", "kde_refit",
    "MixtureHistory", "mixture_refit", "wright_fisher_chain",
]

REPLICATE_BLOCK = 256
_STRATEGIES = ("replace", "accumulate")


def _check_common(alpha: float, generations: int, replicates: int, seed: int) -> None:
    if not (0.0 <= alpha <= 1.0):
        raise ValueError(f"alpha (fraction of fresh data) must be in [0, 1], got {alpha}")
    if generations < 1:
        raise ValueError(f"generations must be >= 1, got {generations}")
    if replicates < 1:
        raise ValueError(f"replicates must be >= 1, got {replicates}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")


def _blocks(seed: int, replicates: int):
    """(lo, hi, rng) per block of replicates. Every block simulates REPLICATE_BLOCK replicates
    (the surplus of the last one is dropped), so a replicate's draws never depend on how many
    replicates follow it."""
    ss = np.random.SeedSequence(seed)
    n_blocks = -(-replicates // REPLICATE_BLOCK)
    for b, child in enumerate(ss.spawn(n_blocks)):
        lo = b * REPLICATE_BLOCK
        yield lo, min(replicates, lo + REPLICATE_BLOCK), np.random.default_rng(child)


def _keep(lo, hi):
    return slice(0, hi - lo)


@dataclass
class ExactFitHistory:
    """Per-generation observables of exact-fit recursive training, shape (replicates, G + 1)
    (column g: generation g, column 0 the initial data).

    Attributes
    ----------
    homozygosity : sum_i mu_g(i)^2 (probability that two draws coincide)
    support : number of atoms with mu_g(i) > 0
    entropy : -sum_i mu_g(i) ln mu_g(i) (nats)
    distance : total variation 1/2 sum_i |mu_g(i) - mu_0(i)|
    collapse_time : first generation with a single atom (-1: not collapsed), shape (replicates,)
    collapse_atom : that atom (-1: not collapsed), shape (replicates,)
    final_counts : counts of the last generation, shape (replicates, n_atoms)
    """

    homozygosity: np.ndarray
    support: np.ndarray
    entropy: np.ndarray
    distance: np.ndarray
    collapse_time: np.ndarray
    collapse_atom: np.ndarray
    final_counts: np.ndarray
    N: int

    @property
    def heterozygosity(self) -> np.ndarray:
        """H_g = 1 - sum_i mu_g(i)^2."""
        return 1.0 - self.homozygosity


def exact_fit(weights, N: int, generations: int, replicates: int, *, alpha: float = 0.0,
              strategy: str = "replace", init=None, seed: int = 0) -> ExactFitHistory:
    """Recursive training of a model that reproduces its training data exactly.

    Each generation draws N points: with probability ``alpha`` a fresh draw from mu_0, otherwise
    a uniformly chosen point of the current training set (replace: the last generation's N
    points; accumulate: every point drawn so far), i.e. the new counts are
    Multinomial(N, (1 - alpha) mu_g + alpha mu_0). With ``alpha = 0`` and ``replace`` this is
    Wright-Fisher resampling: E[H_g] = (1 - 1/N)^g H_0 and the process collapses onto atom i with
    probability mu_0(i).

    Parameters
    ----------
    weights : array_like, shape (n_atoms,)
        mu_0 over the training points (non-negative, normalised here). The initial data set is
        N points laid out deterministically in proportion to the weights (largest remainders), so
        mu_g(0) = mu_0 up to rounding to multiples of 1/N.
    N : int
        Data-set size per generation (>= 1).
    generations, replicates : int
    alpha : float in [0, 1]
    strategy : "replace" or "accumulate"
    init : array_like of int, shape (n_atoms,), optional
        Counts of the first training set (summing to N); default: the real data, laid out as
        above. Fresh data still come from mu_0 (``weights``): starting away from mu_0 shows the
        relaxation E mu_g - mu_0 = (1 - alpha)^g (mu_init - mu_0) under ``replace``.
    seed : int

    Returns
    -------
    ExactFitHistory
    """
    w = np.asarray(weights, dtype=np.float64).ravel()
    if w.size == 0:
        raise ValueError("weights (the training set) is empty")
    if np.any(w < 0) or not np.all(np.isfinite(w)) or w.sum() <= 0:
        raise ValueError("weights must be finite, >= 0 and not all 0")
    if N < 1:
        raise ValueError(f"N (data-set size) must be >= 1, got {N}")
    if strategy not in _STRATEGIES:
        raise ValueError(f"strategy must be one of {_STRATEGIES}, got {strategy!r}")
    _check_common(alpha, generations, replicates, seed)
    w = w / w.sum()
    n = w.size
    if init is None:
        init = initial_counts(w, N)
    else:
        init = np.asarray(init)
        if init.shape != (n,) or not np.issubdtype(init.dtype, np.integer) or np.any(init < 0) or init.sum() != N:
            raise ValueError(f"init must be {n} non-negative integer counts summing to N={N}, got {init.tolist()}")
        init = init.astype(np.int64)
    G = generations
    out = {k: np.empty((replicates, G + 1)) for k in ("homozygosity", "support", "entropy", "distance")}
    ctime = np.full(replicates, -1, dtype=np.int64)
    catom = np.full(replicates, -1, dtype=np.int64)
    final = np.empty((replicates, n), dtype=np.int64)
    for lo, hi, rng in _blocks(seed, replicates):
        R, k = REPLICATE_BLOCK, _keep(lo, hi)
        # counts are kept over the block's live atoms only (those some replicate still holds, or
        # all atoms when fresh data can bring any back), so late generations cost O(live), not O(n)
        live = np.arange(n) if alpha > 0 else np.flatnonzero(init)
        counts = np.tile(init[live], (R, 1))
        _record(out, lo, hi, 0, counts[k], N, w[live])
        pool = counts.copy()  # accumulate: counts of every point drawn so far
        for g in range(1, G + 1):
            src = counts if strategy == "replace" else pool
            p = src / src.sum(1, keepdims=True)
            if alpha > 0:
                p = (1 - alpha) * p + alpha * w
            counts = rng.multinomial(N, p)
            if strategy == "accumulate":
                pool += counts
            elif alpha == 0:
                alive = counts.any(axis=0)
                if not alive.all():
                    live, counts = live[alive], counts[:, alive]
            _record(out, lo, hi, g, counts[k], N, w[live])
            single = (out["support"][lo:hi, g] == 1) & (ctime[lo:hi] < 0)
            if single.any():
                ctime[lo:hi][single] = g
                catom[lo:hi][single] = live[counts[k][single].argmax(1)]
        final[lo:hi] = 0
        final[lo:hi, live] = counts[k]
    return ExactFitHistory(out["homozygosity"], out["support"], out["entropy"], out["distance"], ctime, catom,
                           final, N)


def initial_counts(w: np.ndarray, N: int) -> np.ndarray:
    """N points over atoms in proportion to ``w``, rounded by largest remainders."""
    raw = w * N
    counts = np.floor(raw).astype(np.int64)
    short = N - counts.sum()
    if short > 0:
        counts[np.argsort(-(raw - counts), kind="stable")[:short]] += 1
    return counts


def _record(out, lo, hi, g, counts, N, mu0) -> None:
    """Observables of generation g from counts (R, n) (:func:`memdyn._collapse_kernel.record`)."""
    from ._collapse_kernel import record

    record(counts, N, mu0, *(out[k][lo:hi, g] for k in ("homozygosity", "support", "entropy", "distance")))


@dataclass
class GaussianHistory:
    """Fitted parameters per generation, shape (replicates, G + 1); column 0 is the fit to the
    initial real data set."""

    mean: np.ndarray
    std: np.ndarray

    def distance(self, mean: float = 0.0, std: float = 1.0) -> np.ndarray:
        """2-Wasserstein distance of each generation's fit to the real N(mean, std^2):
        sqrt((m_g - mean)^2 + (s_g - std)^2)."""
        return np.sqrt((self.mean - mean) ** 2 + (self.std - std) ** 2)


def gaussian_refit(M: int, generations: int, replicates: int, *, mean: float = 0.0, std: float = 1.0,
                   alpha: float = 0.0, strategy: str = "replace", ddof: int = 0, seed: int = 0) -> GaussianHistory:
    """Recursive Gaussian refits: fit N(m_g, s_g^2) to the data, draw M new points, repeat.

    With ``replace``, ``alpha = 0`` and the MLE (ddof 0): E[s_g^2] = s_0^2 (1 - 1/M)^g exactly
    (conditionally on the initial fit) and the median of s_g decays like e^{-g/M}; with
    ``accumulate`` s_g stays near the truth.

    Parameters
    ----------
    M : int
        Points drawn per generation (>= 2).
    mean, std : float
        The real distribution N(mean, std^2) (std > 0): the initial data and the fresh data.
    alpha : float in [0, 1]
        Fraction of each generation's points drawn from the real distribution.
    strategy : "replace" or "accumulate"
    ddof : 0 (maximum likelihood) or 1 (unbiased)
    """
    if M < 2:
        raise ValueError(f"M (points per generation) must be >= 2, got {M}")
    if not std > 0:
        raise ValueError(f"std must be > 0, got {std}")
    if strategy not in _STRATEGIES:
        raise ValueError(f"strategy must be one of {_STRATEGIES}, got {strategy!r}")
    if ddof not in (0, 1):
        raise ValueError(f"ddof must be 0 or 1, got {ddof}")
    _check_common(alpha, generations, replicates, seed)
    G = generations
    means = np.empty((replicates, G + 1))
    stds = np.empty((replicates, G + 1))
    for lo, hi, rng in _blocks(seed, replicates):
        R, k = REPLICATE_BLOCK, _keep(lo, hi)
        x = rng.normal(mean, std, (R, M))
        cnt, m, m2 = M, x.mean(1), ((x - x.mean(1, keepdims=True)) ** 2).sum(1)
        for g in range(G + 1):
            # (count, mean, sum of squared deviations): two-pass per batch and Chan's merge, because
            # s_g^2 falls far below mean^2 and a raw second moment would cancel catastrophically
            var = m2 / (cnt - ddof)
            means[lo:hi, g], stds[lo:hi, g] = m[k], np.sqrt(var[k])
            if g == G:
                break
            z = rng.standard_normal((R, M))
            if alpha > 0:
                x = m[:, None] + np.sqrt(var)[:, None] * z
                fresh = rng.random((R, M)) < alpha
                x[fresh] = rng.normal(mean, std, int(fresh.sum()))
                bm = x.mean(1)
                bm2 = ((x - bm[:, None]) ** 2).sum(1)
            else:  # statistics of m + s z from z itself: exact even when s << ulp(m)
                zbar = z.mean(1)
                bm = m + np.sqrt(var) * zbar
                bm2 = var * ((z - zbar[:, None]) ** 2).sum(1)
            if strategy == "replace":
                cnt, m, m2 = M, bm, bm2
            else:
                delta = bm - m
                m2 = m2 + bm2 + delta**2 * cnt * M / (cnt + M)
                m = m + delta * M / (cnt + M)
                cnt += M
    return GaussianHistory(means, stds)


def wright_fisher_chain(N: int, K: int):
    """The exact K-type Wright-Fisher chain on compositions of N (absorbing at the K monomorphic
    states), for checking :func:`exact_fit` against absorbing-chain values.

    Returns
    -------
    chain : memdyn.markov.MarkovChain
    states : ndarray, shape (n_states, K)
        The composition (counts per type) of each state.
    """
    from itertools import combinations

    from scipy.special import gammaln

    from .markov import MarkovChain

    if N < 1 or K < 2:
        raise ValueError(f"need N >= 1 and K >= 2, got N={N}, K={K}")
    states = []
    for bars in combinations(range(N + K - 1), K - 1):
        edges = (-1, *bars, N + K - 1)
        states.append([edges[j + 1] - edges[j] - 1 for j in range(K)])
    S = np.asarray(states, dtype=np.int64)
    if len(S) > 5000:
        raise ValueError(f"{len(S)} states: too many for the exact chain (use a smaller N or K)")
    p = S / N
    # log multinomial pmf of every target composition from every source composition (0 log 0 = 0)
    log_coef = gammaln(N + 1) - gammaln(S + 1).sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(S[None, :, :] > 0, S[None, :, :] * np.log(p)[:, None, :], 0.0)
    P = np.exp(log_coef[None, :] + terms.sum(2))
    P /= P.sum(1, keepdims=True)
    return MarkovChain(P), S


def kde_refit(M: int, generations: int, replicates: int, *, bandwidth: float, mean: float = 0.0, std: float = 1.0,
              alpha: float = 0.0, strategy: str = "replace", seed: int = 0) -> GaussianHistory:
    """Recursive kernel-density refits: each generation draws M points from the Gaussian KDE of
    the training data (a uniformly chosen data point plus ``bandwidth`` times a standard normal);
    with probability ``alpha`` a point is fresh real data instead.

    ``replace``: the next training data are the M new points. The MLE variance then obeys
    E[s_{g+1}^2 | data] = (1 - 1/M)(s_g^2 + h^2) exactly, so with a fixed bandwidth the spread
    settles at (M - 1) h^2 instead of collapsing.
    ``accumulate``: the new points join all earlier ones (n_g = M (g + 1) points). With
    alpha = 0 the pool's MLE variance obeys, exactly in expectation,
    E[S_{g+1} | S_g] = (n + q)/(n + M) S_g + q/(n + M) h^2, q = M - 1 + n/(n + M), n = n_g.

    Returns
    -------
    GaussianHistory
        Mean and MLE standard deviation of each generation's training data.
    """
    if M < 2:
        raise ValueError(f"M (points per generation) must be >= 2, got {M}")
    if not bandwidth > 0:
        raise ValueError(f"bandwidth must be > 0, got {bandwidth}")
    if not std > 0:
        raise ValueError(f"std must be > 0, got {std}")
    if strategy not in _STRATEGIES:
        raise ValueError(f"strategy must be one of {_STRATEGIES}, got {strategy!r}")
    _check_common(alpha, generations, replicates, seed)
    G = generations
    means, stds = np.empty((replicates, G + 1)), np.empty((replicates, G + 1))
    for lo, hi, rng in _blocks(seed, replicates):
        R, k = REPLICATE_BLOCK, _keep(lo, hi)
        x = rng.normal(mean, std, (R, M))
        for g in range(G + 1):
            means[lo:hi, g], stds[lo:hi, g] = x.mean(1)[k], x.std(1)[k]
            if g == G:
                break
            parents = np.take_along_axis(x, rng.integers(0, x.shape[1], (R, M)), axis=1)
            new = parents + bandwidth * rng.standard_normal((R, M))
            if alpha > 0:
                fresh = rng.random((R, M)) < alpha
                new[fresh] = rng.normal(mean, std, int(fresh.sum()))
            x = new if strategy == "replace" else np.concatenate([x, new], axis=1)
    return GaussianHistory(means, stds)


@dataclass
class MixtureHistory:
    """Fitted 1-D Gaussian mixtures per generation: arrays of shape (replicates, G + 1, K) for
    ``weights``, ``means``, ``stds``, and the number of modes (local maxima) of the fitted density,
    shape (replicates, G + 1)."""

    weights: np.ndarray
    means: np.ndarray
    stds: np.ndarray
    modes: np.ndarray


def mixture_refit(M: int, generations: int, replicates: int, *, centers=(-2.0, 2.0), std: float = 0.5,
                  alpha: float = 0.0, strategy: str = "replace", em_iterations: int = 10,
                  seed: int = 0) -> MixtureHistory:
    """Recursive refits of a K-component 1-D Gaussian mixture by EM.

    The real distribution is an equal mixture of N(c_k, std^2) over ``centers``; each generation
    fits a K-component mixture to the training data (EM warm-started from the previous fit,
    ``em_iterations`` steps) and draws M new points from it, each replaced with probability
    ``alpha`` by a fresh real point. ``replace``: the M new points are the next training data;
    ``accumulate``: they join all earlier ones (EM then runs on M (g + 1) points). Under
    ``replace`` with alpha = 0, modes merge and disappear as the finite-sample noise of the
    refits accumulates; accumulating or fresh data hold them.
    """
    c = np.asarray(centers, dtype=np.float64).ravel()
    K = c.size
    if K < 1 or M < 2 * K:
        raise ValueError(f"need at least one center and M >= 2K, got K={K}, M={M}")
    if not std > 0:
        raise ValueError(f"std must be > 0, got {std}")
    if strategy not in _STRATEGIES:
        raise ValueError(f"strategy must be one of {_STRATEGIES}, got {strategy!r}")
    _check_common(alpha, generations, replicates, seed)
    G = generations
    W, MU, SD = (np.empty((replicates, G + 1, K)) for _ in range(3))
    modes = np.empty((replicates, G + 1), dtype=np.int64)
    t = np.linspace(0.0, 1.0, 600)
    for lo, hi, rng in _blocks(seed, replicates):
        R, k = REPLICATE_BLOCK, _keep(lo, hi)
        x = c[rng.integers(0, K, (R, M))] + std * rng.standard_normal((R, M))
        w, mu, sd = np.full((R, K), 1.0 / K), np.tile(c, (R, 1)), np.full((R, K), std)
        for g in range(G + 1):
            w, mu, sd = _em(x, w, mu, sd, em_iterations)
            W[lo:hi, g], MU[lo:hi, g], SD[lo:hi, g] = w[k], mu[k], sd[k]
            lo_x, hi_x = (mu - 5 * sd).min(1, keepdims=True), (mu + 5 * sd).max(1, keepdims=True)
            grid = lo_x + (hi_x - lo_x) * t[None, :]  # per replicate: the fit may have drifted
            dens = (w[:, None, :] * np.exp(-0.5 * ((grid[:, :, None] - mu[:, None, :]) / sd[:, None, :]) ** 2)
                    / sd[:, None, :]).sum(2)
            d = np.diff(dens, axis=1)
            modes[lo:hi, g] = ((d[:, :-1] > 0) & (d[:, 1:] <= 0)).sum(1)[k]
            if g == G:
                break
            comp = (rng.random((R, M, 1)) > np.cumsum(w, 1)[:, None, :]).sum(2).clip(0, K - 1)
            new = np.take_along_axis(mu, comp, 1) + np.take_along_axis(sd, comp, 1) * rng.standard_normal((R, M))
            if alpha > 0:
                fresh = rng.random((R, M)) < alpha
                n_f = int(fresh.sum())
                new[fresh] = c[rng.integers(0, K, n_f)] + std * rng.standard_normal(n_f)
            x = new if strategy == "replace" else np.concatenate([x, new], axis=1)
    return MixtureHistory(W, MU, SD, modes)


def _em(x, w, mu, sd, iterations):
    """Vectorised EM for 1-D Gaussian mixtures, x (R, M), parameters (R, K)."""
    floor = 1e-3 * (x.std(1, keepdims=True) + 1e-12)
    for _ in range(iterations):
        z = (x[:, :, None] - mu[:, None, :]) / sd[:, None, :]
        logp = np.log(np.maximum(w, 1e-300))[:, None, :] - np.log(sd)[:, None, :] - 0.5 * z * z
        logp -= logp.max(2, keepdims=True)
        r = np.exp(logp)
        r /= r.sum(2, keepdims=True)
        nk = r.sum(1) + 1e-12
        w = nk / x.shape[1]
        mu = (r * x[:, :, None]).sum(1) / nk
        var = (r * (x[:, :, None] - mu[:, None, :]) ** 2).sum(1) / nk
        sd = np.maximum(np.sqrt(var), floor)
    return w, mu, sd
