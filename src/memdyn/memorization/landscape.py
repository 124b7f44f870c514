"""The memorizing landscape: minus the log-density of a model that is part generalizing, part
memorizing.

With training points s_1 .. s_n in R^D, their mean m and covariance C, a bandwidth h and a
memorization weight c in [0, 1], the model's output density is the mixture

    p_c(x) = (1 - c) N(x; m, C) + c (1/n) sum_i N(x; s_i, h^2 I),

and the fast loss is F0(x; c) = -log p_c(x). Mixing densities (not energies) keeps the
memorizing minima at the training points (within about r_0 |C^-1 (s_i - m)| h^2, r_0 the
generalizing component's weight there: a small fraction of h) and the generalizing one near m,
for every c in (0, 1):
mixing energies linearly, (1 - c) U_gen + c U_mem, would drag the memorizing minima toward m,
where the nearest-neighbour rule d1/d2 < 1/3 no longer fires. Its gradient is a responsibility-
weighted pull, grad F0 = r_0 C^-1 (x - m) + sum_i r_i (x - s_i) / h^2, with r the posterior
weights of the components at x (softmax of their log-weights), computed by log-sum-exp so that
points far from every component (where p_c underflows) keep finite values and gradients. On the
CPU, when no autograd graph is being built, the gradient runs in a compiled loop
(:mod:`memdyn.memorization._grad_kernel`, float64, equal to the tensor version to 1e-12); the
tensor version stays differentiable (the theory differentiates the gradient) and serves GPUs.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numpy.typing import ArrayLike

from ..landscapes import Landscape, SlowlyDriven, _check_theta

__all__ = ["MemorizingLandscape", "ModulatedMemorizingLandscape"]

#: chains x training points evaluated at once (bounds the temporary (chains, n) arrays to ~128 MB)
BLOCK = 1 << 24


def _softmax_rows(logits: torch.Tensor, ones: torch.Tensor) -> torch.Tensor:
    """Softmax of each row; ``ones`` (columns, 1). Row sums by a matrix product: torch's softmax and
    sum along a short last axis are several times slower on the CPU. Differentiable (no in-place
    operation: the theory differentiates the gradient)."""
    r = (logits - logits.amax(1, keepdim=True)).exp()
    return r / (r @ ones)


class MemorizingLandscape(Landscape):
    """F0(x; c) = -log((1 - c) N(x; m, C) + c (1/n) sum_i N(x; s_i, h^2 I)), batched over chains.

    Parameters
    ----------
    train : array_like (n, D)
        Training points s_i (finite, n >= 2); any array, e.g. images projected to a few dimensions.
    bandwidth : float
        h > 0, the width of the memorizing components (same units as ``train``).
    c : float
        Memorization weight in [0, 1] (0: a Gaussian model of the data; 1: the training set
        itself, smoothed by h).
    mean, cov : array_like, optional
        m (D,) and C (D, D) of the generalizing component (default: the data's mean and
        covariance, with C regularised by h^2 I so that it is positive definite).

    Examples
    --------
    >>> import numpy as np, torch
    >>> S = np.array([[-1.0, 0.0], [1.0, 0.0], [0.0, 1.5]])
    >>> F = MemorizingLandscape(S, bandwidth=0.1, c=0.5)
    >>> g = F.grad(torch.tensor(S))  # a Newton step from each training point moves it by ~ |g| h^2
    >>> bool(torch.all(g.abs() * 0.1**2 < 0.01 * 0.1))  # under 1% of the bandwidth: minima sit at the s_i
    True
    """

    def __init__(self, train: ArrayLike, bandwidth: float, c: float, mean: ArrayLike | None = None,
                 cov: ArrayLike | None = None):
        S = np.asarray(train, dtype=np.float64)
        if S.ndim != 2 or S.shape[0] < 2 or S.shape[1] < 1:
            raise ValueError(f"train must be an array of shape (n >= 2, D >= 1), got shape {S.shape}")
        if not np.all(np.isfinite(S)):
            raise ValueError("train must be finite (found NaN or inf)")
        if not (np.isfinite(bandwidth) and bandwidth > 0):
            raise ValueError(f"bandwidth must be > 0, got {bandwidth}")
        if not 0 <= c <= 1:
            raise ValueError(f"c must be in [0, 1], got {c}")
        self.train, self.h, self.c = S, float(bandwidth), float(c)
        self.n, self.dim = S.shape
        self.fast_dim = self.dim
        self.mean = S.mean(axis=0) if mean is None else np.asarray(mean, dtype=np.float64).reshape(self.dim)
        C = (np.cov(S.T).reshape(self.dim, self.dim) + self.h**2 * np.eye(self.dim)) if cov is None \
            else np.asarray(cov, dtype=np.float64).reshape(self.dim, self.dim)
        try:
            L = np.linalg.cholesky(C)
        except np.linalg.LinAlgError:
            raise ValueError("cov must be symmetric positive definite") from None
        self.cov, self.cov_inv = C, np.linalg.inv(C)
        D = self.dim
        # normalising constants of the components' log-densities (the weights log(1 - c), log(c / n) added apart)
        self.log_norm0 = -0.5 * D * math.log(2 * math.pi) - float(np.sum(np.log(np.diag(L))))
        self.log_normi = -math.log(self.n) - 0.5 * D * math.log(2 * math.pi * self.h**2)
        self.log_w0 = (math.log1p(-self.c) if self.c < 1 else -math.inf) + self.log_norm0
        self.log_wi = (math.log(self.c) if self.c > 0 else -math.inf) + self.log_normi
        self.sq_train = np.sum(S * S, axis=1)
        self._ones_dim, self._ones_parts = np.ones((D, 1)), np.ones((self.n + 1, 1))

    # -- evaluation ----------------------------------------------------------------------------
    def _blocks(self, theta: torch.Tensor):
        step = max(1, BLOCK // self.n)
        for k in range(0, theta.shape[0], step):
            yield k, theta[k:k + step]

    def _log_parts(self, x: torch.Tensor, c: torch.Tensor | None = None):
        """Per-component log-weights at x: (chains,) generalizing, (chains, n) memorizing; ``c``
        (chains,) overrides the memorization weight chain by chain."""
        S, sq = self._param("train", x), self._param("sq_train", x)
        ones = self._param("_ones_dim", x)
        d2 = ((x * x) @ ones + sq[None, :] - 2.0 * (x @ S.T)).clamp_min_(0.0)
        dm = x - self._param("mean", x)
        q = (((dm @ self._param("cov_inv", x)) * dm) @ ones)[:, 0]
        if c is None:
            return self.log_w0 - 0.5 * q, self.log_wi - 0.5 * d2 / self.h**2
        return (torch.log1p(-c) + self.log_norm0 - 0.5 * q,
                (torch.log(c) + self.log_normi)[:, None] - 0.5 * d2 / self.h**2)

    def value(self, theta: torch.Tensor) -> torch.Tensor:
        _check_theta(theta, self.dim)
        return self._value(theta)

    def grad(self, theta: torch.Tensor) -> torch.Tensor:
        _check_theta(theta, self.dim)
        return self._grad(theta)

    def _value(self, theta: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        out = theta.new_empty(theta.shape[0])
        for k, x in self._blocks(theta):
            l0, li = self._log_parts(x, None if c is None else c[k:k + x.shape[0]])
            out[k:k + x.shape[0]] = -torch.logsumexp(torch.cat([l0[:, None], li], 1), dim=1)
        return out

    def _grad(self, theta: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        if theta.device.type == "cpu" and not (torch.is_grad_enabled() and (theta.requires_grad or (
                c is not None and c.requires_grad))):  # the compiled loop (the tensor version stays differentiable)
            return self._grad_compiled(theta, c)
        out = torch.empty_like(theta)
        for k, x in self._blocks(theta):
            l0, li = self._log_parts(x, None if c is None else c[k:k + x.shape[0]])
            r = _softmax_rows(torch.cat([l0[:, None], li], 1), self._param("_ones_parts", x))
            r0, ri = r[:, :1], r[:, 1:]
            g = r0 * ((x - self._param("mean", x)) @ self._param("cov_inv", x))
            g += ((1.0 - r0) * x - ri @ self._param("train", x)) / self.h**2
            out[k:k + x.shape[0]] = g
        return out

    def _grad_compiled(self, theta: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        """:meth:`_grad` by :func:`memdyn.memorization._grad_kernel.memorizing_grad` (float64
        arithmetic; the result in theta's dtype)."""
        from ._grad_kernel import memorizing_grad

        x = theta.detach().to(torch.float64).contiguous().numpy()
        cc = np.empty(0) if c is None else c.detach().to(torch.float64).contiguous().numpy()
        out = np.empty_like(x)
        memorizing_grad(x, self.train, self.mean, self.cov_inv, self.h**2, self.log_w0, self.log_wi, cc,
                        self.log_norm0, self.log_normi, out)
        return torch.from_numpy(out).to(theta.dtype)

    def at(self, c: float) -> "MemorizingLandscape":
        """The same model at another memorization weight c (same data, bandwidth, mean, cov)."""
        return MemorizingLandscape(self.train, self.h, c, self.mean, self.cov)

    def responsibilities(self, theta: torch.Tensor) -> torch.Tensor:
        """Posterior weights of the components at theta: (chains, 1 + n), generalizing first."""
        _check_theta(theta, self.dim)
        l0, li = self._log_parts(theta)
        return _softmax_rows(torch.cat([l0[:, None], li], 1), self._param("_ones_parts", theta))

    def __repr__(self) -> str:
        return f"MemorizingLandscape(n={self.n}, D={self.dim}, bandwidth={self.h:g}, c={self.c:g})"


class ModulatedMemorizingLandscape(SlowlyDriven):
    """The memorization model with a slow variable: theta = (x, y), x in R^D a probe's output,
    y a scalar capacity that moves the memorization weight,

        c(y) = c_lo + (c_hi - c_lo) clip(y, 0, 1),
        F(x, y) = F0(x; c(y)) + eps (y - y_target)^2 / 2,

    a :class:`memdyn.landscapes.SlowlyDriven` landscape: y relaxes to y_target at rate a eps per
    step, y_k = y_target + (y_0 - y_target)(1 - a eps)^k (with no noise on y), and the pull of one
    probe on the shared capacity, c'(y) dF0/dc, is left out (modelling choice: the capacity belongs
    to the whole model, and one probe's share of its gradient vanishes as the number of probes
    grows).

    Parameters
    ----------
    base : MemorizingLandscape
        Data, bandwidth, mean and covariance (its own c is not used).
    c_lo, c_hi : float
        c at y = 0 and y = 1 (0 < c_lo, c_hi < 1).
    eps : float
        Weight of the slow loss (> 0).
    y_target : float
        Minimum of the slow loss.
    """

    def __init__(self, base: MemorizingLandscape, c_lo: float, c_hi: float, eps: float, y_target: float):
        for name, v in (("c_lo", c_lo), ("c_hi", c_hi)):
            if not 0 < v < 1:
                raise ValueError(f"{name} must be in (0, 1), got {v}")
        super().__init__(base.dim, eps, y_target)
        self.base, self.c_lo, self.c_hi = base, float(c_lo), float(c_hi)

    def c_of(self, y):
        """c(y), for a number, an array or a tensor."""
        lib = torch if isinstance(y, torch.Tensor) else np
        return self.c_lo + (self.c_hi - self.c_lo) * lib.clip(y, 0.0, 1.0)

    def y_of(self, c: float) -> float:
        """The y at which c(y) = c (c between c_lo and c_hi)."""
        return (c - self.c_lo) / (self.c_hi - self.c_lo)

    def fast_value(self, x, c):
        return self.base._value(x, c)

    def fast_grad(self, x, c):
        return self.base._grad(x, c)

    def __repr__(self) -> str:
        return (f"ModulatedMemorizingLandscape({self.base!r}, c in [{self.c_lo:g}, {self.c_hi:g}], eps={self.eps:g}, "
                f"y_target={self.y_target:g})")
