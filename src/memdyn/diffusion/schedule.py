"""Noise schedule, parametrisations and the deterministic DDIM sampler.

A DDPM forward process with T steps: x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, eps ~ N(0, I),
t = 0 .. T - 1. A denoiser ``model(x_t, t)`` (t an int64 tensor of shape (batch,)) predicts one
of three targets, named by its attribute ``prediction``:

* ``'x0'``: the clean item x_0;
* ``'v'``: v = sqrt(abar) eps - sqrt(1 - abar) x_0 (Salimans & Ho 2022);
* ``'eps'``: the noise (standard, but a tiny MLP trained on it fails to learn).

DDIM with eta = 0 (Song, Meng & Ermon 2021) maps noise to a sample deterministically:
x_prev = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev) eps_hat on S evenly spaced steps. With the
probe noise of :func:`probe_noise` (one generator per probe), a probe's output changes only when
the model does.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["NoiseSchedule", "PREDICTIONS", "ddim_sample", "ddim_sampler", "probe_noise"]

PREDICTIONS = ("x0", "v", "eps")


@dataclass(frozen=True)
class NoiseSchedule:
    """The cumulative signal level abar_t of a T-step DDPM.

    Parameters
    ----------
    steps : int
        T (>= 2).
    kind : {'cosine', 'linear'}
        'cosine': abar_t = f(t) / f(0), f(t) = cos^2(pi/2 (t/T + s) / (1 + s)), s = 0.008, with
        beta_t capped at 0.999 (Nichol & Dhariwal 2021); 'linear': beta from 1e-4 to 0.02 (Ho et
        al. 2020).
    """

    steps: int = 1000
    kind: str = "cosine"

    def __post_init__(self):
        if not isinstance(self.steps, int) or self.steps < 2:
            raise ValueError(f"steps must be an integer >= 2, got {self.steps!r}")
        if self.kind not in ("cosine", "linear"):
            raise ValueError(f"kind must be 'cosine' or 'linear', got {self.kind!r}")

    @functools.cached_property
    def alpha_bar(self) -> torch.Tensor:
        """abar_t for t = 0 .. T - 1 (float64; computed once per schedule, do not modify it)."""
        T = self.steps
        if self.kind == "linear":
            beta = np.linspace(1e-4, 0.02, T)
        else:
            s = 0.008
            f = np.cos((np.arange(T + 1) / T + s) / (1 + s) * math.pi / 2) ** 2
            beta = np.minimum(1 - f[1:] / f[:-1], 0.999)
        return torch.from_numpy(np.cumprod(1.0 - beta))

    def coefficients(self, t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """sqrt(abar_t) and sqrt(1 - abar_t), shaped to broadcast against ``like``."""
        ab = self.alpha_bar.to(like.device)[t.to(like.device)].to(like.dtype)
        shape = (-1,) + (1,) * (like.ndim - 1)
        return ab.sqrt().reshape(shape), (1 - ab).sqrt().reshape(shape)

    def target(self, prediction: str, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The regression target of a denoiser that predicts ``prediction``."""
        a, s = self.coefficients(t, x0)
        return {"x0": lambda: x0, "eps": lambda: eps, "v": lambda: a * eps - s * x0}[_check(prediction)]()

    def split(self, prediction: str, out: torch.Tensor, x: torch.Tensor, t: torch.Tensor):
        """(x0_hat, eps_hat) from the model output ``out`` at the noisy input ``x``."""
        a, s = self.coefficients(t, x)
        p = _check(prediction)
        if p == "x0":
            return out, (x - a * out) / s
        if p == "eps":
            return (x - s * out) / a, out
        return a * x - s * out, s * x + a * out


def _check(prediction: str) -> str:
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
    return prediction


def probe_noise(probes: int, shape, seed: int = 0) -> torch.Tensor:
    """Fixed standard normal noise for ``probes`` probes of item ``shape``: probe i is drawn from
    its own generator seeded by SeedSequence([seed, i]), so it depends on (seed, i) only."""
    if not isinstance(probes, (int, np.integer)) or probes < 1:
        raise ValueError(f"probes must be an integer >= 1, got {probes!r}")
    out = []
    for i in range(int(probes)):
        g = torch.Generator().manual_seed(int(np.random.SeedSequence([int(seed), i]).generate_state(1, np.uint64)[0]
                                              >> np.uint64(1)))
        out.append(torch.randn(tuple(shape), generator=g))
    return torch.stack(out)


@torch.no_grad()
def ddim_sample(model, noise: torch.Tensor, schedule: NoiseSchedule, *, steps: int = 50, clip: bool = True,
                batch: int = 256) -> torch.Tensor:
    """Deterministic DDIM (eta = 0) samples from ``noise`` (float32 on the model's device).

    Parameters
    ----------
    model : callable ``model(x_t, t)`` with attribute ``prediction``
    noise : Tensor (probes, ...)
    schedule : NoiseSchedule
    steps : int
        Sampling steps S (1 .. T), evenly spaced over t = T - 1 .. 0.
    clip : bool
        Clip x0_hat to [-1, 1] (the data range) at every step.
    batch : int
        Probes per forward pass (results do not depend on it).
    """
    T = schedule.steps
    if not isinstance(steps, int) or not 1 <= steps <= T:
        raise ValueError(f"steps must be an integer in 1..{T}, got {steps!r}")
    prediction = getattr(model, "prediction", None)
    _check(prediction)
    ts = np.linspace(T - 1, 0, steps).round().astype(np.int64)
    ab = schedule.alpha_bar
    outs = []
    for i in range(0, noise.shape[0], batch):
        x = noise[i:i + batch].clone()
        for j, t in enumerate(ts):
            tt = torch.full((x.shape[0],), int(t), dtype=torch.int64, device=x.device)
            x0, eps = schedule.split(prediction, model(x, tt), x, tt)
            if clip:
                x0 = x0.clamp(-1.0, 1.0)
            if j + 1 < len(ts):
                ap = float(ab[ts[j + 1]])
                x = math.sqrt(ap) * x0 + math.sqrt(1.0 - ap) * eps
            else:
                x = x0
        outs.append(x)
    return torch.cat(outs)


def ddim_sampler(schedule: NoiseSchedule | None = None, *, steps: int = 50, clip: bool = True):
    """A sampler for :class:`memdyn.monitor.MemorizationMonitor`: ``sampler(model, noise)``
    returns the DDIM samples of ``model`` from ``noise`` (see :func:`ddim_sample`)."""
    schedule = schedule or NoiseSchedule()

    def sampler(model, noise):
        return ddim_sample(model, noise, schedule, steps=steps, clip=clip)

    return sampler
