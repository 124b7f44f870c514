"""Stylized losses for constant-step SGD.

Every landscape evaluates a batch of chains at once: ``theta`` is a torch tensor of shape
``(n_chains, dim)`` and :meth:`Landscape.value` / :meth:`Landscape.grad` return shapes
``(n_chains,)`` and ``(n_chains, dim)`` in the dtype and on the device of ``theta``.
Coordinates are ordered ``theta = (x, y)``: the first ``fast_dim`` are the strong ("fast")
parameters x, the rest the weak ("slow") parameters y.

Critical points are returned where they are known in closed form; numerical root finding is left
to the caller so that a test against :meth:`Landscape.critical_points` is a test against exact
values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "CriticalPoint",
    "Landscape",
    "Quadratic",
    "DoubleWell",
    "DoubleWellND",
    "S1",
    "BilinearCoupling",
    "TiltedWell",
    "Modulated",
    "SlowlyDriven",
    "DrivenTiltedWell",
    "LeastSquares",
]


@dataclass(frozen=True)
class CriticalPoint:
    """A critical point of a landscape.

    Attributes
    ----------
    location : ndarray, shape (dim,)
    value : float
        Loss at the point.
    index : int
        Morse index: number of negative Hessian eigenvalues (0 = minimum, 1 = saddle).
    curvatures : ndarray
        Hessian eigenvalues, ascending.
    """

    location: np.ndarray
    value: float
    index: int
    curvatures: np.ndarray

    @property
    def kind(self) -> str:
        return {0: "minimum", 1: "saddle"}.get(self.index, f"index-{self.index}")


class Landscape:
    """Base class: a differentiable loss F(theta) on R^dim evaluated for a batch of chains.

    Subclasses implement :meth:`value` and :meth:`grad`; :meth:`hessian` and
    :meth:`critical_points` where closed forms exist.
    """

    dim: int
    fast_dim: int

    def value(self, theta: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def grad(self, theta: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def grad_into(self, theta: torch.Tensor, out: torch.Tensor) -> None:
        """Write grad F(theta) into ``out`` (the engine's hot path; override to avoid
        temporaries)."""
        out.copy_(self.grad(theta))

    #: True when the Hessian is constant and :meth:`hessian` returns it exactly.
    is_quadratic = False

    def hessian(self, theta: np.ndarray) -> np.ndarray:
        """Hessian at one point (float64 numpy), by central differences of :meth:`grad`
        unless a subclass knows it exactly."""
        theta = np.asarray(theta, dtype=np.float64)
        h = 1e-5 * max(1.0, float(np.abs(theta).max()))
        eye = np.eye(self.dim)
        plus = self.grad(torch.as_tensor(theta + h * eye))
        minus = self.grad(torch.as_tensor(theta - h * eye))
        hess = ((plus - minus) / (2 * h)).numpy()
        return 0.5 * (hess + hess.T)

    def critical_points(self) -> list[CriticalPoint]:
        """Critical points known in closed form, sorted by location along the first axis."""
        raise NotImplementedError(f"{type(self).__name__} has no closed-form critical points")

    def minima(self) -> list[CriticalPoint]:
        return [c for c in self.critical_points() if c.index == 0]

    def saddles(self) -> list[CriticalPoint]:
        return [c for c in self.critical_points() if c.index == 1]

    # -- helpers ---------------------------------------------------------------------------
    def _critical(self, location) -> CriticalPoint:
        loc = np.atleast_1d(np.asarray(location, dtype=np.float64))
        curv = np.linalg.eigvalsh(self.hessian(loc))
        value = float(self.value(torch.as_tensor(loc[None, :])).item())
        return CriticalPoint(loc, value, int(np.sum(curv < 0)), curv)

    def _param(self, name: str, ref: torch.Tensor) -> torch.Tensor:
        """The numpy parameter ``name`` as a tensor like ``ref``, cached per dtype/device."""
        cache = self.__dict__.setdefault("_tensor_cache", {})
        key = (name, ref.dtype, ref.device)
        if key not in cache:
            cache[key] = torch.as_tensor(getattr(self, name), dtype=ref.dtype, device=ref.device)
        return cache[key]


def _check_theta(theta: torch.Tensor, dim: int) -> None:
    if theta.ndim != 2 or theta.shape[1] != dim:
        raise ValueError(f"theta must have shape (n_chains, {dim}), got {tuple(theta.shape)}")


class Quadratic(Landscape):
    """F(theta) = 1/2 (theta - c)^T H (theta - c), H symmetric.

    Parameters
    ----------
    hessian : array_like, shape (d, d)
        Symmetric matrix H (need not be positive definite: the critical point is then a saddle).
    center : array_like, shape (d,), optional
        Critical point c (default 0).
    fast_dim : int, optional
        Number of leading "fast" coordinates (default all).
    """

    def __init__(self, hessian, center=None, fast_dim: int | None = None):
        H = np.atleast_2d(np.asarray(hessian, dtype=np.float64))
        if H.shape[0] != H.shape[1] or not np.allclose(H, H.T, atol=1e-12 * max(1, np.abs(H).max())):
            raise ValueError(f"hessian must be a symmetric square matrix, got shape {H.shape}")
        self.H = 0.5 * (H + H.T)
        self.dim = H.shape[0]
        self.center = np.zeros(self.dim) if center is None else np.asarray(center, dtype=np.float64)
        if self.center.shape != (self.dim,):
            raise ValueError(f"center must have shape ({self.dim},), got {self.center.shape}")
        self.fast_dim = self.dim if fast_dim is None else int(fast_dim)

    def value(self, theta):
        _check_theta(theta, self.dim)
        z = theta - self._param("center", theta)
        return 0.5 * ((z @ self._param("H", theta)) * z).sum(dim=1)

    is_quadratic = True

    def grad(self, theta):
        _check_theta(theta, self.dim)
        return (theta - self._param("center", theta)) @ self._param("H", theta)

    def grad_into(self, theta, out):
        if np.any(self.center):
            theta = theta - self._param("center", theta)
        torch.mm(theta, self._param("H", theta), out=out)

    def hessian(self, theta=None):
        return self.H.copy()

    def critical_points(self):
        return [self._critical(self.center)]

    @property
    def curvatures(self) -> np.ndarray:
        """Eigenvalues of H, ascending."""
        return np.linalg.eigvalsh(self.H)


class _Line(Landscape):
    """A 1-D landscape given by its scalar functions f, df, d2f (numpy or torch arithmetic)."""

    dim = fast_dim = 1

    def value(self, theta):
        _check_theta(theta, 1)
        return self.f(theta[:, 0])

    def grad(self, theta):
        _check_theta(theta, 1)
        return self.df(theta)

    def hessian(self, theta):
        return np.array([[float(self.d2f(float(np.asarray(theta).ravel()[0])))]])


class DoubleWell(_Line):
    """Asymmetric 1-D double well with exactly placed critical points.

    F'(x) = k (x - l)(x - s)(x - r), l < s < r, so that

        F(x) = k [x^4/4 - e1 x^3/3 + e2 x^2/2 - e3 x],
        e1 = l + s + r, e2 = ls + lr + sr, e3 = lsr.

    Minima at l and r, saddle (the barrier top) at s; the well is asymmetric unless
    s = (l + r)/2. With the defaults l = -1, r = 1: F(r) - F(l) = 4ks/3 and the curvatures are
    F''(l) = 2k(1 + s), F''(r) = 2k(1 - s), F''(s) = -k(1 - s^2).

    Parameters
    ----------
    left, saddle, right : float
        Critical points l < s < r.
    scale : float
        k > 0.
    """

    def __init__(self, left: float = -1.0, saddle: float = 0.0, right: float = 1.0, scale: float = 1.0):
        if not left < saddle < right:
            raise ValueError(f"need left < saddle < right, got {left}, {saddle}, {right}")
        if scale <= 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        self.left, self.saddle, self.right, self.scale = map(float, (left, saddle, right, scale))
        l, s, r = self.left, self.saddle, self.right
        self._e = (l + s + r, l * s + l * r + s * r, l * s * r)

    def f(self, x):
        """F(x) for an array of scalars (numpy or torch)."""
        e1, e2, e3 = self._e
        return self.scale * (((0.25 * x - e1 / 3) * x + 0.5 * e2) * x - e3) * x

    def df(self, x):
        """F'(x) for an array of scalars."""
        e1, e2, e3 = self._e
        return self.scale * (((x - e1) * x + e2) * x - e3)

    def d2f(self, x):
        """F''(x)."""
        e1, e2, _ = self._e
        return self.scale * ((3 * x - 2 * e1) * x + e2)

    def grad_into(self, theta, out):
        # Horner form of F'(x) = k (((x - e1) x + e2) x - e3), in place: no temporaries
        e1, e2, e3 = self._e
        torch.sub(theta, e1, out=out)
        out.mul_(theta).add_(e2).mul_(theta).sub_(e3).mul_(self.scale)

    def kernel_coefficients(self) -> np.ndarray:
        """F' as polynomial coefficients, highest degree first (for the compiled engine)."""
        e1, e2, e3 = self._e
        return self.scale * np.array([1.0, -e1, e2, -e3])

    def critical_points(self):
        return [self._critical([p]) for p in (self.left, self.saddle, self.right)]

    @property
    def delta_f(self) -> float:
        """F(right) - F(left): positive when the right well is the shallower one."""
        return float(self.f(self.right) - self.f(self.left))

    def barrier(self, well: str) -> float:
        """F(saddle) - F(well) for ``well`` in {"left", "right"}."""
        if well not in ("left", "right"):
            raise ValueError(f"well must be 'left' or 'right', got {well!r}")
        return float(self.f(self.saddle) - self.f(getattr(self, well)))


class MultiWell(_Line):
    """1-D landscape with any odd number of exactly placed critical points.

    F'(x) = k prod_j (x - c_j), c_1 < c_2 < ... < c_(2m-1): minima at c_1, c_3, ..., c_(2m-1)
    and barrier tops (saddles) at c_2, c_4, ...; F(c_1) = 0. With three points this is
    :class:`DoubleWell`; with five, a triple well, where the Freidlin-Wentzell W-graph over three
    minima decides the long-run law.

    Parameters
    ----------
    points : array_like
        The critical points, increasing, an odd number >= 3.
    scale : float
        k > 0.
    """

    def __init__(self, points, scale: float = 1.0):
        c = np.asarray(points, dtype=np.float64).ravel()
        if c.size < 3 or c.size % 2 == 0 or np.any(np.diff(c) <= 0) or not np.all(np.isfinite(c)):
            raise ValueError(f"points must be an odd number (>= 3) of increasing finite values, got {c.tolist()}")
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        self.points, self.scale = c, float(scale)
        P = np.polynomial.Polynomial
        self._dp = P.fromroots(c) * self.scale
        F = self._dp.integ()
        self._p = F - F(c[0])
        self._d2p = self._dp.deriv()
        # ascending coefficients for Horner's rule on tensors
        self._cf, self._cdf = self._p.coef[::-1].tolist(), self._dp.coef[::-1].tolist()

    @property
    def minima_x(self) -> np.ndarray:
        return self.points[0::2]

    @property
    def saddles_x(self) -> np.ndarray:
        return self.points[1::2]

    @staticmethod
    def _horner(coef, x):
        if isinstance(x, torch.Tensor):  # in place: half the small-tensor calls of the generic form
            out = torch.full_like(x, coef[0])
            for c in coef[1:]:
                out.mul_(x).add_(c)
            return out
        out = x * 0 + coef[0]
        for c in coef[1:]:
            out = out * x + c
        return out

    def f(self, x):
        """F(x) for an array of scalars (numpy or torch)."""
        return self._horner(self._cf, x)

    def df(self, x):
        """F'(x)."""
        return self._horner(self._cdf, x)

    def d2f(self, x):
        """F''(x) (numpy)."""
        return self._d2p(np.asarray(x, dtype=np.float64))

    def kernel_coefficients(self) -> np.ndarray:
        """F' as polynomial coefficients, highest degree first (for the compiled engine)."""
        return np.asarray(self._cdf, dtype=np.float64)

    def critical_points(self):
        return [self._critical([p]) for p in self.points]


class DoubleWellND(Landscape):
    """D-dimensional double well: a :class:`DoubleWell` along x_0 plus harmonic directions.

    F(theta) = W(theta_0) + 1/2 sum_{j>=1} kappa_j theta_j^2; critical points at
    (l, 0, ..., 0), (s, 0, ..., 0) and (r, 0, ..., 0).
    """

    def __init__(self, well: DoubleWell | None = None, curvatures=(1.0,)):
        self.well = well if well is not None else DoubleWell()
        self.kappa = np.asarray(curvatures, dtype=np.float64).ravel()
        if np.any(self.kappa <= 0):
            raise ValueError(f"curvatures must be > 0, got {self.kappa}")
        self.dim = self.fast_dim = 1 + self.kappa.size

    def value(self, theta):
        _check_theta(theta, self.dim)
        rest = theta[:, 1:]
        return self.well.f(theta[:, 0]) + 0.5 * (rest * rest * self._param("kappa", theta)).sum(dim=1)

    def grad(self, theta):
        _check_theta(theta, self.dim)
        g = theta * torch.cat([theta.new_zeros(1), self._param("kappa", theta)])
        g[:, 0] = self.well.df(theta[:, 0])
        return g

    def hessian(self, theta):
        return np.diag(np.concatenate([[self.well.d2f(float(np.asarray(theta).ravel()[0]))], self.kappa]))

    def critical_points(self):
        pad = np.zeros(self.kappa.size)
        w = self.well
        return [self._critical(np.concatenate([[p], pad])) for p in (w.left, w.saddle, w.right)]


class BentDoubleWell(Landscape):
    """2-D double well along a bent valley: non-separable, with the saddle off the axes.

    F(x, y) = W(x) + kappa/2 (y - g(x))^2, g(x) = c (1 - x^2), with W a :class:`DoubleWell` whose
    minima are at x = -1 and x = 1 (so that g vanishes there). The valley floor y = g(x) bends
    by c: minima at (-1, 0) and (1, 0), saddle at (s, c (1 - s^2)), and the Hessian at each
    minimum, [[W'' + 4 c^2 kappa x^2, 2 c kappa x], [2 c kappa x, kappa]], is not diagonal.

    Parameters
    ----------
    well : DoubleWell
        W; its outer minima must be at -1 and 1.
    curvature : float
        kappa > 0, the curvature across the valley.
    bend : float
        c, the height of the valley floor above the x axis at x = 0.
    """

    dim = fast_dim = 2

    def __init__(self, well: DoubleWell | None = None, curvature: float = 1.0, bend: float = 0.5):
        self.well = well if well is not None else DoubleWell()
        if not (abs(self.well.left + 1) < 1e-12 and abs(self.well.right - 1) < 1e-12):
            raise ValueError(f"well minima must be at -1 and 1, got {self.well.left}, {self.well.right}")
        if not curvature > 0:
            raise ValueError(f"curvature must be > 0, got {curvature}")
        self.kappa, self.c = float(curvature), float(bend)

    def value(self, theta):
        _check_theta(theta, self.dim)
        x, y = theta[:, 0], theta[:, 1]
        r = y - self.c * (1 - x * x)
        return self.well.f(x) + 0.5 * self.kappa * r * r

    def grad(self, theta):
        _check_theta(theta, self.dim)
        x, y = theta[:, 0], theta[:, 1]
        r = self.kappa * (y - self.c * (1 - x * x))
        return torch.stack([self.well.df(x) + 2 * self.c * x * r, r], dim=1)

    def hessian(self, theta):
        x, y = (float(v) for v in np.asarray(theta, dtype=np.float64).ravel()[:2])
        r = y - self.c * (1 - x * x)
        k, c = self.kappa, self.c
        return np.array([[self.well.d2f(x) + 2 * c * k * r + 4 * c * c * k * x * x, 2 * c * k * x],
                         [2 * c * k * x, k]])

    def critical_points(self):
        w = self.well
        return [self._critical(np.array([p, self.c * (1 - p * p)])) for p in (w.left, w.saddle, w.right)]


class BilinearCoupling(Landscape):
    """Weak part of an S1 loss with many slow coordinates: F1(x, y) = 1/2 sum_j l_j y_j^2 + x^T K y.

    Gradients cost O(p q) per chain (no q x q matrix), so q can be large. Hessian
    [[0, K], [K^T, diag(l)]].

    Parameters
    ----------
    slow_curvatures : array_like, shape (q,)
        l_j > 0.
    K : array_like, shape (p, q)
        Coupling of the fast coordinates x (dimension p) to y.
    """

    is_quadratic = True

    def __init__(self, slow_curvatures, K):
        self.lam = np.asarray(slow_curvatures, dtype=np.float64).ravel()
        self.K = np.atleast_2d(np.asarray(K, dtype=np.float64))
        if self.K.shape[1] != self.lam.size:
            raise ValueError(f"K must have shape (p, {self.lam.size}), got {self.K.shape}")
        if np.any(self.lam <= 0):
            raise ValueError("slow_curvatures must be > 0")
        self.p = self.K.shape[0]
        self.dim = self.p + self.lam.size
        self.fast_dim = self.p
        self.center = np.zeros(self.dim)

    def value(self, theta):
        _check_theta(theta, self.dim)
        x, y = theta[:, : self.p], theta[:, self.p :]
        return 0.5 * (y * y * self._param("lam", theta)).sum(1) + ((x @ self._param("K", theta)) * y).sum(1)

    def grad(self, theta):
        out = torch.empty_like(theta)
        self.grad_into(theta, out)
        return out

    def grad_into(self, theta, out):
        _check_theta(theta, self.dim)
        x, y = theta[:, : self.p], theta[:, self.p :]
        K = self._param("K", theta)
        slow = out[:, self.p :]  # a strided view: BLAS writes into it directly, no temporary
        slow.copy_(y).mul_(self._param("lam", theta))
        slow.addmm_(x, K)
        out[:, : self.p] = y @ K.T

    def hessian(self, theta=None):
        h = np.zeros((self.dim, self.dim))
        h[: self.p, self.p :] = self.K
        h[self.p :, : self.p] = self.K.T
        h[self.p :, self.p :] = np.diag(self.lam)
        return h


class S1(Landscape):
    """Two-time-scale composition F(x, y) = F0(x) + eps F1(x, y) (the stylized loss S1).

    Parameters
    ----------
    fast : Landscape
        F0 on R^p (its dimension fixes p = ``fast_dim``).
    coupling : Landscape
        F1 on R^(p+q), evaluated at the concatenation (x, y).
    eps : float
        Strength of the weak dependence, 0 < eps; the y-gradient carries eps, so y moves on the
        time scale 1/(a eps) steps.
    """

    def __init__(self, fast: Landscape, coupling: Landscape, eps: float):
        if coupling.dim <= fast.dim:
            raise ValueError("coupling must act on (x, y) with dim(y) >= 1")
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        self.fast, self.coupling, self.eps = fast, coupling, float(eps)
        self.dim = coupling.dim
        self.fast_dim = fast.dim

    def value(self, theta):
        _check_theta(theta, self.dim)
        return self.fast.value(theta[:, : self.fast_dim]) + self.eps * self.coupling.value(theta)

    def grad(self, theta):
        _check_theta(theta, self.dim)
        g = self.coupling.grad(theta).mul_(self.eps)
        g[:, : self.fast_dim] += self.fast.grad(theta[:, : self.fast_dim])
        return g

    def grad_into(self, theta, out):
        _check_theta(theta, self.dim)
        self.coupling.grad_into(theta, out)
        out.mul_(self.eps)
        out[:, : self.fast_dim] += self.fast.grad(theta[:, : self.fast_dim])

    @property
    def is_quadratic(self):
        return self.fast.is_quadratic and self.coupling.is_quadratic

    def hessian(self, theta):
        theta = np.asarray(theta, dtype=np.float64)
        h = self.eps * self.coupling.hessian(theta)
        p = self.fast_dim
        h[:p, :p] += self.fast.hessian(theta[:p])
        return h

    def as_quadratic(self) -> Quadratic:
        """The equivalent :class:`Quadratic` when both parts are quadratic."""
        if not self.is_quadratic:
            raise NotImplementedError("S1 is a quadratic only when fast and coupling parts are")
        H = self.hessian(np.zeros(self.dim))
        # a quadratic's gradient is H theta + grad(0), so its centre solves H c = -grad(0); any quadratic
        # parts work (Quadratic, BilinearCoupling, ...), not only those that store a centre
        g0 = self.grad(torch.zeros(1, self.dim, dtype=torch.float64))[0].numpy()
        return Quadratic(H, np.linalg.solve(H, -g0), fast_dim=self.fast_dim)

    def critical_points(self):
        return [self._critical(c.location) for c in self.as_quadratic().critical_points()]

    @classmethod
    def quadratic(cls, fast_curvature: float, slow_curvature: float, coupling: float, eps: float) -> "S1":
        """The 1+1 dimensional S1 quadratic F = lx x^2/2 + eps (ly y^2/2 + k x y).

        Hessian [[lx, eps k], [eps k, eps ly]]; the fast equilibrium is lambda(y) = -eps k y / lx
        and the origin is a minimum iff lx * ly > eps * k^2 (checked).
        """
        lx, ly, k = float(fast_curvature), float(slow_curvature), float(coupling)
        if lx <= 0 or ly <= 0:
            raise ValueError(f"curvatures must be > 0, got fast={lx}, slow={ly}")
        if lx * ly <= eps * k * k:
            raise ValueError(f"S1 quadratic not positive definite: need lx*ly > eps*k^2, got {lx}*{ly} <= {eps}*{k}^2")
        return cls(Quadratic([[lx]]), Quadratic([[0.0, k], [k, ly]]), eps)


class TiltedWell:
    """A family of fast landscapes F0(x; c) = W(x) + c x, with W a :class:`DoubleWell`.

    The control c tilts the well; for |c| large enough one minimum disappears (a fold), which is
    where the fast variable jumps in the modulated model.
    """

    dim = 1
    n_controls = 1

    def __init__(self, well: DoubleWell | None = None):
        self.well = well if well is not None else DoubleWell()

    def value(self, x, c):
        return self.well.f(x[:, 0]) + c[:, 0] * x[:, 0]

    def grad_x(self, x, c):
        return self.well.df(x) + c

    def grad_c(self, x, c):
        return x.clone()

    def equilibria(self, c: float) -> list[tuple[float, int]]:
        """Real critical points of F0(.; c): roots of k(x-l)(x-s)(x-r) + c, with Morse index."""
        w = self.well
        e1, e2, e3 = w._e
        roots = np.roots([w.scale, -w.scale * e1, w.scale * e2, -w.scale * e3 + c])
        real = np.sort(roots[np.abs(roots.imag) < 1e-9].real)
        return [(float(x), int(w.d2f(x) < 0)) for x in real]


class Modulated(Landscape):
    """Modulated two-time-scale loss F(x, y) = F0(x; c(y)) + eps F1(y), c(y) = eps A^T y.

    A modelling **choice**: the slow variable moves a control parameter of the fast
    landscape, which creates and destroys fast equilibria along the slow path.

    Parameters
    ----------
    family : TiltedWell or any object with ``dim``, ``n_controls``, ``value(x, c)``,
        ``grad_x(x, c)``, ``grad_c(x, c)``
    slow : Landscape
        F1 on R^q.
    A : array_like, shape (q, n_controls)
    eps : float
    """

    def __init__(self, family, slow: Landscape, A, eps: float):
        self.family, self.slow, self.eps = family, slow, float(eps)
        self.A = np.atleast_2d(np.asarray(A, dtype=np.float64))
        if self.A.shape != (slow.dim, family.n_controls):
            raise ValueError(f"A must have shape ({slow.dim}, {family.n_controls}), got {self.A.shape}")
        self.fast_dim = family.dim
        self.dim = family.dim + slow.dim

    def control(self, y: torch.Tensor) -> torch.Tensor:
        return self.eps * (y @ self._param("A", y))

    def value(self, theta):
        _check_theta(theta, self.dim)
        x, y = theta[:, : self.fast_dim], theta[:, self.fast_dim :]
        return self.family.value(x, self.control(y)) + self.eps * self.slow.value(y)

    def grad(self, theta):
        _check_theta(theta, self.dim)
        x, y = theta[:, : self.fast_dim], theta[:, self.fast_dim :]
        c = self.control(y)
        gy = self.eps * (self.family.grad_c(x, c) @ self._param("A", y).T + self.slow.grad(y))
        return torch.cat([self.family.grad_x(x, c), gy], dim=1)


class SlowlyDriven(Landscape):
    """A fast landscape whose control is moved by one slow scalar: theta = (x, y), x in R^p.

        F(x, y) = F0(x; c(y)) + eps (y - y_target)^2 / 2.

    The field the engine follows is (grad_x F0(x; c(y)), eps (y - y_target)): y is driven by its
    own loss with weight eps and, with no noise on y, relaxes to y_target at rate a eps per step,

        y_k = y_target + (y_0 - y_target) (1 - a eps)^k.

    The pull of x on y, c'(y) dF0/dc, is left out (a modelling **choice**: y stands for a part of
    the model shared by many outputs, whose share of one output's gradient vanishes). The field
    is therefore not the gradient of :meth:`value`, which is the loss the fast variable sees.

    Subclasses set ``fast_dim`` and implement :meth:`c_of`, :meth:`fast_value` and
    :meth:`fast_grad` (c given per chain).

    Parameters
    ----------
    fast_dim : int
    eps : float
        Weight of the slow loss (> 0).
    y_target : float
        Minimum of the slow loss.
    """

    def __init__(self, fast_dim: int, eps: float, y_target: float):
        if not (np.isfinite(eps) and eps > 0):
            raise ValueError(f"eps must be > 0, got {eps}")
        if not np.isfinite(y_target):
            raise ValueError(f"y_target must be finite, got {y_target}")
        self.eps, self.y_target = float(eps), float(y_target)
        self.fast_dim = int(fast_dim)
        self.dim = self.fast_dim + 1

    def c_of(self, y):
        """The control c(y), for a number, an array or a tensor."""
        raise NotImplementedError

    def fast_value(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """F0(x; c) for chains x (n, p) and controls c (n,)."""
        raise NotImplementedError

    def fast_grad(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """grad_x F0(x; c), shape (n, p)."""
        raise NotImplementedError

    def slow_path(self, y0: float, step: float, k) -> np.ndarray:
        """y_k of the noise-free slow recursion y_{k+1} = y_k - a eps (y_k - y_target)."""
        return self.y_target + (y0 - self.y_target) * (1 - step * self.eps) ** np.asarray(k, dtype=np.float64)

    def value(self, theta):
        _check_theta(theta, self.dim)
        x, y = theta[:, :-1], theta[:, -1]
        return self.fast_value(x.contiguous(), self.c_of(y)) + 0.5 * self.eps * (y - self.y_target) ** 2

    def grad(self, theta):
        _check_theta(theta, self.dim)
        out = torch.empty_like(theta)
        out[:, :-1] = self.fast_grad(theta[:, :-1].contiguous(), self.c_of(theta[:, -1]))
        out[:, -1] = self.eps * (theta[:, -1] - self.y_target)
        return out


class DrivenTiltedWell(SlowlyDriven):
    """A double well tilted by a slow variable through its folds (the double-descent model).

        F0(x; c) = W(x) - c x,   c(y) = y   or   c(y) = c_end - kappa (y - y_start)(y_target - y),

    with W a :class:`DoubleWell`. A minimum of F0 sits where W'(x) = c. The left branch exists
    while c < c_f = W'(x_f), x_f the left root of W'' (the local maximum of W' left of the
    barrier); at c = c_f the left minimum merges with the barrier top and vanishes (a fold), and
    a chain riding the left branch jumps to the right one. For the symmetric default
    W = x^4/4 - x^2/2: x_f = -1/sqrt(3), c_f = 2 / (3 sqrt(3)) ~ 0.385, and symmetrically the
    right branch exists while c > -c_f.

    The monotone tilt c = y (the default) moves the chain across one fold. The non-monotone tilt
    (``kappa`` > 0, with ``c_end`` and ``y_start``) is c_end at both ends of the slow path from
    y_start to y_target and dips by kappa (y_target - y_start)^2 / 4 in the middle (a modelling
    **choice**: the pull toward one branch first grows, then recedes). With c_end > c_f and a dip
    below -c_f, the right branch vanishes at a first fold (c falls through -c_f) and the left one at
    a second (c climbs back through c_f): the chain goes right, left, right again.

    Parameters
    ----------
    eps, y_target : float
        As in :class:`SlowlyDriven`.
    well : DoubleWell, optional
    kappa, c_end, y_start : float, optional
        The non-monotone tilt: all three, or none.
    """

    def __init__(self, eps: float, y_target: float, well: DoubleWell | None = None, *, kappa: float | None = None,
                 c_end: float | None = None, y_start: float | None = None):
        super().__init__(1, eps, y_target)
        self.well = well if well is not None else DoubleWell()
        given = [v is not None for v in (kappa, c_end, y_start)]
        if any(given) and not all(given):
            raise ValueError("the non-monotone tilt needs kappa, c_end and y_start together")
        if all(given) and not (np.isfinite([kappa, c_end, y_start]).all() and kappa > 0):
            raise ValueError(f"need kappa > 0 and finite c_end, y_start; got {kappa}, {c_end}, {y_start}")
        self.kappa, self.c_end, self.y_start = kappa, c_end, y_start

    def c_of(self, y):
        if self.kappa is None:
            return y
        return self.c_end - self.kappa * (y - self.y_start) * (self.y_target - y)

    def fold_steps(self, step: float) -> tuple[float, float]:
        """(k_1, k_2): the steps at which the noise-free slow path from ``y_start`` takes the
        non-monotone tilt below -c_f (the right branch vanishes) and back above c_f (the left one
        vanishes). With u = y_target - y_k = Delta (1 - a eps)^k, Delta = y_target - y_start, the
        tilt is c_end - kappa u (Delta - u), so each crossing solves a quadratic in u."""
        if self.kappa is None:
            raise ValueError("fold_steps needs the non-monotone tilt (kappa, c_end, y_start)")
        c_f, _ = self.fold("left")
        d = self.y_target - self.y_start
        roots = []
        for level, sign in ((self.c_end + c_f, 1.0), (self.c_end - c_f, -1.0)):
            disc = d * d - 4 * level / self.kappa
            if disc <= 0 or level <= 0:
                raise ValueError(f"the tilt does not cross {'-' if sign > 0 else '+'}c_f: need c_end > c_f = "
                                 f"{c_f:.4g} and a dip kappa Delta^2 / 4 > c_end + c_f")
            u = 0.5 * (d + sign * math.sqrt(disc))
            roots.append(math.log(d / u) / -math.log1p(-step * self.eps))
        return roots[0], roots[1]

    def fast_value(self, x, c):
        return self.well.f(x[:, 0]) - c * x[:, 0]

    def fast_grad(self, x, c):
        return self.well.df(x) - c[:, None]

    def fold(self, branch: str = "left") -> tuple[float, float]:
        """(c_f, x_f): the control at which ``branch``'s minimum vanishes, and where. The left
        branch exists for c < c_f, the right one for c > c_f."""
        if branch not in ("left", "right"):
            raise ValueError(f"branch must be 'left' or 'right', got {branch!r}")
        w = self.well
        e1, e2, _ = w._e
        roots = np.sort(np.roots([3.0, -2 * e1, e2]).real)  # W'' = k (3x^2 - 2 e1 x + e2)
        x_f = float(roots[0] if branch == "left" else roots[1])
        return float(w.df(x_f)), x_f

    def branch(self, c: float, branch: str) -> float:
        """Position of ``branch``'s minimum of F0(.; c) (nan where the branch does not exist)."""
        c_f, _ = self.fold(branch)
        if (branch == "left" and c >= c_f) or (branch == "right" and c <= c_f):
            return float("nan")
        mins = [x for x, idx in TiltedWell(self.well).equilibria(-c) if idx == 0]
        return float(mins[0] if branch == "left" else mins[-1])

    def __repr__(self) -> str:
        w = self.well
        tilt = "" if self.kappa is None else f", kappa={self.kappa:g}, c_end={self.c_end:g}, y_start={self.y_start:g}"
        return (f"DrivenTiltedWell(eps={self.eps:g}, y_target={self.y_target:g}, "
                f"well=DoubleWell({w.left:g}, {w.saddle:g}, {w.right:g}, {w.scale:g}){tilt})")


class LeastSquares(Landscape):
    """Finite-sum least squares: F(theta) = (1/n) sum_i 1/2 (u_i . theta - v_i)^2.

    Its per-sample gradients feed :class:`memdyn.noise.Minibatch`.
    Its gradient noise is multiplicative (it vanishes at an interpolating solution).
    """

    def __init__(self, U, v):
        self.U = np.atleast_2d(np.asarray(U, dtype=np.float64))
        self.v = np.asarray(v, dtype=np.float64).ravel()
        if self.U.shape[0] != self.v.size or self.U.shape[0] < 1:
            raise ValueError(f"U (n, d) and v (n,) must agree and be non-empty, got {self.U.shape}, {self.v.shape}")
        self.n_samples, self.dim = self.U.shape
        H = self.U.T @ self.U / self.n_samples
        center = np.linalg.lstsq(self.U, self.v, rcond=None)[0]
        self._quadratic = Quadratic(H, center)
        self._offset = 0.5 * float(np.mean((self.U @ center - self.v) ** 2))
        self.fast_dim = self.dim

    def value(self, theta):
        return self._quadratic.value(theta) + self._offset

    def grad(self, theta):
        return self._quadratic.grad(theta)

    def hessian(self, theta=None):
        return self._quadratic.H.copy()

    def critical_points(self):
        return self._quadratic.critical_points()

    def per_sample_grad(self, theta: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Gradients of the samples ``idx`` (n, b) at ``theta`` (n, d): shape (n, b, d)."""
        U = torch.as_tensor(self.U, dtype=theta.dtype, device=theta.device)[idx]
        v = torch.as_tensor(self.v, dtype=theta.dtype, device=theta.device)[idx]
        resid = torch.einsum("nbd,nd->nb", U, theta) - v
        return U * resid[..., None]
