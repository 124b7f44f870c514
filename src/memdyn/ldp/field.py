"""A drift and a diffusion matrix, validated once and evaluated on batches of points.

The quasi-potential solvers work with the small-noise SDE dX = b(X) dt + sqrt(eps) D(X)^{1/2} dW
and its Hamiltonian H(x, theta) = <b(x), theta> + 1/2 <theta, D(x) theta>. :class:`Field` holds
b and D, checks what the user passed (a function of the right shape, a positive-definite
diffusion) and gives the solvers what they need: b, D, D^-1 and dH/dx at fixed theta. The latter
comes from torch autograd when the drift accepts torch tensors (most drifts written with array
arithmetic do), from a user-supplied Jacobian, or else from central finite differences.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["Field", "as_field"]


class Field:
    """Drift b and diffusion D of dX = b(X) dt + sqrt(eps) D(X)^{1/2} dW.

    Parameters
    ----------
    drift : callable
        ``drift(x)`` maps an array of points of shape (n, d) to velocities of shape (n, d). It may
        be written for numpy arrays or torch tensors; if it accepts a float64 torch tensor and
        returns one, autograd supplies its derivatives.
    dim : int
        d, the dimension of the state space.
    diffusion : None, array_like (d, d) or callable, optional
        D: identity if None; a constant symmetric positive-definite matrix; or ``diffusion(x)``
        mapping (n, d) points to (n, d, d) matrices (numpy in, numpy out). A scalar s means s I.
    jacobian : callable, optional
        ``jacobian(x)`` mapping (n, d) points to (n, d, d) matrices db_i/dx_j; used instead of
        autograd or finite differences.
    """

    def __init__(self, drift: Callable, dim: int, diffusion=None, jacobian: Callable | None = None):
        if not callable(drift):
            raise TypeError(f"drift must be a function mapping points of shape (n, d) to velocities of shape (n, d), "
                            f"got {type(drift).__name__}")
        if jacobian is not None and not callable(jacobian):
            raise TypeError(f"jacobian must be a function mapping (n, d) points to (n, d, d) matrices, "
                            f"got {type(jacobian).__name__}")
        self.dim = int(dim)
        self._drift, self._jacobian = drift, jacobian
        self._torch = self._probe_torch()
        self.constant_diffusion = not callable(diffusion)
        if diffusion is None:
            self._D = np.eye(self.dim)
        elif callable(diffusion):
            self._D = diffusion
        else:
            D = np.asarray(diffusion, dtype=np.float64)
            if D.ndim == 0:
                D = float(D) * np.eye(self.dim)
            if D.shape != (self.dim, self.dim):
                raise ValueError(f"diffusion must be a ({self.dim}, {self.dim}) matrix, a scalar or a function, "
                                 f"got shape {D.shape}")
            _check_spd(D[None], np.zeros((1, self.dim)))
            self._D = D
        if self.constant_diffusion:
            self._Dinv = np.linalg.inv(self._D)
        self.b(np.zeros((self.dim + 3, self.dim)))  # shape check with a clear message before any solver starts

    # -- evaluation -------------------------------------------------------------------------------
    def _probe_torch(self) -> bool:
        import torch

        n = self.dim + 3  # a batch size that cannot be mistaken for the dimension
        x = torch.zeros((n, self.dim), dtype=torch.float64, requires_grad=True)
        try:
            out = self._drift(x)
        except Exception:  # noqa: BLE001 - any failure means: not torch-capable, use numpy
            return False
        return isinstance(out, torch.Tensor) and tuple(out.shape) == (n, self.dim) and out.requires_grad

    def b(self, x: np.ndarray) -> np.ndarray:
        """Drift at points x (n, d) as a float64 array (n, d)."""
        x = np.ascontiguousarray(x, dtype=np.float64)
        if self._torch:
            import torch

            with torch.no_grad():
                out = self._drift(torch.from_numpy(x)).numpy()
        else:
            try:
                out = np.asarray(self._drift(x), dtype=np.float64)
            except Exception as exc:
                raise TypeError(f"drift must accept a batch of points of shape (n, d) and return velocities of shape "
                                f"(n, d); calling it on shape {x.shape} failed: {exc}") from exc
        if out.shape != x.shape:
            raise ValueError(f"drift must map points of shape (n, d) = {x.shape} to velocities of the same shape, "
                             f"got shape {out.shape}")
        if not np.all(np.isfinite(out)):
            bad = x[np.flatnonzero(~np.isfinite(out).all(axis=1))[0]]
            raise FloatingPointError(f"drift is not finite at x = {bad.tolist()}")
        return out

    def D(self, x: np.ndarray) -> np.ndarray:
        """Diffusion at points x: (d, d) if constant, else (n, d, d) (checked positive definite)."""
        if self.constant_diffusion:
            return self._D
        out = np.asarray(self._D(np.asarray(x, dtype=np.float64)), dtype=np.float64)
        if out.shape != (len(x), self.dim, self.dim):
            raise ValueError(f"diffusion must map points of shape (n, d) = {np.shape(x)} to matrices of shape "
                             f"(n, d, d), got shape {out.shape}")
        _check_spd(out, x)
        return out

    def Dinv(self, x: np.ndarray, D: np.ndarray | None = None) -> np.ndarray:
        """D^-1 at points x, (d, d) or (n, d, d)."""
        if self.constant_diffusion:
            return self._Dinv
        return np.linalg.inv(self.D(x) if D is None else D)

    def jacobian(self, x: np.ndarray) -> np.ndarray:
        """db_i/dx_j at points x, shape (n, d, d)."""
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        if self._jacobian is not None:
            J = np.asarray(self._jacobian(x), dtype=np.float64)
            if J.shape != (len(x), self.dim, self.dim):
                raise ValueError(f"jacobian must return shape (n, d, d) = {(len(x), self.dim, self.dim)}, got {J.shape}")
            return J
        cols = [self.grad_h(x, np.broadcast_to(np.eye(self.dim)[i], x.shape), drift_only=True) for i in range(self.dim)]
        return np.stack(cols, axis=1)  # row i: gradient of b_i

    def grad_h(self, x: np.ndarray, theta: np.ndarray, drift_only: bool = False) -> np.ndarray:
        """dH/dx at fixed theta: J(x)^T theta + 1/2 d/dx <theta, D(x) theta>, shape (n, d)."""
        x = np.ascontiguousarray(x, dtype=np.float64)
        theta = np.asarray(theta, dtype=np.float64)
        if self._torch:
            import torch

            xt = torch.from_numpy(x.copy()).requires_grad_(True)
            s = (self._drift(xt) * torch.from_numpy(np.array(theta))).sum()
            g = torch.autograd.grad(s, xt)[0].numpy()
        elif self._jacobian is not None:
            g = np.einsum("nij,ni->nj", self.jacobian(x), theta)
        else:
            g = self._fd(lambda z: np.einsum("ni,ni->n", self.b(z), theta), x)
        if not (drift_only or self.constant_diffusion):
            g = g + self._fd(lambda z: 0.5 * np.einsum("ni,nij,nj->n", theta, self.D(z), theta), x)
        return g

    @staticmethod
    def _fd(f, x: np.ndarray) -> np.ndarray:
        """Central differences of a per-point scalar f: (n, d) -> (n,), error O(delta^2)."""
        out = np.empty_like(x)
        delta = 1e-5 * np.maximum(1.0, np.abs(x))
        for k in range(x.shape[1]):
            e = np.zeros_like(x)
            e[:, k] = delta[:, k]
            out[:, k] = (f(x + e) - f(x - e)) / (2 * delta[:, k])
        return out

    # -- fixed points -----------------------------------------------------------------------------
    def stable_point(self, x0: ArrayLike, name: str = "attractor", tol: float = 1e-8) -> np.ndarray:
        """Refine ``x0`` to a fixed point of b by Newton's method and check that it is stable
        (every eigenvalue of the Jacobian has negative real part). Raises ValueError otherwise."""
        x = self.point(x0, name)
        scale = max(1.0, float(np.abs(x).max()))
        for _ in range(50):
            r = self.b(x[None])[0]
            if np.linalg.norm(r) < tol * scale:
                break
            try:
                x = x - np.linalg.solve(self.jacobian(x)[0], r)
            except np.linalg.LinAlgError:
                break
        r = self.b(x[None])[0]
        if np.linalg.norm(r) > 1e-6 * scale or np.linalg.norm(x - np.asarray(x0, dtype=np.float64)) > 0.05 * scale:
            raise ValueError(f"{name} {np.asarray(x0).tolist()} is not a fixed point of the drift: |b| = "
                             f"{np.linalg.norm(self.b(self.point(x0, name)[None])[0]):.3g} there and Newton's method "
                             "finds no fixed point nearby")
        eig = np.linalg.eigvals(self.jacobian(x)[0])
        if np.max(eig.real) >= 0:
            raise ValueError(f"{name} {x.tolist()} is not a stable point of the drift: the Jacobian there has "
                             f"eigenvalues {np.round(eig, 6).tolist()} (all real parts must be < 0)")
        return x

    def point(self, x: ArrayLike, name: str) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        if x.shape != (self.dim,) or not np.all(np.isfinite(x)):
            raise ValueError(f"{name} must be a finite point of dimension {self.dim}, got {x.tolist()}")
        return x

    def lyapunov(self, x_star: np.ndarray) -> np.ndarray:
        """Sigma with A Sigma + Sigma A^T + D(x*) = 0, A = Jacobian at the attractor x*: near x*,
        V(x) = 1/2 (x - x*)^T Sigma^-1 (x - x*) + O(|x - x*|^3)."""
        from scipy.linalg import solve_continuous_lyapunov

        A = self.jacobian(x_star)[0]
        D = self.D(x_star[None])
        D = D if D.ndim == 2 else D[0]
        return solve_continuous_lyapunov(A, -D)


def as_field(drift, dim: int, diffusion=None, jacobian=None) -> Field:
    """``drift`` if it is already a :class:`Field`, else a new one."""
    if isinstance(drift, Field):
        return drift
    return Field(drift, dim, diffusion, jacobian)


def _check_spd(D: np.ndarray, x: np.ndarray) -> None:
    if not np.allclose(D, np.swapaxes(D, -1, -2), rtol=1e-10, atol=1e-12):
        i = int(np.flatnonzero(~(np.isclose(D, np.swapaxes(D, -1, -2)).reshape(len(D), -1).all(axis=1)))[0])
        raise ValueError(f"diffusion must be symmetric positive definite; it is not symmetric at x = {x[i].tolist()}")
    eig = np.linalg.eigvalsh(D)
    bad = np.flatnonzero(eig[:, 0] <= 0)
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"diffusion must be positive definite; at x = {np.asarray(x)[i].tolist()} its smallest "
                         f"eigenvalue is {eig[i, 0]:.3g}")
