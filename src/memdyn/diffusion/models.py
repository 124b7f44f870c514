"""Tiny denoisers for CPU-sized diffusion experiments.

* :class:`ResidualMLP`: a residual MLP on flattened items, with a sinusoidal time embedding;
  predicts x0 (default) or v.
* :class:`SmallUNet`: a two-level convolutional U-Net with GroupNorm residual blocks.
* :class:`EmpiricalOptimalDenoiser`: the exact minimiser of the denoising loss on a finite
  training set, E[x_0 | x_t] = sum_i w_i s_i with w = softmax(-|x_t - sqrt(abar) s_i|^2 /
  (2 (1 - abar))). Sampling it reproduces the training items: the positive control of every
  memorization metric.

Every denoiser is called as ``model(x_t, t)`` with t an int64 tensor (batch,) and carries
``prediction`` (see :mod:`memdyn.diffusion.schedule`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .schedule import NoiseSchedule, _check


def seeded(build, seed: int):
    """``build()`` with torch's CPU generator seeded by ``seed`` (initial weights from the seed), the
    caller's generator state left untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return build()

__all__ = ["EmpiricalOptimalDenoiser", "ResidualMLP", "SmallUNet", "seeded", "time_embedding"]


def time_embedding(t: torch.Tensor, dim: int, steps: int) -> torch.Tensor:
    """Sinusoidal embedding of t / steps (dim even): sin and cos at geometric frequencies 1 .. 1000."""
    half = dim // 2
    freq = torch.exp(torch.arange(half, device=t.device, dtype=torch.float32) * (-math.log(1000.0) / max(half - 1, 1)))
    arg = (t.float() / steps * 1000.0)[:, None] * freq[None, :]
    return torch.cat([arg.sin(), arg.cos()], dim=1)


class ResidualMLP(nn.Module):
    """Residual MLP denoiser on flattened items.

    Parameters
    ----------
    shape : tuple of int
        Item shape, e.g. (1, 14, 14).
    width, depth : int
        Hidden width and number of residual blocks.
    prediction : {'x0', 'v', 'eps'}
    steps : int
        T of the noise schedule (scales the time embedding).
    """

    def __init__(self, shape, *, width: int = 512, depth: int = 3, prediction: str = "x0", steps: int = 1000):
        super().__init__()
        self.shape, self.prediction, self.steps = tuple(shape), _check(prediction), int(steps)
        d = math.prod(self.shape)
        self.temb = nn.Sequential(nn.Linear(64, width), nn.SiLU(), nn.Linear(width, width))
        self.inp = nn.Linear(d, width)
        self.blocks = nn.ModuleList(
            nn.ModuleDict({"norm": nn.LayerNorm(width), "t": nn.Linear(width, width),
                           "mlp": nn.Sequential(nn.Linear(width, 2 * width), nn.SiLU(), nn.Linear(2 * width, width))})
            for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, d))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        e = self.temb(time_embedding(t, 64, self.steps))
        h = self.inp(x.reshape(x.shape[0], -1))
        for b in self.blocks:
            h = h + b["mlp"](b["norm"](h) + b["t"](e))
        return self.out(h).reshape(x.shape)


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, tdim: int):
        super().__init__()
        self.n1, self.c1 = nn.GroupNorm(min(8, cin), cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.t = nn.Linear(tdim, cout)
        self.n2, self.c2 = nn.GroupNorm(min(8, cout), cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, e):
        h = self.c1(nn.functional.silu(self.n1(x))) + self.t(e)[:, :, None, None]
        return self.skip(x) + self.c2(nn.functional.silu(self.n2(h)))


class SmallUNet(nn.Module):
    """A small U-Net: base channels at full resolution, 2 x base after one 2 x downsampling
    (a second level when the side is divisible by 4), skip connections by concatenation.

    Parameters
    ----------
    shape : tuple (C, H, W)
    base : int
        Channels at full resolution.
    prediction : {'x0', 'v', 'eps'}
    steps : int
        T of the noise schedule.
    """

    def __init__(self, shape, *, base: int = 32, prediction: str = "x0", steps: int = 1000):
        super().__init__()
        C, H, W = self.shape = tuple(shape)
        if H % 2 or W % 2:
            raise ValueError(f"SmallUNet needs even image sides, got {H} x {W}")
        self.prediction, self.steps = _check(prediction), int(steps)
        levels = 2 if H % 4 == 0 and W % 4 == 0 else 1
        ch = [base * 2 ** i for i in range(levels + 1)]
        tdim = 4 * base
        self.temb = nn.Sequential(nn.Linear(64, tdim), nn.SiLU(), nn.Linear(tdim, tdim))
        self.inp = nn.Conv2d(C, base, 3, padding=1)
        self.down = nn.ModuleList(_Block(ch[i], ch[i], tdim) for i in range(levels))
        self.pool = nn.ModuleList(nn.Conv2d(ch[i], ch[i + 1], 3, stride=2, padding=1) for i in range(levels))
        self.mid = _Block(ch[-1], ch[-1], tdim)
        self.upsample = nn.ModuleList(nn.ConvTranspose2d(ch[i + 1], ch[i], 2, stride=2) for i in reversed(range(levels)))
        self.up = nn.ModuleList(_Block(2 * ch[i], ch[i], tdim) for i in reversed(range(levels)))
        self.out = nn.Sequential(nn.GroupNorm(min(8, base), base), nn.SiLU(), nn.Conv2d(base, C, 3, padding=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        e = self.temb(time_embedding(t, 64, self.steps))
        h = self.inp(x)
        skips = []
        for block, pool in zip(self.down, self.pool):
            h = block(h, e)
            skips.append(h)
            h = pool(h)
        h = self.mid(h, e)
        for upsample, block in zip(self.upsample, self.up):
            h = block(torch.cat([upsample(h), skips.pop()], 1), e)
        return self.out(h)


class EmpiricalOptimalDenoiser(nn.Module):
    """The denoiser that minimises the DDPM loss on a finite training set exactly (predicts x0).

    E[x_0 | x_t] = sum_i softmax_i(-|x_t - sqrt(abar_t) s_i|^2 / (2 (1 - abar_t))) s_i.
    It has no trainable parameters; sampling it returns training items (up to the last step's
    residual), so a memorization metric must flag nearly all of its samples.

    Parameters
    ----------
    train : Tensor (n, ...)
    schedule : NoiseSchedule, optional
    """

    prediction = "x0"

    def __init__(self, train: torch.Tensor, schedule: NoiseSchedule | None = None):
        super().__init__()
        if train.ndim < 2 or train.shape[0] < 1:
            raise ValueError(f"train must be (n >= 1, ...), got {tuple(train.shape)}")
        self.register_buffer("items", train.detach().clone().float())
        self.schedule = schedule or NoiseSchedule()

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a, s = self.schedule.coefficients(t, x)
        S = self.items.reshape(self.items.shape[0], -1).to(x.dtype)
        X = x.reshape(x.shape[0], -1)
        a, s = a.reshape(-1, 1), s.reshape(-1, 1)
        d2 = (X * X).sum(1, keepdim=True) - 2 * a * (X @ S.T) + a * a * (S * S).sum(1)[None, :]
        w = torch.softmax(-d2 / (2 * s * s), dim=1)
        return (w @ S).reshape(x.shape)
