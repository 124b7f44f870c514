"""The quasi-potential of an attractor on a 2-D mesh by an ordered line-integral method.

V(x; K) = inf over curves from the attractor K to x of the geometric action
int |phi'|_D |b|_D - <phi', b>_D (see :mod:`memdyn.ldp.mam`). Like Dijkstra's algorithm, mesh
points are accepted in increasing order of V. When a point p is accepted, every point y within
``radius`` mesh cells of it that is not yet accepted gets the candidate values

* one-point update: V(p) + the least action over the arcs p + s v + 4 s (1 - s) c n from p to
  y (v = y - p, n = v turned by 90 degrees, c the bulge: the sagitta over the chord), by
  Simpson's rule in s with b at the displaced midpoint from its Jacobian; the bulge comes from
  Newton's method in c, starting from the straight chord;
* triangle updates, for each accepted axis neighbour p1 of p: min over lambda in [0, 1] of
  V(p_lambda) + the action of the arc p_lambda -> y with the same bulge, where p_lambda runs along
  the edge from p to p1. V(p_lambda) is interpolated quadratically along the edge (with the
  second difference from an accepted point beyond it, when there is one); b along the arc is
  linear in lambda (the midpoints of p -> y and p1 -> y lie on the half-spaced mesh, where b, its
  Jacobian and D are evaluated once). A triangle whose end tangents meet above the best value so
  far is skipped,

and keeps the least: an ordered line-integral method (Dahiya & Cameron, J. Sci. Comput. 2018)
whose update paths are arcs rather than straight segments. Optimal paths curve, strongly so when
they spiral around a focus (Jacobian eigenvalues with |Im| >> |Re|): a straight chord of length L
through a spiral of radius R overestimates its action by a relative 2 (L/R)^2 at |Im/Re| = 10,
the best arc by about (L/R)^4. The points within ``init_radius`` cells of the attractor start from
the linearisation V = 1/2 (x - x*)^T Sigma^-1 (x - x*), A Sigma + Sigma A^T + D(x*) = 0.

The update radius must exceed :func:`characteristic_slope`: where optimal paths run nearly along
the level sets of V (rotation, non-normal drift, anisotropic D), the path into a point just
outside the accepted region crosses the region's edge that many cells away. The default radius
is that slope + 3 cells, between 8 and 24. Measured on b = A x, A = [[-1, -r], [r, -1]], D = I
(V = |x|^2, box [-1, 1]^2, error = max |V - V_exact| / max V over V <= 0.9): at n = 201, r = 10,
radius 6, 8, 12, 16: 1.8e-3, 3.8e-4, 1.1e-5, 1.1e-5 (default 14); at r = 3 the default 8 gives
3.2e-6. The error is first order in the mesh spacing where V is interpolated linearly along an
edge (no accepted point beyond it for the second difference) and second order where it is
interpolated quadratically, which is most of the mesh: on linear drifts it falls at second order
(r = 10: 1.5e-4, 4.1e-5, 1.1e-5, 2.8e-6 at n = 51, 101, 201, 401), on nonlinear ones at orders
1.4 to 2 (a larger radius brings those closer to 2). See
``benchmarks/quasipotential.py`` for times.

The minimisation is over curves that stay in the box, so V is exact only where the optimal path
does (inside the largest sublevel set of V that fits in the box).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from .field import as_field

__all__ = ["QuasiPotential", "characteristic_slope", "quasipotential_grid"]


@dataclass(frozen=True)
class QuasiPotential:
    """Result of :func:`quasipotential_grid`.

    Attributes
    ----------
    x, y : ndarray
        Mesh coordinates (nx,), (ny,).
    V : ndarray (nx, ny)
        Quasi-potential, ``V[i, j]`` at (x[i], y[j]) (matrix indexing); ``inf`` where not reached.
    attractor : ndarray (2,)
        The attractor (refined to a fixed point of the drift).
    radius : int
        Update radius in mesh cells.
    """

    x: np.ndarray
    y: np.ndarray
    V: np.ndarray
    attractor: np.ndarray
    radius: int

    def __call__(self, points: ArrayLike) -> np.ndarray:
        """V at arbitrary points (k, 2) inside the box, by bilinear interpolation."""
        from scipy.interpolate import RegularGridInterpolator

        pts = np.atleast_2d(np.asarray(points, dtype=np.float64))
        return RegularGridInterpolator((self.x, self.y), self.V, method="linear")(pts)

    def __repr__(self) -> str:
        return (f"QuasiPotential(mesh={self.V.shape}, attractor={np.round(self.attractor, 6).tolist()}, "
                f"radius={self.radius}, max finite V={np.max(self.V[np.isfinite(self.V)]):.4g})")


def characteristic_slope(A: np.ndarray, D: np.ndarray, Sigma: np.ndarray, h=(1.0, 1.0)) -> float:
    """How far sideways the optimal paths run, near a stable point, relative to the level sets of V.

    Near the attractor V = 1/2 x^T Sigma^-1 x and the optimal paths follow x' = (A + D Sigma^-1) x.
    In mesh units (x = diag(h) u) this returns max over directions of tan of the angle between that
    velocity and the normal of the level set, grad V. A point one cell beyond the accepted region is
    reached by an optimal path that crossed the region's edge about this many cells away, so the
    update radius of :func:`quasipotential_grid` must exceed it. It is 0 for a gradient drift with
    D = I on a square mesh and |Im/Re| of the eigenvalues of A for A = -mu I + w J, D = I.

    Parameters
    ----------
    A, D, Sigma : ndarray (2, 2)
        Jacobian of b, diffusion matrix and the stationary covariance of the linearisation
        (A Sigma + Sigma A^T + D = 0) at the attractor.
    h : (float, float)
        Mesh spacings.
    """
    t = np.linspace(0.0, np.pi, 361)
    x = np.stack([np.cos(t), np.sin(t)], 1)
    H = np.asarray(h, dtype=np.float64)
    vel = x @ (A + D @ np.linalg.inv(Sigma)).T / H
    nrm = x @ np.linalg.inv(Sigma).T * H
    cos = np.einsum("ni,ni->n", vel, nrm)
    sin = np.abs(vel[:, 0] * nrm[:, 1] - vel[:, 1] * nrm[:, 0])
    return float(np.max(sin / np.maximum(cos, 1e-12 * sin)))


def quasipotential_grid(drift, attractor: ArrayLike, bounds, n, diffusion=None, *, radius: int | None = None,
                        jacobian=None, init_radius: float = 2.0, vmax: float = np.inf) -> QuasiPotential:
    """Quasi-potential of a stable point of a 2-D drift on a regular mesh.

    Parameters
    ----------
    drift : callable
        b(x) for x of shape (n, 2), returning (n, 2) (numpy or torch arithmetic).
    attractor : array_like (2,)
        A stable fixed point of b (refined by Newton's method; its Jacobian must be Hurwitz).
    bounds : ((x_min, x_max), (y_min, y_max))
        The box; the attractor must lie inside.
    n : int or (int, int)
        Mesh points per axis (>= 8).
    diffusion : None, array_like (2, 2), scalar or callable, optional
        D (identity by default); ``diffusion(x)`` gives (n, 2, 2) for state-dependent noise.
    radius : int, optional
        Update radius K in mesh cells. Default: :func:`characteristic_slope` at the attractor + 3,
        clipped to [8, 24] (8 for gradient-like drifts, 14 at |Im/Re| = 10). Cost grows as K^2; a
        radius below the slope leaves an error that does not shrink with the mesh.
    jacobian : callable, optional
        db/dx as (n, 2, 2), used at the attractor only.
    init_radius : float
        Points within this many cells of the attractor are set from the linearised problem.
    vmax : float
        Stop once the accepted value exceeds this (points beyond stay ``inf``).

    Returns
    -------
    QuasiPotential
        V on the mesh, callable for bilinear interpolation.

    Examples
    --------
    >>> import numpy as np
    >>> b = lambda x: -x  # Ornstein-Uhlenbeck with D = I: V = |x|^2
    >>> qp = quasipotential_grid(b, [0.0, 0.0], [(-1, 1), (-1, 1)], 65)
    >>> abs(float(qp([[0.5, 0.5]])[0]) - 0.5) < 5e-3
    True
    """
    F = as_field(drift, 2, diffusion, jacobian)
    nx, ny = (int(n), int(n)) if np.ndim(n) == 0 else (int(n[0]), int(n[1]))
    if min(nx, ny) < 8:
        raise ValueError(f"n must be >= 8 points per axis, got {n}")
    try:
        (x0, x1), (y0, y1) = bounds
        x0, x1, y0, y1 = float(x0), float(x1), float(y0), float(y1)
    except (TypeError, ValueError):
        raise ValueError(f"bounds must be ((x_min, x_max), (y_min, y_max)), got {bounds!r}") from None
    if not (x0 < x1 and y0 < y1):
        raise ValueError(f"bounds must have x_min < x_max and y_min < y_max, got {bounds!r}")
    xstar = F.stable_point(attractor, "attractor")
    if not (x0 < xstar[0] < x1 and y0 < xstar[1] < y1):
        raise ValueError(f"attractor {xstar.tolist()} lies outside bounds {bounds!r}")
    xs, ys = np.linspace(x0, x1, nx), np.linspace(y0, y1, ny)
    hx, hy = xs[1] - xs[0], ys[1] - ys[0]
    Sigma = F.lyapunov(xstar)
    if radius is None:
        K = int(np.clip(np.ceil(characteristic_slope(F.jacobian(xstar)[0], F.D(xstar[None]).reshape(-1, 2, 2)[0],
                                                     Sigma, (hx, hy))) + 3, 8, 24))
    else:
        K = int(radius)
    if K < 1:
        raise ValueError(f"radius must be >= 1 mesh cell, got {radius}")

    # drift and metric on the half-spaced mesh: the midpoint of nodes (i, j), (k, l) is node (i + k, j + l)
    hxs, hys = np.linspace(x0, x1, 2 * nx - 1), np.linspace(y0, y1, 2 * ny - 1)
    P = np.stack(np.meshgrid(hxs, hys, indexing="ij"), axis=-1).reshape(-1, 2)
    Bh = np.empty((P.shape[0], 2))
    Mh = np.empty((P.shape[0], 3))
    chunk = 1 << 18
    for s in range(0, len(P), chunk):
        p = P[s:s + chunk]
        Bh[s:s + chunk] = F.b(p)
        Minv = F.Dinv(p)
        Minv = np.broadcast_to(Minv, (len(p), 2, 2))
        Mh[s:s + chunk] = np.stack([Minv[:, 0, 0], 0.5 * (Minv[:, 0, 1] + Minv[:, 1, 0]), Minv[:, 1, 1]], axis=1)
    Bh = Bh.reshape(2 * nx - 1, 2 * ny - 1, 2)
    Mh = Mh.reshape(2 * nx - 1, 2 * ny - 1, 3)
    # db/dx on the same mesh by second-order differences: bends the update paths (see the module doc)
    Jh = np.empty((2 * nx - 1, 2 * ny - 1, 4))
    for c in range(2):
        Jh[..., 2 * c], Jh[..., 2 * c + 1] = np.gradient(Bh[..., c], hxs, hys, edge_order=2)

    # linearised start around the attractor
    Sigma_inv = np.linalg.inv(Sigma)
    G = np.stack(np.meshgrid(xs, ys, indexing="ij"), axis=-1).reshape(-1, 2) - xstar
    r = np.sqrt((G[:, 0] / hx) ** 2 + (G[:, 1] / hy) ** 2)
    frozen = r <= max(init_radius, 1.0)
    U = np.full(nx * ny, np.inf)
    U[frozen] = 0.5 * np.einsum("ni,ij,nj->n", G[frozen], Sigma_inv, G[frozen])

    oi, oj = np.meshgrid(np.arange(-K, K + 1), np.arange(-K, K + 1), indexing="ij")
    keep = (oi**2 + oj**2 <= K * K) & ((oi != 0) | (oj != 0))
    from ._olim_kernel import sweep  # numba: imported (and compiled or loaded from cache) on first use

    sweep(U, frozen, xs, ys, Bh, Jh, Mh, oi[keep].astype(np.int64), oj[keep].astype(np.int64), float(vmax))
    return QuasiPotential(x=xs, y=ys, V=U.reshape(nx, ny), attractor=xstar, radius=K)
