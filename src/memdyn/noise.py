"""Gradient-noise models xi for constant-step SGD, theta <- theta - a (grad F(theta) + xi).

A noise model splits sampling in two so that the engine can pre-draw randomness in tiles from a
per-block generator (which makes every chain's stream independent of chunking):

* :meth:`Noise.draw` fills a preallocated tensor of raw randomness of shape ``(T, B, k)`` for
  T steps of B chains, in place (``k = width(dim)``, dtype ``raw_dtype``);
* :meth:`Noise.sample_gradient` turns one step's raw draws ``(n, k)`` and the exact gradient
  grad F(theta) into the gradient sample g that the step uses, theta <- theta - a g, in place.

The second is the whole contract between a noise model and the engine: everything a noise model
does to a step happens there, including a change of the drift (a model trained partly on its own
outputs, :class:`memdyn.memorization.GeneratedData`, replaces some samples by a pull that is not
grad F plus noise), and every engine path calls it the same way, with the chains' noise factors.

Noise factor. The engine runs chain i with a factor s_i >= 0 on its noise (``noise_scale``, default
1): for a model whose samples are the exact gradient plus zero-mean noise xi (every model in this
module), g = grad F + s_i xi, so s_i = 1 is the model itself and s_i = 0 plain gradient descent. A
model that changes the drift says which part s_i scales; it must leave the model unchanged at
s_i = 1 (a property test runs every subclass through every kernel with s_i = 1 and with no factor).
The compiled and fused kernels do not call :meth:`Noise.sample_gradient`: they compute
g = grad F + s_i sigma(theta) z themselves, and only for models whose :meth:`Noise.kernel_sigma`
says their sample is exactly that.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

__all__ = ["Noise", "Gaussian", "StateDependentGaussian", "ProfileGaussian", "StudentT", "Minibatch", "s1_noise",
           "tanh_step", "TanhStep"]


class Noise:
    """Base class of gradient-noise models.

    A subclass implements :meth:`apply` (xi = g - grad F of one step, at noise factor 1) and may
    override :meth:`draw`, :meth:`width` and, to avoid temporaries or to scale only part of a
    drift-changing sample, :meth:`sample_gradient`.
    """

    #: dtype of the raw draws (None: the simulation dtype)
    raw_dtype = None

    def width(self, dim: int) -> int:
        """Number of raw values drawn per chain and step."""
        return dim

    def draw(self, gen: torch.Generator, out: torch.Tensor) -> None:
        """Fill ``out`` (T, B, width) with raw randomness from ``gen`` (standard normals)."""
        out.normal_(generator=gen)

    def apply(self, raw: torch.Tensor, theta: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """xi = g - grad F (n, dim) of one step at noise factor 1, from its raw draws ``raw`` (n, width),
        the states ``theta`` (n, dim) and their exact gradient ``grad`` (n, dim), which it leaves
        unchanged."""
        raise NotImplementedError

    def sample_gradient(self, grad: torch.Tensor, raw: torch.Tensor, theta: torch.Tensor,
                        scale: torch.Tensor | None = None) -> None:
        """Turn ``grad`` into this step's gradient sample, in place.

        Parameters
        ----------
        grad : Tensor (n, dim)
            On entry the exact gradient grad F(theta) of each chain; on return the sample g that
            the step theta <- theta - a g uses.
        raw : Tensor (n, width)
            The step's raw draws (one row of :meth:`draw`'s output).
        theta : Tensor (n, dim)
            The chains' states (read only).
        scale : Tensor (n, 1), optional
            Each chain's noise factor s. None is a factor of 1 for every chain and must give the
            same result, bit for bit (it lets a model skip a multiplication). Here
            g = grad F + s xi with xi from :meth:`apply`; a model that changes the drift overrides
            this and states which part s scales.
        """
        xi = self.apply(raw, theta, grad)
        if scale is None:
            grad.add_(xi)
        else:
            grad.addcmul_(xi, scale)

    def covariance(self, theta: np.ndarray) -> np.ndarray:
        """Noise covariance C(theta) at one point (float64), where known."""
        raise NotImplementedError(f"{type(self).__name__} has no closed-form covariance")

    def kernel_sigma(self, dim: int):
        """(kind, parameters) of this noise's scale sigma(theta) for the compiled and fused 1-D kernels
        (:mod:`memdyn._step_kernel`: kind 0 constant, 1 tanh step), or None where they cannot run it.

        A model may return a value only if its gradient sample at noise factor s is exactly
        g = grad F + s sigma(theta) z with z its raw standard normals: the kernels compute that
        instead of calling :meth:`sample_gradient`."""
        return None


def kernel_form(noise: Noise, dim: int):
    """``noise.kernel_sigma(dim)`` where the compiled and fused kernels may use it, else None.

    The kernels compute g = grad F + s sigma(theta) z themselves, so a subclass that changes how the
    sample is drawn or formed (:meth:`Noise.draw`, :meth:`Noise.width`, :meth:`Noise.apply` or
    :meth:`Noise.sample_gradient`) below the class that declared :meth:`Noise.kernel_sigma` runs on
    the torch path, where its change takes effect, instead of being bypassed."""
    cls = type(noise)
    owner = next(c for c in cls.__mro__ if "kernel_sigma" in c.__dict__)
    if any(getattr(cls, m) is not getattr(owner, m) for m in ("draw", "width", "apply", "sample_gradient")):
        return None
    return noise.kernel_sigma(dim)


def _constant(value, like: torch.Tensor) -> torch.Tensor:
    """A number or array as a tensor of ``like``'s dtype and device (a number: 0-d)."""
    return torch.as_tensor(value, dtype=like.dtype, device=like.device)


def _scales(scales) -> np.ndarray | None:
    if scales is None:
        return None
    s = np.asarray(scales, dtype=np.float64).ravel()
    if np.any(s < 0) or not np.all(np.isfinite(s)):
        raise ValueError(f"scales must be finite and >= 0, got {s}")
    return s


class Gaussian(Noise):
    """xi = sigma * D z, z ~ N(0, I), D = diag(scales) (identity by default).

    Parameters
    ----------
    sigma : float
        Noise scale (>= 0). Covariance sigma^2 D^2.
    scales : array_like, optional
        Per-coordinate factors; for the S1 system pass ``(1,...,1, eps,...,eps)`` so that the
        y-noise carries eps like the y-gradient (see :func:`s1_noise`).
    """

    def __init__(self, sigma: float = 1.0, scales=None):
        if not sigma >= 0:
            raise ValueError(f"sigma must be >= 0, got {sigma}")
        self.sigma = float(sigma)
        self.scales = _scales(scales)

    def apply(self, raw, theta, grad):
        xi = raw * self.sigma
        if self.scales is not None:
            xi *= torch.as_tensor(self.scales, dtype=raw.dtype, device=raw.device)
        return xi

    def sample_gradient(self, grad, raw, theta, scale=None):
        sd = _constant(self.sigma if self.scales is None else self.sigma * self.scales, raw)
        grad.addcmul_(raw, sd if scale is None else scale * sd)

    def covariance(self, theta=None):
        d = self.scales if self.scales is not None else np.ones(np.size(theta) if theta is not None else 1)
        return np.diag(self.sigma**2 * d**2)

    def kernel_sigma(self, dim):
        if dim != 1:
            return None
        return 0, [self.sigma * (1.0 if self.scales is None else float(self.scales[0]))]


class StateDependentGaussian(Noise):
    """Gaussian noise with state-dependent covariance C(theta) = R(theta) R(theta)^T.

    Parameters
    ----------
    sqrt_cov : callable
        ``sqrt_cov(theta)`` for ``theta`` of shape (n, d) returns R as shape (n,) (isotropic
        sigma(theta)), (n, d) (diagonal) or (n, d, d) (full).
    """

    def __init__(self, sqrt_cov: Callable[[torch.Tensor], torch.Tensor]):
        if not callable(sqrt_cov):
            raise TypeError("sqrt_cov must be callable")
        self.sqrt_cov = sqrt_cov

    def apply(self, raw, theta, grad):
        r = self.sqrt_cov(theta)
        if r.ndim == 1:
            return raw * r[:, None]
        if r.ndim == 2:
            return raw * r
        return torch.einsum("nij,nj->ni", r, raw)

    def covariance(self, theta):
        r = self.sqrt_cov(torch.as_tensor(np.asarray(theta, dtype=np.float64)[None, :]))[0].numpy()
        d = np.size(theta)
        if r.ndim == 0:
            return np.eye(d) * float(r) ** 2
        if r.ndim == 1:
            return np.diag(r**2)
        return r @ r.T


class StudentT(Noise):
    """Heavy-tailed noise: independent Student-t coordinates with ``dof`` degrees of freedom.

    xi_j = sigma * s_j * z_j / sqrt(V_j / dof) * c, z ~ N(0,1), V ~ chi^2(dof), with
    c = sqrt((dof - 2)/dof) for dof > 2 so that Var xi_j = sigma^2 s_j^2 (c = 1 otherwise: the
    variance is infinite and sigma is a scale).
    """

    def __init__(self, sigma: float = 1.0, dof: float = 3.0, scales=None):
        if not sigma >= 0:
            raise ValueError(f"sigma must be >= 0, got {sigma}")
        if not dof > 0:
            raise ValueError(f"dof must be > 0, got {dof}")
        self.sigma, self.dof = float(sigma), float(dof)
        self.scales = _scales(scales)
        self._c = np.sqrt((self.dof - 2) / self.dof) if self.dof > 2 else 1.0

    def width(self, dim):
        return 2 * dim

    def draw(self, gen, out):
        d = out.shape[2] // 2
        out[:, :, :d].normal_(generator=gen)
        alpha = torch.full(out[:, :, d:].shape, self.dof / 2, dtype=out.dtype, device=out.device)
        out[:, :, d:] = 2 * torch._standard_gamma(alpha, generator=gen)

    def apply(self, raw, theta, grad):
        d = raw.shape[1] // 2
        xi = raw[:, :d] * torch.rsqrt(raw[:, d:] / self.dof) * (self.sigma * self._c)
        if self.scales is not None:
            xi *= torch.as_tensor(self.scales, dtype=raw.dtype, device=raw.device)
        return xi

    def covariance(self, theta=None):
        if self.dof <= 2:
            raise ValueError(f"Student-t noise with dof={self.dof} <= 2 has infinite variance")
        d = self.scales if self.scales is not None else np.ones(np.size(theta) if theta is not None else 1)
        return np.diag(self.sigma**2 * d**2)


class Minibatch(Noise):
    """Finite-sum minibatch noise: xi = mean_{i in batch} grad l_i(theta) - grad F(theta).

    Parameters
    ----------
    problem : object with ``n_samples`` and ``per_sample_grad(theta, idx)``
        e.g. :class:`memdyn.landscapes.LeastSquares`; the mean of its per-sample gradients must equal the gradient
        of the landscape the engine runs on.
    batch : int
        Minibatch size b, 1 <= b <= n.
    replace : bool
        Sample with replacement (i.i.d. indices) or without (a uniform b-subset per step).
    """

    def __init__(self, problem, batch: int, replace: bool = True):
        n = int(problem.n_samples)
        if not 1 <= batch <= n:
            raise ValueError(f"batch must be in [1, {n}], got {batch}")
        self.problem, self.batch, self.replace, self.n = problem, int(batch), bool(replace), n

    def width(self, dim):
        return self.batch if self.replace else self.n

    @property
    def raw_dtype(self):
        return torch.int64 if self.replace else None

    def draw(self, gen, out):
        if self.replace:
            out.random_(0, self.n, generator=gen)
        else:
            out.uniform_(generator=gen)

    def apply(self, raw, theta, grad):
        idx = raw if self.replace else raw.topk(self.batch, dim=1).indices
        return self.problem.per_sample_grad(theta, idx).mean(dim=1) - grad


def s1_noise(sigma: float, fast_dim: int, dim: int, eps: float) -> Gaussian:
    """Isotropic gradient noise of an S1 loss: scale 1 on x and eps on y."""
    return Gaussian(sigma, np.concatenate([np.ones(fast_dim), np.full(dim - fast_dim, eps)]))


class TanhStep:
    """A noise-scale profile that steps from ``left`` to ``right`` across ``center``:

        sigma(x) = right + (left - right) (1 - tanh((x - center) / width)) / 2.

    Call it on an array of positions, numpy or torch; :class:`ProfileGaussian` uses it as the
    position-dependent scale of isotropic noise (and the compiled 1-D engine knows it).
    """

    def __init__(self, left: float, right: float, center: float, width: float):
        if not (left > 0 and right > 0 and width > 0):
            raise ValueError(f"need left > 0, right > 0 and width > 0, got {left}, {right}, {width}")
        self.left, self.right, self.center, self.width = map(float, (left, right, center, width))

    def __call__(self, x):
        tanh = np.tanh if isinstance(x, np.ndarray) or np.isscalar(x) else torch.tanh
        return self.right + (self.left - self.right) * 0.5 * (1 - tanh((x - self.center) / self.width))

    def __repr__(self):
        return f"TanhStep(left={self.left:g}, right={self.right:g}, center={self.center:g}, width={self.width:g})"


def tanh_step(left: float, right: float, center: float, width: float) -> TanhStep:
    """The :class:`TanhStep` profile sigma(x) = right + (left - right) (1 - tanh((x - center) / width)) / 2."""
    return TanhStep(left, right, center, width)


class ProfileGaussian(StateDependentGaussian):
    """Isotropic Gaussian noise whose scale depends on one coordinate: xi = sigma(theta_c) z.

    Parameters
    ----------
    profile : callable
        sigma(x) > 0 for an array of positions (numpy or torch), e.g. :class:`TanhStep`.
    coord : int
        The coordinate c it reads (default 0).
    """

    def __init__(self, profile, coord: int = 0):
        if not callable(profile):
            raise TypeError("profile must be callable")
        self.profile, self.coord = profile, int(coord)
        super().__init__(lambda th: profile(th[:, self.coord]))

    def sample_gradient(self, grad, raw, theta, scale=None):
        sd = self.profile(theta[:, self.coord : self.coord + 1])
        grad.addcmul_(raw, sd if scale is None else sd * scale)

    def kernel_sigma(self, dim):
        p = self.profile
        if dim != 1 or not isinstance(p, TanhStep):
            return None
        return 1, [p.left, p.right, p.center, p.width]
