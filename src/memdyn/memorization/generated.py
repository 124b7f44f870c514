"""Gradients from a mix of fresh data and the model's own outputs (the generated-data component).

Modelling choice (documented in docs/memorization.md): each gradient sample is, with probability
alpha, a fresh-data sample, whose gradient is the loss's gradient plus Gaussian noise,

    g = grad F0(x) + sigma z,   z ~ N(0, I);

otherwise (probability 1 - alpha) it is the model's own current output. That output sits nearest
to some training point s_j (j = argmin_i |x - s_i|), and training on it pulls the model toward
its own memorized point with the memorizing component's gradient and no fresh noise,

    g = (x - s_j) / h^2.

alpha = 1 is ordinary training; alpha = 0 is pure self-consumption: the chain falls into the
nearest training point and stays there (collapse, as in the alpha = 0 collapse model). In between,
self-generated samples deepen whichever state the chain is in, and fresh data is the persistent
excitation that lets it leave: episodes lengthen as alpha falls. The mean gradient is not grad F0
when alpha < 1 (that is the point), so this noise model changes the drift as well as the noise.

A noise factor s (the engine's ``noise_scale``) scales the fresh-data noise only: a fresh sample is
grad F0(x) + s sigma z and an own-output sample stays (x - s_j) / h^2. So the model with factor s is
the model with sigma replaced by s sigma, which is what a noise level means here: the own-output
pull is part of the drift (what the model learns from its own samples), not of the noise around it.
"""

from __future__ import annotations

import numpy as np
import torch

from ..noise import Noise

__all__ = ["GeneratedData"]


class GeneratedData(Noise):
    """Fresh data with probability ``alpha``, the model's own output otherwise.

    Parameters
    ----------
    train : array_like (n, D)
        Training points s_i.
    bandwidth : float
        h > 0: the memorizing components' width (the own-output pull is (x - s_j) / h^2).
    sigma : float
        Noise scale of a fresh-data gradient (>= 0).
    alpha : float
        Probability in [0, 1] that a gradient sample is fresh data.

    Notes
    -----
    Raw draws per chain and step: D standard normals and one uniform deciding fresh vs own, so a
    chain's stream is the same for every alpha (alpha sweeps are coupled: common random numbers).
    """

    def __init__(self, train, bandwidth: float, sigma: float, alpha: float):
        S = np.asarray(train, dtype=np.float64)
        if S.ndim != 2 or S.shape[0] < 1 or not np.all(np.isfinite(S)):
            raise ValueError(f"train must be a finite array of shape (n >= 1, D), got shape {S.shape}")
        if not (np.isfinite(bandwidth) and bandwidth > 0):
            raise ValueError(f"bandwidth must be > 0, got {bandwidth}")
        if not sigma >= 0:
            raise ValueError(f"sigma must be >= 0, got {sigma}")
        if not 0 <= alpha <= 1:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.train, self.h, self.sigma, self.alpha = S, float(bandwidth), float(sigma), float(alpha)
        self._cache: dict = {}

    def width(self, dim):
        return dim + 1

    def draw(self, gen, out):
        out[:, :, :-1].normal_(generator=gen)
        out[:, :, -1].uniform_(generator=gen)

    def _train(self, ref: torch.Tensor):
        key = (ref.dtype, ref.device)
        if key not in self._cache:
            S = torch.as_tensor(self.train, dtype=ref.dtype, device=ref.device)
            self._cache[key] = (S, (S * S).sum(1))
        return self._cache[key]

    def own_gradient(self, theta: torch.Tensor) -> torch.Tensor:
        """(x - s_j) / h^2 with s_j the training point nearest to each chain."""
        S, sq = self._train(theta)
        j = (sq[None, :] - 2.0 * theta @ S.T).argmin(dim=1)
        return (theta - S[j]) / self.h**2

    def apply(self, raw, theta, grad):
        xi = raw[:, :-1] * self.sigma
        if self.alpha < 1:
            xi = torch.where(self._own(raw), self.own_gradient(theta) - grad, xi)
        return xi

    def _own(self, raw):
        """(n, 1) mask of the steps whose gradient sample is the model's own output."""
        return (raw[:, -1] >= self.alpha)[:, None]

    def sample_gradient(self, grad, raw, theta, scale=None):
        """g = grad F0 + s sigma z on fresh-data steps, (x - s_j) / h^2 on own-output steps: the noise
        factor s scales the fresh-data noise, not the own-output pull."""
        sd = torch.as_tensor(self.sigma, dtype=raw.dtype, device=raw.device)
        grad.addcmul_(raw[:, :-1], sd if scale is None else scale * sd)
        if self.alpha < 1:
            grad.copy_(torch.where(self._own(raw), self.own_gradient(theta), grad))

    def covariance(self, theta=None):
        if self.alpha < 1:
            raise NotImplementedError("with alpha < 1 the gradient sample is a mixture whose mean is not grad F0")
        d = self.train.shape[1]
        return np.eye(d) * self.sigma**2
