"""Saddles of a gradient system by the string method.

For b = -grad F, the minimum energy path between two minima is a curve along which grad F is
parallel to the tangent; its highest point is an index-1 saddle. The simplified string method
(E, Ren and Vanden-Eijnden, J. Chem. Phys. 126, 164103, 2007) finds it: move every image of a
discretised curve down the gradient, phi_k <- phi_k - dt grad F(phi_k), then redistribute the
images at equal arc length; the fixed point is the minimum energy path. The highest image is then
refined by Newton's method on grad F = 0 and checked to have exactly one unstable direction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import ArrayLike

__all__ = ["EnergyPath", "minimum_energy_path"]


@dataclass(frozen=True)
class EnergyPath:
    """Result of :func:`minimum_energy_path`.

    Attributes
    ----------
    path : ndarray (n_images, d)
        The converged string, from ``start`` to ``end``.
    energy : ndarray (n_images,)
        F along it.
    saddle : ndarray (d,)
        The index-1 saddle on it (Newton-refined highest image).
    barrier : float
        F(saddle) - F(start).
    iterations : int
    """

    path: np.ndarray
    energy: np.ndarray
    saddle: np.ndarray
    barrier: float
    iterations: int


def _grad(landscape, x: np.ndarray) -> np.ndarray:
    return landscape.grad(torch.as_tensor(x, dtype=torch.float64)).numpy()


def _value(landscape, x: np.ndarray) -> np.ndarray:
    return landscape.value(torch.as_tensor(x, dtype=torch.float64)).numpy()


def _hessian(landscape, x: np.ndarray, eps: float) -> np.ndarray:
    d = x.size
    E = np.eye(d) * eps
    g = _grad(landscape, np.concatenate([x + E, x - E]))
    H = (g[:d] - g[d:]).T / (2 * eps)
    return 0.5 * (H + H.T)


def _arclength(phi: np.ndarray) -> np.ndarray:
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(phi, axis=0), axis=1))])
    return s / s[-1]


def _redistribute(phi: np.ndarray) -> np.ndarray:
    s, u = _arclength(phi), np.linspace(0.0, 1.0, len(phi))
    return np.stack([np.interp(u, s, phi[:, j]) for j in range(phi.shape[1])], axis=1)


def minimum_energy_path(landscape, start: ArrayLike, end: ArrayLike, *, n_images: int = 60, tol: float = 1e-7,
                        max_iter: int = 20000) -> EnergyPath:
    """Minimum energy path between two minima of a landscape, and the saddle on it.

    Parameters
    ----------
    landscape : Landscape
        F with ``value`` and ``grad`` on (n, d) float64 tensors.
    start, end : array_like (d,)
        Two minima (the string's ends stay fixed; pass refined minima).
    n_images : int
        Points on the string (>= 5).
    tol : float
        Stop when the largest move of an image in one iteration, divided by dt, is below ``tol``
        times the largest gradient on the initial straight segment.
    max_iter : int

    Returns
    -------
    EnergyPath

    Raises
    ------
    ValueError
        If the string does not converge, or the refined highest point is not an index-1 saddle
        (for example when the straight segment between the two minima crosses a third basin and
        the path bends through it: pass the minima of one transition at a time).
    """
    a, b = (np.asarray(p, dtype=np.float64).ravel() for p in (start, end))
    if a.shape != b.shape or a.size != landscape.dim:
        raise ValueError(f"start and end must be points of dimension {landscape.dim}, got {a.shape} and {b.shape}")
    if n_images < 5:
        raise ValueError(f"n_images must be >= 5, got {n_images}")
    length = float(np.linalg.norm(b - a))
    if length == 0:
        raise ValueError("start and end are the same point")
    phi = a + np.linspace(0.0, 1.0, n_images)[:, None] * (b - a)
    lam = max(float(np.abs(np.linalg.eigvalsh(_hessian(landscape, p, 1e-6 * max(1.0, length)))).max()) for p in (a, b))
    g0 = np.abs(_grad(landscape, phi)).max()
    dt = 0.5 / max(lam, 1e-12)
    it = 0
    for it in range(1, max_iter + 1):
        new = phi.copy()
        new[1:-1] -= dt * _grad(landscape, phi[1:-1])
        new = _redistribute(new)
        move = np.abs(new - phi).max() / dt
        phi = new
        if move < tol * max(g0, 1e-300):
            break
    else:
        raise ValueError(f"the string between {a.tolist()} and {b.tolist()} did not converge in {max_iter} iterations")
    energy = _value(landscape, phi)
    x = phi[int(np.argmax(energy[1:-1])) + 1].copy()
    for _ in range(50):
        g = _grad(landscape, x[None])[0]
        if np.linalg.norm(g) < 1e-11 * max(1.0, g0):
            break
        x = x - np.linalg.solve(_hessian(landscape, x, 1e-6 * max(1.0, length)), g)
    H = _hessian(landscape, x, 1e-6 * max(1.0, length))
    n_down = int(np.sum(np.linalg.eigvalsh(H) < 0))
    if np.linalg.norm(_grad(landscape, x[None])[0]) > 1e-7 * max(1.0, g0) or n_down != 1:
        raise ValueError(f"no index-1 saddle found between {a.tolist()} and {b.tolist()} (Newton ended at "
                         f"{x.tolist()} with {n_down} unstable directions)")
    fa = float(_value(landscape, a[None])[0])
    return EnergyPath(phi, energy, x, float(_value(landscape, x[None])[0]) - fa, it)
