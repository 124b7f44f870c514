"""One-dimensional kinetic models along a reaction coordinate, estimated from trajectories.

A scalar coordinate r of a trajectory (the position of a 1-D chain, ln(d1/d2) of a probe of a
diffusion model) sampled at a fixed interval dt is modelled as a Smoluchowski diffusion

    dr = (D'(r) - D(r) F'(r)) dt + sqrt(2 D(r)) dW,

with free energy F(r) = -ln p(r) (in units of the temperature, p the stationary density) and a
position-dependent diffusion coefficient D(r) (coordinate^2 per unit of time). Discretised on
uniform bins of width h (Bicout & Szabo 1998), it is the continuous-time chain with nearest-
neighbour rates

    k(i -> i +- 1) = D(i +- 1/2) / h^2 * exp(-(F(i +- 1) - F(i)) / 2),

which satisfies detailed balance with pi_i ~ exp(-F_i). Its propagator over a lag tau is
P(tau) = exp(K tau); the model is the maximum-likelihood (F, D) for the transitions counted at
that lag, sum_ij C_ij ln P_ij(tau) (Hummer 2005, *New J. Phys.* 7, 34). The likelihood is
evaluated through the symmetric form S = diag(pi)^(1/2) K diag(pi)^(-1/2), a tridiagonal matrix
whose off-diagonal is D(i + 1/2) / h^2, and maximised with its exact gradient (the Daleckii-Krein
derivative of the matrix exponential).

The lag is chosen where the Markov model's implied time scales level off (Swope, Pitera & Suits
2004; Prinz et al. 2011): the smallest lag at which the slowest implied time scale t_2 =
-tau / ln lambda_2 of the bin-to-bin Markov model stays within ``rtol`` (relative) at every
larger lag tried. If they do not level off within the lags tried the coordinate is not Markovian at any of
them (a poor coordinate, or too fine bins), and the model says so (``converged`` False, with the
reason in ``diagnosis``): its predictions should not be used.

Temperature. For gradient dynamics dx = -U'(x) dt + sqrt(2 T g(x)) dW (g a state-dependent,
temperature-free noise shape; constant-step SGD is this at T = lr / B with time in lr x steps),
D(r) = T g(r) and F(r) = ln g(r) - (1/T) int U'/g, so

    U(r) = T (F(r) - ln D(r))

is free of the temperature (up to a constant); for constant D it is T F(r), the quasi-potential.
:meth:`ReactionCoordinateModel.at_temperature` keeps U and scales D in proportion to the
temperature, which predicts the kinetics at a temperature the model was not fitted at. Time is in
the unit of ``dt`` throughout: for SGD give dt = lr (time in lr x steps, in which the drift does
not depend on the learning rate) and divide a predicted time by the new lr to get steps.

Errors come from a bootstrap over trajectories (or over blocks of them, when there are few): each
replicate refits (F, D) to the counts of the resampled trajectories; and from the lag: the same fit
at the next longer lag, whose change of every prediction is added in quadrature as a systematic
error.
"""

from __future__ import annotations

import builtins
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy.linalg import eigh_tridiagonal
from scipy.optimize import minimize

__all__ = ["ReactionCoordinateModel", "ImpliedTimescales", "implied_timescales", "transition_counts"]


def _as_traces(traces) -> np.ndarray:
    x = np.asarray(traces, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise ValueError(f"traces: expected an array (n_trajectories, n_steps), got shape {x.shape}")
    if x.shape[1] < 2:
        raise ValueError(f"traces: each trajectory needs at least 2 samples, got {x.shape[1]}")
    if np.isinf(x).any():
        raise ValueError("traces: infinite values (NaN marks a missing sample, inf is not allowed)")
    if not np.isfinite(x).any():
        raise ValueError("traces: no finite sample")
    return x


def _edges(x: np.ndarray, bins, range_) -> np.ndarray:
    if np.ndim(bins) == 0:
        n = int(bins)
        if n < 3:
            raise ValueError(f"bins: at least 3 bins, got {bins}")
        lo, hi = (np.nanmin(x), np.nanmax(x)) if range_ is None else map(float, range_)
        if not hi > lo:
            raise ValueError(f"range: need lo < hi, got ({lo}, {hi})")
        return np.linspace(lo, hi, n + 1)
    e = np.asarray(bins, dtype=np.float64)
    if e.ndim != 1 or e.size < 4 or not np.all(np.diff(e) > 0):
        raise ValueError("bins: an integer, or at least 4 increasing edges")
    if not np.allclose(np.diff(e), e[1] - e[0], rtol=1e-6):
        raise ValueError("bins: the edges must be uniformly spaced (the Smoluchowski discretisation needs it)")
    return e


def _assign(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin index of each sample (values outside the edges go to the end bins; NaN -> -1)."""
    n = edges.size - 1
    idx = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, n - 1)
    return np.where(np.isfinite(x), idx, -1)


def transition_counts(states: np.ndarray, n: int, lag: int) -> np.ndarray:
    """Counts C_ij of i at step t and j at step t + lag over all t (sliding window) and trajectories.

    Parameters
    ----------
    states : ndarray of int, shape (n_trajectories, n_steps)
        Bin indices, -1 where the sample is missing (such pairs are skipped).
    n : int
        Number of bins.
    lag : int
        Lag in samples (>= 1).
    """
    a, b = states[:, :-lag].ravel(), states[:, lag:].ravel()
    ok = (a >= 0) & (b >= 0)
    return np.bincount(a[ok] * n + b[ok], minlength=n * n).reshape(n, n).astype(np.float64)


def _msm_timescales(C: np.ndarray, tau: float, k: int) -> np.ndarray:
    """Implied time scales of the reversible (symmetrised-count) Markov model of the counts."""
    X = C + C.T
    keep = X.sum(1) > 0
    X = X[np.ix_(keep, keep)]
    d = X.sum(1)
    sym = X / np.sqrt(np.outer(d, d))
    lam = np.sort(np.linalg.eigvalsh(sym))[::-1][1:k + 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = -tau / np.log(np.clip(lam, 1e-300, None))
    out = np.full(k, np.nan)
    out[:t.size] = np.where(lam > 0, t, np.nan)
    return out


@dataclass(frozen=True)
class ImpliedTimescales:
    """Implied time scales t_k(tau) = -tau / ln lambda_k(tau) of Markov models on bins, over lags.

    Attributes
    ----------
    lags : ndarray of int
        Lags in samples.
    timescales : ndarray, shape (len(lags), k)
        The k slowest implied time scales at each lag, in units of dt (NaN where lambda <= 0).
    dt : float
        Time per sample.
    """

    lags: np.ndarray
    timescales: np.ndarray
    dt: float

    def leveled_lag(self, rtol: float = 0.03) -> int | None:
        """The smallest lag from which on the slowest time scale stays within ``rtol`` of its value there.

        Every larger lag tried must agree (relative change at most ``rtol``), and at least one larger
        lag must exist; None if no lag qualifies.
        """
        t = self.timescales[:, 0]
        for i in range(len(self.lags) - 1):
            later = t[i + 1:]
            if np.isfinite(t[i]) and np.all(np.isfinite(later)) and np.all(np.abs(later - t[i]) <= rtol * t[i]):
                return int(self.lags[i])
        return None


def implied_timescales(traces, lags, *, bins=40, range=None, dt: float = 1.0, k: int = 3) -> ImpliedTimescales:
    """The implied time scales of bin-to-bin Markov models of a scalar coordinate, at several lags.

    A coordinate that is Markovian at lag tau has time scales that no longer change with the lag
    beyond tau; time scales that keep rising mean the binned coordinate still remembers more than
    its bin (a slow hidden variable, or bins too fine).

    Parameters
    ----------
    traces : array_like, shape (n_trajectories, n_steps)
        The coordinate sampled every dt; NaN marks missing samples.
    lags : sequence of int
        Lags in samples, increasing.
    bins, range : see :meth:`ReactionCoordinateModel.fit`.
    dt : float
        Time per sample.
    k : int
        Number of time scales kept.
    """
    x = _as_traces(traces)
    lags = np.asarray(sorted(set(int(v) for v in lags)))
    if lags.size == 0 or lags[0] < 1 or lags[-1] >= x.shape[1]:
        raise ValueError(f"lags: positive integers below the trajectory length {x.shape[1]}, got {list(lags)}")
    edges = _edges(x, bins, range)
    s = _assign(x, edges)
    ts = np.stack([_msm_timescales(transition_counts(s, edges.size - 1, int(L)), L * dt, k) for L in lags])
    return ImpliedTimescales(lags, ts, float(dt))


# ---------------------------------------------------------------------------------------------------------------
# the Smoluchowski chain on bins

#: smallest propagator entry the likelihood resolves (exp(S tau) is rebuilt from its eigenvectors to about n eps)
FLOOR = 1e-13


def _parts(F: np.ndarray, logD: np.ndarray, h: float):
    d = np.exp(logD) / h**2                       # S off-diagonal: D(i + 1/2) / h^2
    up = d * np.exp(-(F[1:] - F[:-1]) / 2)        # k(i -> i + 1)
    down = d * np.exp(-(F[:-1] - F[1:]) / 2)      # k(i + 1 -> i)
    diag = np.zeros(F.size)
    diag[:-1] -= up
    diag[1:] -= down
    return d, up, down, diag


def _rate_matrix(F: np.ndarray, logD: np.ndarray, h: float) -> np.ndarray:
    _, up, down, diag = _parts(F, logD, h)
    return np.diag(diag) + np.diag(up, 1) + np.diag(down, -1)


def _loglik(theta: np.ndarray, C: np.ndarray, tau: float, h: float, excess: np.ndarray):
    """-log L and its gradient, for theta = (F (n), ln D (n - 1))."""
    n = C.shape[0]
    F, logD = theta[:n], theta[n:]
    d, up, down, diag = _parts(F, logD, h)
    if not (np.all(np.isfinite(diag)) and np.all(np.isfinite(d))):
        return 1e300, np.zeros_like(theta)
    lam, V = eigh_tridiagonal(diag, d)
    lam = np.minimum(lam, 0.0)                    # a generator's spectrum is <= 0; positives are round-off
    e = np.exp(lam * tau)
    M = (V * e) @ V.T                             # exp(S tau), symmetric
    # entries below FLOOR are round-off of the reconstruction (about n eps): the likelihood holds them at FLOOR
    Mc = np.maximum(M, FLOOR)
    # ln P_ij = ln M_ij + (F_i - F_j) / 2
    ll = float(np.sum(C * np.log(Mc)) + excess @ F / 2)
    if not math.isfinite(ll):
        return 1e300, np.zeros_like(theta)
    W = np.where(M > FLOOR, C / Mc, 0.0)
    dl = lam[:, None] - lam[None, :]
    # Phi_kl = (e_k - e_l) / (lambda_k - lambda_l), tau e_k on the diagonal; written as
    # exp(tau max) (1 - exp(-tau |dl|)) / |dl|, which neither overflows nor cancels
    top = np.maximum(lam[:, None], lam[None, :])
    adl = np.abs(dl)
    with np.errstate(divide="ignore", invalid="ignore"):
        Phi = np.where(adl > 0, np.exp(top * tau) * -np.expm1(-adl * tau) / adl, tau * np.exp(top * tau))
    G = V @ (Phi * (V.T @ W @ V)) @ V.T           # d ll / d S_ij
    gS = np.diag(G)
    goff = G.diagonal(1) + G.diagonal(-1)
    gF = excess / 2
    # S_ii = -up_i - down_{i-1}; up_i = d_i exp(-(F_{i+1} - F_i)/2), down_i = d_i exp(-(F_i - F_{i+1})/2)
    gF[:-1] += -gS[:-1] * up / 2 + gS[1:] * down / 2
    gF[1:] += gS[:-1] * up / 2 - gS[1:] * down / 2
    glogD = goff * d - gS[:-1] * up - gS[1:] * down
    return -ll, -np.concatenate([gF, glogD])


def _fit_counts(C: np.ndarray, tau: float, h: float, start: np.ndarray) -> np.ndarray:
    n = C.shape[0]
    excess = C.sum(1) - C.sum(0)
    N = C.sum()

    def objective(theta):                         # per transition, so that the first step of the search is O(1)
        f, g = _loglik(theta, C, tau, h, excess)
        return f / N, g / N
    res = minimize(objective, start, jac=True, method="L-BFGS-B", options={"maxiter": 10000, "ftol": 1e-12,
                                                                          "gtol": 1e-9})
    theta = res.x.copy()
    if not np.all(np.isfinite(theta)):
        raise FloatingPointError(f"the maximum-likelihood search left finite values ({res.message})")
    theta[:n] -= theta[:n].min()
    return theta


def _start(C: np.ndarray, x: np.ndarray, lag: int, tau: float) -> np.ndarray:
    n = C.shape[0]
    occ = C.sum(0) + C.sum(1) + 1.0
    F0 = -np.log(occ / occ.sum())
    inc = x[:, lag:] - x[:, :-lag]
    D0 = max(float(np.nanvar(inc)) / (2 * tau), 1e-12)
    return np.concatenate([F0 - F0.min(), np.full(n - 1, math.log(D0))])


def _mfpt(F: np.ndarray, logD: np.ndarray, h: float, i0: int, target: np.ndarray) -> float:
    if target[i0]:
        return 0.0
    K = _rate_matrix(F, logD, h)
    free = ~target
    t = np.linalg.solve(K[np.ix_(free, free)], -np.ones(free.sum()))
    return float(t[np.flatnonzero(free).tolist().index(i0)])


def _log_of(f):
    """ln f(F, ln D), NaN where f is not positive."""
    def g(F, logD):
        v = f(F, logD)
        return math.log(v) if v > 0 and math.isfinite(v) else math.nan
    return g


@dataclass(frozen=True)
class ReactionCoordinateModel:
    """A Smoluchowski model (F, D) of a scalar coordinate on uniform bins, fitted by maximum likelihood.

    Build it with :meth:`fit`. All times are in the unit of ``dt`` given to :meth:`fit`.

    Attributes
    ----------
    edges : ndarray, shape (n + 1,)
        Bin edges (uniform, width h).
    F : ndarray, shape (n,)
        Free energy of each bin in units of the temperature, min 0.
    logD : ndarray, shape (n - 1,)
        ln D at the interior edges (coordinate^2 per unit of time).
    temperature : float
        The temperature the model describes.
    lag : int
        The lag of the fit, in samples.
    dt : float
        Time per sample.
    implied : ImpliedTimescales
        The Markov models' time scales over the lags tried (the lag choice's evidence).
    converged : bool
        Whether the implied time scales level off (the coordinate is Markovian at ``lag``).
    diagnosis : str
        What the lag choice found, in words.
    boot : ndarray, shape (n_boot, 2 n - 1)
        Bootstrap replicates of (F, ln D) (empty when n_boot = 0).
    alt : ndarray, shape (2 n - 1,), or None
        (F, ln D) fitted at the next longer lag tried (None if there is none).

    Errors. Every quantity with ``return_se`` (and :meth:`barrier`) carries the bootstrap standard
    error and the lag's systematic error, the change of the quantity when the model is fitted at the
    next longer lag instead, in quadrature: se = sqrt(se_boot^2 + (q(next lag) - q(lag))^2). A binned
    coordinate is never exactly Markovian; at a short lag its time scales come out a few per cent short
    (in the double well of the docs, 5 % at 40 bins and lag 1), and this term states that bias rather than
    hiding it. :meth:`error_parts` gives the two terms apart. If a bootstrap replicate has no finite
    answer (far from the fitted temperature a replicate's barrier can make a time overflow), the
    bootstrap term is infinite: the data do not bound the prediction.
    """

    edges: np.ndarray
    F: np.ndarray
    logD: np.ndarray
    temperature: float
    lag: int
    dt: float
    implied: ImpliedTimescales | None = None
    converged: bool = True
    diagnosis: str = ""
    boot: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))
    alt: np.ndarray | None = None

    # ----------------------------------------------------------------------------------------------- fitting
    @classmethod
    def fit(cls, traces, temperature: float, *, bins=40, range=None, lag: int | None = None, lags=None,
            dt: float = 1.0, rtol: float = 0.03, n_boot: int = 50, blocks: int = 20, groups=None, seed: int = 0
            ) -> ReactionCoordinateModel:
        """Fit F(r) and D(r) to trajectories of a scalar coordinate.

        Parameters
        ----------
        traces : array_like, shape (n_trajectories, n_steps)
            The coordinate sampled every ``dt``; NaN marks a missing sample (pairs touching one are
            skipped). A 1-D array is one trajectory.
        temperature : float
            The temperature of the dynamics that made the traces (> 0); only :meth:`at_temperature`
            and :meth:`quasi_potential` use it.
        bins : int or array_like
            Number of uniform bins over ``range``, or the uniform edges themselves. Samples outside
            go to the end bins; empty end bins are trimmed, an empty interior bin is an error.
        range : (float, float), optional
            The binned interval (default: the data's minimum and maximum).
        lag : int, optional
            The lag in samples. Default: the smallest of ``lags`` at which the implied time scales
            level off (see :class:`ImpliedTimescales`), or the largest if none does (then
            ``converged`` is False).
        lags : sequence of int, optional
            Lags tried for the choice (default 1, 2, 4, ... up to 1/100 of the trajectory length: the
            time scales of longer lags rest on few independent transitions).
        dt : float
            Time per sample: the unit of every time and rate of the model.
        rtol : float
            Relative change of the slowest implied time scale that counts as level.
        n_boot : int
            Bootstrap replicates for the standard errors (0: none).
        blocks : int
            When there are fewer trajectories than this, each is cut into equal blocks so that there
            are at least this many units to resample.
        groups : array_like of int, shape (n_trajectories,), optional
            Trajectories that are not independent of each other (e.g. the probes of one training run)
            share a group label; the bootstrap then resamples whole groups (at least 2), and ``blocks``
            is not used.
        seed : int
            Seed of the bootstrap.

        Returns
        -------
        ReactionCoordinateModel
        """
        x = _as_traces(traces)
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature: a positive number, got {temperature}")
        if not (math.isfinite(dt) and dt > 0):
            raise ValueError(f"dt: a positive number, got {dt}")
        if n_boot < 0 or blocks < 1:
            raise ValueError(f"n_boot >= 0 and blocks >= 1, got {n_boot} and {blocks}")
        if groups is not None:
            groups = np.asarray(groups).reshape(-1)
            if groups.size != x.shape[0] or np.unique(groups).size < 2:
                raise ValueError(f"groups: one label per trajectory ({x.shape[0]}) with at least 2 distinct labels, "
                                 f"got {groups.size} labels, {np.unique(groups).size} distinct")
        edges = _edges(x, bins, range)
        s = _assign(x, edges)
        occ = np.bincount(s[s >= 0], minlength=edges.size - 1)
        used = np.flatnonzero(occ)
        lo, hi = used[0], used[-1]
        if (occ[lo:hi + 1] == 0).any():
            empty = lo + int(np.flatnonzero(occ[lo:hi + 1] == 0)[0])
            raise ValueError(f"bins: bin {empty} ([{edges[empty]:.4g}, {edges[empty + 1]:.4g})) has no sample inside "
                             "the visited range: use fewer bins or a narrower range")
        if hi - lo + 1 < 3:
            raise ValueError("bins: the data fill fewer than 3 bins; use more bins or a narrower range")
        edges = edges[lo:hi + 2]
        s = np.where(s >= 0, s - lo, -1)
        n, h = edges.size - 1, float(edges[1] - edges[0])
        if lags is None:
            top = max(2, x.shape[1] // 100)
            lags = [2**k for k in builtins.range(int(math.log2(top)) + 1)]
        its = implied_timescales(x, lags if lag is None else sorted(set(list(lags) + [lag])), bins=edges, dt=dt)
        converged, diagnosis = True, ""
        found = its.leveled_lag(rtol)
        if lag is None:
            if found is None:
                lag = int(its.lags[-1])
                converged = False
                diagnosis = (f"the slowest implied time scale does not level off within lags {its.lags.tolist()} "
                             f"(rtol {rtol:g}): the coordinate is not Markovian on these bins; predictions are "
                             "unreliable")
                warnings.warn("ReactionCoordinateModel.fit: " + diagnosis, stacklevel=2)
            else:
                lag = found
                diagnosis = f"implied time scales level off at lag {lag} (rtol {rtol:g})"
        else:
            if not 1 <= lag < x.shape[1]:
                raise ValueError(f"lag: between 1 and the trajectory length - 1 = {x.shape[1] - 1}, got {lag}")
            converged = found is not None and found <= lag
            diagnosis = (f"lag {lag} given; implied time scales level off at lag {found}" if found is not None else
                         f"lag {lag} given; implied time scales do not level off within lags {its.lags.tolist()}")
        tau = lag * dt
        C = transition_counts(s, n, lag)
        theta = _fit_counts(C, tau, h, _start(C, x, lag, tau))
        boot = np.empty((0, theta.size))
        if n_boot:
            rng = np.random.default_rng(seed)
            units = s
            if s.shape[0] < blocks:
                per = max(lag + 1, s.shape[1] // -(-blocks // s.shape[0]))
                k = s.shape[1] // per
                units = s[:, :k * per].reshape(s.shape[0] * k, per)
            members = None
            if groups is not None:
                units, members = s, [np.flatnonzero(groups == g) for g in np.unique(groups)]
            reps = []
            for _ in builtins.range(n_boot):
                if members is None:
                    pick = rng.integers(0, units.shape[0], units.shape[0])
                else:
                    pick = np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])
                Cb = transition_counts(units[pick], n, lag)
                if (Cb.sum(0) + Cb.sum(1) == 0).any():      # a bin unvisited in this replicate: skip it
                    continue
                reps.append(_fit_counts(Cb, tau, h, theta))
            boot = np.array(reps).reshape(-1, theta.size)
        # the same fit one lag further: how far its predictions move is the lag's systematic error
        longer = its.lags[its.lags > lag]
        alt = None
        if longer.size:
            L2 = int(longer[0])
            alt = _fit_counts(transition_counts(s, n, L2), L2 * dt, h, theta)
        return cls(edges, theta[:n], theta[n:], float(temperature), int(lag), float(dt), its, converged, diagnosis,
                   boot, alt)

    # ----------------------------------------------------------------------------------------------- geometry
    @property
    def centers(self) -> np.ndarray:
        """Bin centres."""
        return (self.edges[:-1] + self.edges[1:]) / 2

    @property
    def width(self) -> float:
        """Bin width h."""
        return float(self.edges[1] - self.edges[0])

    def _bin(self, r: float) -> int:
        return int(np.clip(np.searchsorted(self.edges, r, side="right") - 1, 0, self.F.size - 1))

    def free_energy(self, r) -> np.ndarray:
        """F(r) in units of the temperature (min 0), linearly interpolated between bin centres."""
        return np.interp(r, self.centers, self.F)

    def diffusion(self, r) -> np.ndarray:
        """D(r) in coordinate^2 per unit of time, interpolated between the interior edges."""
        return np.exp(np.interp(r, self.edges[1:-1], self.logD))

    def _U(self, F: np.ndarray, logD: np.ndarray) -> np.ndarray:
        lnD = np.interp(self.centers, self.edges[1:-1], logD)
        U = self.temperature * (F - lnD)
        return U - U.min()

    def quasi_potential(self, r=None, *, return_se: bool = False):
        """U(r) = T (F(r) - ln D(r)), the temperature-free potential (min 0), at r (default: the bin centres).

        With ``return_se`` also its pointwise bootstrap standard error (NaN without replicates).
        """
        U = self._U(self.F, self.logD)
        n = self.F.size
        se = (np.std([self._U(b[:n], b[n:]) for b in self.boot], axis=0, ddof=1) if self.boot.shape[0] >= 2
              else np.full(n, math.nan))
        if r is not None:
            U, se = np.interp(r, self.centers, U), np.interp(r, self.centers, se)
        return (U, se) if return_se else U

    def barrier(self, start: float, end: float) -> float | tuple[float, float]:
        """max U on [start, end] minus U at the lowest point on the start side of that maximum, with its error.

        Returns (value, se): the error as in the class's Errors (NaN without bootstrap replicates).
        """
        def one(F, logD):
            U = self._U(F, logD)
            i0, i1 = sorted((self._bin(start), self._bin(end)))
            seg = U[i0:i1 + 1]
            top = int(np.argmax(seg))
            side = seg[:top + 1] if self._bin(start) <= self._bin(end) else seg[top:]
            return float(seg[top] - side.min())
        return one(self.F, self.logD), self._se(one)

    def _parts_of(self, f) -> tuple[float, float]:
        n = self.F.size
        stat = math.nan
        if self.boot.shape[0] >= 2:
            reps = np.array([f(b[:n], b[n:]) for b in self.boot])
            # a replicate without a finite answer (a barrier so high the time overflows): the error is unbounded
            stat = float(np.std(reps, ddof=1)) if np.isfinite(reps).all() else math.inf
        shift = 0.0 if self.alt is None else abs(f(self.alt[:n], self.alt[n:]) - f(self.F, self.logD))
        return stat, shift

    def _se(self, f) -> float:
        return math.hypot(*self._parts_of(f))

    def error_parts(self, start: float, end: float) -> tuple[float, float]:
        """The two terms of :meth:`mean_first_passage`'s error: (bootstrap se, change at the next lag)."""
        return self._parts_of(self._passage(start, end))

    # ----------------------------------------------------------------------------------------------- kinetics
    def rate_matrix(self) -> np.ndarray:
        """The generator K (rows sum to zero) of the bin chain, per unit of time."""
        return _rate_matrix(self.F, self.logD, self.width)

    def mean_first_passage(self, start: float, end: float, *, return_se: bool = False, log: bool = False):
        """Mean time from ``start`` until the coordinate first reaches ``end``, in the unit of dt.

        The target is every bin whose centre lies at or beyond ``end`` (on the side away from
        ``start``); the time is that of the continuous-time bin chain, (-K_TT)^-1 1.

        Parameters
        ----------
        start, end : float
            Coordinates.
        return_se : bool
            Also return the error: bootstrap se and the lag's systematic error in quadrature (see the
            class's Errors; NaN without bootstrap replicates).
        log : bool
            Return ln of the time instead, with its error computed on that scale (use it when the
            replicates spread the time over orders of magnitude, as far from the fitted temperature).

        Returns
        -------
        float, or (float, float) with ``return_se``
        """
        one = self._passage(start, end)
        if log:
            one = _log_of(one)
        value = one(self.F, self.logD)
        return (value, self._se(one)) if return_se else value

    def _passage(self, start: float, end: float):
        c = self.centers
        target = c >= end if end >= start else c <= end
        if not target.any():
            raise ValueError(f"end: {end} lies beyond the fitted range [{self.edges[0]:.4g}, {self.edges[-1]:.4g}]")
        i0 = self._bin(start)
        return lambda F, logD: _mfpt(F, logD, self.width, i0, target)

    def exit_time(self, start: float, end: float, *, return_se: bool = False):
        """Mean exit time from the quasi-stationary distribution of the bins on ``start``'s side of ``end``.

        -1 / lambda_0, lambda_0 the largest eigenvalue of the generator restricted to those bins (every
        bin whose centre lies short of ``end``): the mean residual time of a stay that has lasted long
        enough to forget how it began (the exit law of a long episode is then exponential with this
        mean). For a high barrier it equals :meth:`mean_first_passage` from the well's bottom up to the
        time of relaxing inside the well. In the unit of dt; ``return_se`` as in
        :meth:`mean_first_passage`.
        """
        c = self.centers
        inside = c < end if end >= start else c > end
        if inside.all() or not inside[self._bin(start)]:
            raise ValueError(f"end: {end} must lie inside the fitted range [{self.edges[0]:.4g}, "
                             f"{self.edges[-1]:.4g}] and beyond start {start}")
        keep = np.flatnonzero(inside)

        def one(F, logD):
            d, _, _, diag = _parts(F, logD, self.width)
            i0, i1 = keep[0], keep[-1]
            lam = eigh_tridiagonal(diag[i0:i1 + 1], d[i0:i1], eigvals_only=True, select="i",
                                   select_range=(i1 - i0, i1 - i0))
            return float(-1 / lam[0])
        value = one(self.F, self.logD)
        return (value, self._se(one)) if return_se else value

    def relaxation_time(self) -> float:
        """The slowest relaxation time -1 / lambda_2 of the model's generator, in the unit of dt."""
        d, _, _, diag = _parts(self.F, self.logD, self.width)
        lam = eigh_tridiagonal(diag, d, eigvals_only=True)
        return float(-1 / np.sort(lam)[-2])

    def at_temperature(self, temperature: float) -> ReactionCoordinateModel:
        """The model at another temperature: U = T (F - ln D) kept, D scaled by temperature / self.temperature.

        Time stays in the unit of dt (for SGD, lr x steps: divide a predicted time by the new lr for
        steps). The bootstrap replicates and the next lag's fit are carried over, so predicted times keep
        their errors.
        """
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature: a positive number, got {temperature}")
        ratio = temperature / self.temperature
        n = self.F.size

        def move(F, logD):
            lnD = np.interp(self.centers, self.edges[1:-1], logD)
            G = (F - lnD) / ratio + lnD        # U / T' + ln D', up to a constant
            return G - G.min(), logD + math.log(ratio)
        F2, D2 = move(self.F, self.logD)
        boot = (np.array([np.concatenate(move(b[:n], b[n:])) for b in self.boot]) if self.boot.size
                else self.boot)
        alt = None if self.alt is None else np.concatenate(move(self.alt[:n], self.alt[n:]))
        return ReactionCoordinateModel(self.edges, F2, D2, float(temperature), self.lag, self.dt, self.implied,
                                       self.converged, self.diagnosis, boot, alt)
