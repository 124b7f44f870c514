"""Minimum action paths by the geometric minimum action method (gMAM).

For dX = b(X) dt + sqrt(eps) D(X)^{1/2} dW the Freidlin-Wentzell action of a path, minimised over
its time parametrisation, is the geometric action of the curve (Heymann & Vanden-Eijnden, CPAM
2008)

    S(phi) = int_0^1 ( |phi'|_D |b(phi)|_D - <phi', b(phi)>_D ) d alpha,   <u, v>_D = u^T D^-1 v,

and the quasi-potential is V(x; K) = inf S over curves from the attractor K to x. The minimiser
solves lambda^2 phi'' - lambda H_{theta x} phi' + H_{theta theta} H_x = 0 (normal part), with
lambda = |b|_D / |phi'|_D and the momentum theta = D^-1 (lambda phi' - b), where
H(x, theta) = <b, theta> + 1/2 <theta, D theta>. :func:`min_action_path` relaxes the curve by the
preconditioned flow

    d phi / d tau = lambda^2 phi'' - lambda H_{theta x} phi' + D H_x,

with lambda^2 phi'' implicit (one tridiagonal solve per coordinate) and only the part normal to
the curve kept, and after every step puts the points back on the curve (cubic spline) at equal
arc length. A path out of a stable point starts on a small ellipse around it, where the
linearised fluctuation flow (which spirals out of a focus with infinitely many turns) takes over. The pseudo-time step grows while the curve
relaxes smoothly and halves when it starts to oscillate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike

from .field import Field, as_field

__all__ = ["MinActionPath", "min_action_path", "geometric_action", "GMAM_ACCURACY"]

#: documented relative accuracy of the action from :func:`min_action_path` with >= 100 points on a
#: smooth path (measured errors: 1e-4 or less; see benchmarks/quasipotential.py)
GMAM_ACCURACY = 1e-3


@dataclass(frozen=True)
class MinActionPath:
    """Result of :func:`min_action_path`.

    Attributes
    ----------
    path : ndarray (n_points, d)
        The curve to ``end``, points at equal arc length. It starts at ``start``, or, when
        ``start`` is a stable point, on a small ellipse V_lin = eps around it (0.1% of V_lin(end)
        for a node, up to 10% for a tightly winding focus), where the linearised fluctuation flow
        takes over (if that relaxation does not converge, the plain start is used instead).
    action : float
        Its geometric action S (midpoint rule). When ``start`` is an attractor K and the path is the
        minimiser, this is the quasi-potential V(end; K) (for isotropic D = sigma^2 I and b = -grad F
        it is 2 (F(end) - F(K)) / sigma^2 on an uphill path).
    iterations : int
        Relaxation steps taken.
    converged : bool
        Whether the normal velocity fell below ``tol`` within ``max_iter`` steps.
    residual : float
        Final max |d phi / d tau| relative to the path length.
    start_actions : ndarray
        The action reached from each initial curve (the least is kept); see ``starts_agree``.
    """

    path: np.ndarray
    action: float
    iterations: int
    converged: bool
    residual: float
    start_actions: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def starts_agree(self) -> bool:
        """Whether every initial curve relaxed to the same action (within GMAM_ACCURACY). When
        they do not, the relaxation has more than one stationary curve (an invariant line of the
        drift through both ends is the common case) and the least action was kept."""
        a = np.asarray(self.start_actions, dtype=np.float64)
        return a.size < 2 or float(a.max() - a.min()) <= GMAM_ACCURACY * max(abs(float(a.min())), 1e-300)

    def __repr__(self) -> str:
        return (f"MinActionPath(action={self.action:.6g}, n_points={len(self.path)}, iterations={self.iterations}, "
                f"converged={self.converged})")


class _LinearStart:
    """Start of a path at a stable point K.

    Near K optimal paths follow the fluctuation flow dz/dt = M (z - K), M = A + D(K) Sigma^-1
    (A: Jacobian at K; A Sigma + Sigma A^T + D(K) = 0), which spirals out of a focus with
    infinitely many turns that no fixed set of path points can follow. The relaxed path therefore
    starts on the small ellipse V_lin(z) = 1/2 (z - K)^T Sigma^-1 (z - K) = eps, at the point the
    backward fluctuation flow from the path's second point reaches; the action from K to that
    point is the geometric action, with the true drift, along the fluctuation flow itself
    (uniform in time: equal points per turn), which is exact to higher order than V_lin.
    """

    TURNS = 1.0  # turns of the fluctuation spiral left to the relaxed path

    def __init__(self, F: Field, K: np.ndarray, end: np.ndarray):
        from scipy.linalg import solve_continuous_lyapunov

        A = F.jacobian(K)[0]
        D = F.D(K[None])
        D = D if D.ndim == 2 else D[0]
        self.F, self.K = F, K
        self.Si = np.linalg.inv(solve_continuous_lyapunov(A, -D))
        self.lam, self.W = np.linalg.eig(A + D @ self.Si)
        self.Winv = np.linalg.inv(self.W)
        self.rate = float(np.min(self.lam.real))
        # the ellipse is as small as possible while the relaxed path makes at most TURNS turns
        # outside it: r shrinks by exp(-2 pi Re/|Im|) per turn, V_lin by the square of that
        ratio = float(np.max(np.abs(self.lam.imag) / self.lam.real))
        fraction = np.exp(-4 * np.pi * self.TURNS / ratio) if ratio > 0 else 0.0
        self.eps = float(np.clip(fraction, 1e-3, 0.1)) * self.vlin(end)

    def vlin(self, z: np.ndarray) -> float:
        d = z - self.K
        return 0.5 * float(d @ self.Si @ d)

    def _flow(self, p: np.ndarray, t) -> np.ndarray:
        """Points of the backward fluctuation flow from p after times t (shape (k,) -> (k, d))."""
        c = self.Winv @ (p - self.K)
        return self.K + np.real(np.exp(-np.outer(t, self.lam)) * c[None, :] @ self.W.T)

    def _time_to_ellipse(self, p1: np.ndarray) -> float:
        """Time of the backward fluctuation flow from p1 to the ellipse V_lin = eps (0 inside)."""
        v1 = self.vlin(p1)
        if v1 <= self.eps:
            return 0.0
        lo, hi = 0.0, np.log(v1 / self.eps) / max(self.rate, 1e-12)
        while self.vlin(self._flow(p1, [hi])[0]) > self.eps:
            hi *= 2
        # V_lin falls monotonically along the backward flow (d V_lin / dt = z^T Si D Si z / 2 forward):
        # bracket the crossing on 64 subintervals at a time, 64^4 ~ 2e7 in four vectorised passes
        for _ in range(4):
            t = np.linspace(lo, hi, 65)
            z = self._flow(p1, t) - self.K
            k = int(np.argmax(0.5 * np.einsum("ni,ij,nj->n", z, self.Si, z) <= self.eps))
            lo, hi = t[max(k - 1, 0)], t[k]
        return hi

    def start(self, p1: np.ndarray) -> np.ndarray:
        """The point of the backward fluctuation flow from p1 where V_lin = eps."""
        T = self._time_to_ellipse(p1)
        return p1 + 0.0 if T == 0.0 else self._flow(p1, [T])[0]

    def curve(self, end: np.ndarray, N: int) -> np.ndarray:
        """The linearised optimal path to ``end``: the fluctuation flow from the ellipse, N points at
        equal arc length (exact for a linear drift with constant noise)."""
        T = self._time_to_ellipse(end)
        return _resample(self._flow(end, np.linspace(T, 0.0, 40 * N)), N)

    def action(self, z: np.ndarray, n: int = 4000) -> float:
        """Geometric action from K to z along the fluctuation flow (plus V_lin of its inner end,
        at 1e-8 of V_lin(z))."""
        t_end = np.log(1e8) / (2 * max(self.rate, 1e-12))
        pts = self._flow(z, np.linspace(t_end, 0.0, n))
        return _action(self.F, pts) + self.vlin(pts[0])


def geometric_action(drift, path: ArrayLike, diffusion=None) -> float:
    """Geometric action S of a polyline, midpoint rule on each segment.

    Parameters
    ----------
    drift : callable or Field
        b, mapping (n, d) points to (n, d) velocities.
    path : array_like (n, d)
        The points of the curve in order.
    diffusion : None, array or callable
        D as in :func:`min_action_path`.
    """
    phi = np.asarray(path, dtype=np.float64)
    if phi.ndim != 2 or len(phi) < 2:
        raise ValueError(f"path must be an array of shape (n >= 2, d), got shape {phi.shape}")
    return _action(as_field(drift, phi.shape[1], diffusion), phi)


def _linear_start(F: Field, K: np.ndarray, end: np.ndarray):
    """A :class:`_LinearStart` when ``K`` is a stable fixed point of the drift, else None."""
    scale = max(1.0, float(np.abs(K).max()))
    if np.linalg.norm(F.b(K[None])[0]) > 1e-8 * scale:
        return None
    if np.max(np.linalg.eigvals(F.jacobian(K)[0]).real) >= 0:
        return None
    try:
        lin = _LinearStart(F, K, end)
    except (np.linalg.LinAlgError, ValueError):
        return None
    if not (np.isfinite(lin.eps) and lin.eps > 0 and np.linalg.cond(lin.W) < 1e8):
        return None
    return lin


def _action(F: Field, phi: np.ndarray) -> float:
    mid = 0.5 * (phi[1:] + phi[:-1])
    dphi = np.diff(phi, axis=0)
    b = F.b(mid)
    Dinv = F.Dinv(mid)
    sub = "ij" if Dinv.ndim == 2 else "nij"
    nb = np.sqrt(np.einsum(f"ni,{sub},nj->n", b, Dinv, b))
    nd = np.sqrt(np.einsum(f"ni,{sub},nj->n", dphi, Dinv, dphi))
    return float(np.sum(nd * nb - np.einsum(f"ni,{sub},nj->n", dphi, Dinv, b)))


def _reparametrize(phi: np.ndarray) -> tuple[np.ndarray, float]:
    """The same curve (cubic spline through the points) with the points at equal arc length.
    Returns the points and the length."""
    from scipy.interpolate import CubicSpline

    seg = np.linalg.norm(np.diff(phi, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    length = float(s[-1])
    u = np.linspace(0.0, length, len(phi))
    keep = np.concatenate([[True], seg > 1e-14 * max(length, 1e-300)])  # a spline needs increasing knots
    if keep.sum() >= 4:
        out = CubicSpline(s[keep], phi[keep], axis=0)(u)
    else:
        out = np.stack([np.interp(u, s, phi[:, k]) for k in range(phi.shape[1])], axis=1)
    out[0], out[-1] = phi[0], phi[-1]
    return out, length


def min_action_path(drift, start: ArrayLike, end: ArrayLike, diffusion=None, *, n_points: int = 200,
                    init: ArrayLike | None = None, starts: int = 3, jacobian=None, tol: float = 1e-6,
                    max_iter: int = 20000, progress: bool = False) -> MinActionPath:
    """Minimum action path between two points by the geometric minimum action method.

    Parameters
    ----------
    drift : callable
        b(x) for x of shape (n, d), returning (n, d); numpy or torch arithmetic (autograd then gives
        its derivatives; otherwise ``jacobian`` or finite differences are used).
    start, end : array_like (d,)
        End points of the path. For the quasi-potential, ``start`` is an attractor of b.
    diffusion : None, array_like (d, d), scalar or callable, optional
        D (identity by default; ``diffusion(x)`` gives (n, d, d) for state-dependent noise). For
        constant-step SGD with gradient-noise covariance C, D = C and b = -grad F.
    n_points : int
        Points on the path (>= 3), including both ends, at equal arc length. The action converges
        at second order on smooth paths (100 points: relative errors 1e-4 or less). When
        ``start`` is a stable point, the path's first point sits on a small ellipse of the
        linearised quasi-potential around it, reached from the attractor along the fluctuation
        flow (whose action, with the true drift, is added): a path that spirals out of a focus
        keeps about one turn outside the ellipse, so that spirals with |Im/Re| = 5.5 (10) of the
        Jacobian's eigenvalues are computed to 1e-5 (2e-3) with the default points.
    init : array_like (k, d), optional
        Waypoints for the first initial curve start -> waypoints -> end (default: the straight
        segment).
    starts : int
        Initial curves to relax (>= 1); the least action is kept. The first is ``init`` (or the
        straight segment); the others are the straight segment bent by half its length to either
        side along normal directions (sin-shaped, ends fixed). A straight segment on an invariant
        line of the drift (a symmetry axis) is a stationary curve of the relaxation even when it
        is not the minimiser; the bent starts leave it. When ``start`` is a stable point and
        ``starts > 1``, the linearised optimal path (the fluctuation flow of the linearisation
        into ``end``) is relaxed too: near a focus the relaxation has stationary curves that wind
        a different number of times, and this start has the right winding.
        ``result.starts_agree`` says whether all starts reached the same action.
    jacobian : callable, optional
        db/dx as (n, d, d), if known.
    tol : float
        Stop when the largest normal velocity of the relaxation, relative to the path length, is
        below ``tol``.
    max_iter : int
        Most relaxation steps.
    progress : bool
        Show a progress bar.

    Returns
    -------
    MinActionPath

    Examples
    --------
    Maier-Stein at beta = 1 is the gradient system b = -grad U with U(saddle) - U(min) = 1/4, so
    V = 2 (U(saddle) - U(min)) = 1/2:

    >>> import numpy as np
    >>> b = lambda x: np.stack([x[:, 0] - x[:, 0]**3 - x[:, 0] * x[:, 1]**2, -(1 + x[:, 0]**2) * x[:, 1]], axis=1)
    >>> res = min_action_path(b, [-1.0, 0.0], [0.0, 0.0])
    >>> round(res.action, 3)
    0.5
    """
    a0 = np.asarray(start, dtype=np.float64).reshape(-1)
    F = as_field(drift, a0.size, diffusion, jacobian)
    A, Z = F.point(start, "start"), F.point(end, "end")
    if np.allclose(A, Z):
        raise ValueError("start and end must be different points")
    N = int(n_points)
    if N < 3:
        raise ValueError(f"n_points must be >= 3, got {n_points}")
    if not (tol > 0 and max_iter >= 1):
        raise ValueError(f"tol must be > 0 and max_iter >= 1, got tol={tol}, max_iter={max_iter}")
    if int(starts) < 1:
        raise ValueError(f"starts must be >= 1, got {starts}")
    curves = [_polyline(np.array([A, *_waypoints(init, A.size), Z]), N)]
    for k in range(int(starts) - 1 if A.size > 1 else 0):  # in 1-D every curve is the segment
        curves.append(_bent(A, Z, N, k))

    lin = _linear_start(F, A, Z)
    if lin is not None and int(starts) > 1:
        curves.append(lin.curve(Z, N))
    # pseudo-time step: the explicit part moves at rate ~ |J|^2 cond(D)
    best, actions = None, []
    for phi in curves:
        J = F.jacobian(phi)
        Dp = F.D(phi)
        cond = np.linalg.cond(Dp) if Dp.ndim == 2 else float(np.max(np.linalg.cond(Dp)))
        lip = float(np.max(np.linalg.norm(J, ord=2, axis=(1, 2))))
        base = 1.0 / max(lip**2 * cond, 1e-12)
        res = _relax(F, phi.copy(), lin, base, tol, max_iter, progress)
        if lin is not None and not res.converged:
            # the moving start point can keep a coarse path from settling: fall back to the plain start
            plain = _relax(F, phi.copy(), None, base, tol, max_iter, progress)
            if plain.converged or plain.action < res.action:
                res = plain
        actions.append(res.action)
        if best is None or res.action < best.action:
            best = res
    return MinActionPath(best.path, best.action, best.iterations, best.converged, best.residual, np.array(actions))


def _waypoints(init, d: int) -> np.ndarray:
    if init is None:
        return np.zeros((0, d))
    w = np.asarray(init, dtype=np.float64)
    if w.ndim == 1:
        w = w[None]
    if w.ndim != 2 or w.shape[1] != d or not np.all(np.isfinite(w)):
        raise ValueError(f"init must be finite waypoints of shape (k, {d}), got shape {w.shape}")
    return w


def _polyline(poly: np.ndarray, N: int) -> np.ndarray:
    """N points at equal arc length along the polyline through ``poly``."""
    t = np.linspace(0, 1, max(N, 20 * len(poly)))
    knots = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(poly, axis=0), axis=1))])
    knots /= knots[-1]
    return _resample(np.stack([np.interp(t, knots, poly[:, k]) for k in range(poly.shape[1])], axis=1), N)


def _resample(curve: np.ndarray, N: int) -> np.ndarray:
    """N points at equal arc length along a densely sampled curve."""
    phi, _ = _reparametrize(curve)
    s = np.linspace(0, 1, len(phi))
    return np.stack([np.interp(np.linspace(0, 1, N), s, phi[:, j]) for j in range(phi.shape[1])], axis=1)


def _bent(A: np.ndarray, Z: np.ndarray, N: int, k: int) -> np.ndarray:
    """The segment A -> Z bent by half its length, sin-shaped, along normal direction k // 2 with
    sign (-1)^k (d >= 2)."""
    d = A.size
    u = (Z - A) / np.linalg.norm(Z - A)
    Q, _ = np.linalg.qr(np.column_stack([u, np.eye(d)]))  # Q[:, 0] = +-u, the rest span its complement
    normal = Q[:, 1 + (k // 2) % (d - 1)] * (1 if k % 2 == 0 else -1)
    t = np.linspace(0, 1, 20 * N)[:, None]
    return _resample(A + t * (Z - A) + 0.5 * np.linalg.norm(Z - A) * np.sin(np.pi * t) * normal, N)


def _relax(F: Field, phi: np.ndarray, lin, base: float, tol: float, max_iter: int, progress: bool) -> MinActionPath:
    """The gMAM relaxation of ``phi`` (see the module docstring); ``lin``: a linearised start."""
    from scipy.linalg import solve_banded
    from tqdm.auto import tqdm

    N = len(phi)
    h = 1.0 / (N - 1)
    dtau = 2 * base
    residual, converged, it, cap = math.inf, False, 0, 256 * base
    last = np.zeros_like(phi)
    bar = tqdm(total=max_iter, desc="gMAM", disable=not progress, leave=False)
    for it in range(1, max_iter + 1):
        if lin is not None:
            phi[0] = lin.start(phi[1])
        b = F.b(phi)
        D = F.D(phi)
        Dinv = F.Dinv(phi, None if F.constant_diffusion else D)
        sub = "ij" if Dinv.ndim == 2 else "nij"
        dphi = np.gradient(phi, h, axis=0)
        nb = np.sqrt(np.einsum(f"ni,{sub},nj->n", b, Dinv, b))
        nd = np.sqrt(np.einsum(f"ni,{sub},nj->n", dphi, Dinv, dphi))
        lam = nb / np.maximum(nd, 1e-300)
        theta = np.einsum(f"{sub},nj->ni", Dinv, lam[:, None] * dphi - b)
        Hx = F.grad_h(phi, theta)
        # H_{theta x} phi' by differences along the path: H_theta(x, theta) = b(x) + D(x) theta
        if D.ndim == 2:
            Hth = (b[2:] - b[:-2]) / (2 * h)
            DHx = Hx[1:-1] @ D.T
        else:
            Hth = (b[2:] - b[:-2] + np.einsum("nij,nj->ni", D[2:] - D[:-2], theta[1:-1])) / (2 * h)
            DHx = np.einsum("nij,nj->ni", D[1:-1], Hx[1:-1])
        # only the normal part moves the curve; a tangential part would just slide points along it
        # and leave a step-size-dependent corner-cutting bias through the reparametrisation
        G = -lam[1:-1, None] * Hth + DHx
        tan = dphi[1:-1] / np.maximum(np.linalg.norm(dphi[1:-1], axis=1, keepdims=True), 1e-300)
        G -= np.sum(G * tan, axis=1, keepdims=True) * tan
        rhs = phi[1:-1] + dtau * G
        c = dtau * lam[1:-1] ** 2 / h**2
        rhs[0] += c[0] * phi[0]
        rhs[-1] += c[-1] * phi[-1]
        ab = np.zeros((3, N - 2))
        ab[0, 1:] = -c[:-1]
        ab[1] = 1 + 2 * c
        ab[2, :-1] = -c[1:]
        new = phi.copy()
        new[1:-1] = solve_banded((1, 1), ab, rhs, check_finite=False)
        if not np.all(np.isfinite(new)):
            dtau *= 0.25
            cap = dtau
            if dtau < 1e-6 * base:
                raise FloatingPointError(f"gMAM diverged at iteration {it}; check that the drift is smooth along the "
                                         "path and that start and end are where you meant them")
            continue
        new, length = _reparametrize(new)
        step = new - phi
        # velocity of the curve, in path lengths per base pseudo-time step
        residual = float(np.max(np.linalg.norm(step, axis=1))) * base / (dtau * max(length, 1e-300))
        # an explicit step that is too long shows up as a curve flipping back and forth
        # (interior points only: a linearised start point moves with the second point, not by the flow)
        flip = float(np.sum(step[1:] * last[1:])) < -0.3 * float(np.linalg.norm(step[1:]) * np.linalg.norm(last[1:]))
        phi, last = new, step
        if flip:
            dtau *= 0.5
            cap = dtau
            if dtau < 1e-6 * base:
                break  # the relaxation cannot make progress: report what it has, not converged
        elif (it % 10) == 0:
            dtau = min(1.5 * dtau, cap)
        if it % 50 == 0:
            bar.update(50)
            bar.set_postfix(residual=f"{residual:.2e}")
        if residual < tol:
            converged = True
            break
    bar.close()
    if lin is not None:
        phi[0] = lin.start(phi[1])
    action = _action(F, phi) + (lin.action(phi[0]) if lin is not None else 0.0)
    return MinActionPath(path=phi, action=action, iterations=it, converged=converged, residual=residual)
