"""The fused kernel of :func:`memdyn.simulate` (``kernel="fused"``): steps of a 1-D polynomial loss
with Gaussian noise whose normals are computed inside the step from a counter-based generator, so a
unit of steps is one elementwise function that ``torch.compile`` turns into one loop (C++ on the
CPU, one Triton kernel on a GPU) with no noise in memory at all.

Streams. The normal of chain i at iterate k (the noise of the step from k to k + 1) is

    z(seed, i, k) = sqrt(-2 ln u1) cos(2 pi u2),

u1, u2 from the first two 32-bit words of Philox4x32-10 (Salmon, Moraes, Dror, Shaw 2011) with
counter (k mod 2^32, k div 2^32, i mod 2^32, i div 2^32) and key the two 32-bit halves of a 64-bit
mix of the seed: a function of (seed, i, k) alone, on any device. The 32 x 32 -> 64-bit products are
computed from 16-bit halves in int64, so no operation overflows and the same code runs in eager
torch, C++ and Triton. These streams are not those of the other kernels (which draw blocks of
normals from torch generators): the fused kernel gives the same law, not the same paths.
"""

from __future__ import annotations

import math

import torch

__all__ = ["philox4x32", "normals", "fused_unit", "UNIT"]

#: Steps per compiled call by device type. On a GPU a unit of 4 reads and writes the states once per 4
#: steps (memory traffic, not arithmetic, would bound a unit of 1); on the CPU compile time grows with
#: the unit (about 8 s for 1, 27 s for 4) for no gain in speed.
UNIT = {"cpu": 1, "cuda": 4}
_M32 = 0xFFFFFFFF
_MUL = (0xD2511F53, 0xCD9E8D57)  # Philox4x32 round multipliers
_WEYL = (0x9E3779B9, 0xBB67AE85)  # key increments between rounds


def _mulhilo(m: int, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(high, low) 32-bit words of m * b for a 32-bit constant m and int64 b in [0, 2^32), from b's
    16-bit halves: m b = (m b_hi) 2^16 + m b_lo with both products < 2^48."""
    p_hi, p_lo = m * (b >> 16), m * (b & 0xFFFF)
    s = p_lo + ((p_hi & 0xFFFF) << 16)  # < 2^49
    return (p_hi >> 16) + (s >> 32), s & _M32


def philox4x32(c0, c1, c2, c3, k0, k1, rounds: int = 10):
    """Philox4x32 (10 rounds by default) on int64 tensors holding 32-bit words: the four output
    words. Checked against Random123's known-answer vectors."""
    for r in range(rounds):
        if r:
            k0, k1 = (k0 + _WEYL[0]) & _M32, (k1 + _WEYL[1]) & _M32
        h0, l0 = _mulhilo(_MUL[0], c0)
        h1, l1 = _mulhilo(_MUL[1], c2)
        c0, c1, c2, c3 = h1 ^ c1 ^ k0, l1, h0 ^ c3 ^ k1, l0
    return c0, c1, c2, c3


def normals(k: torch.Tensor, chain_lo: torch.Tensor, chain_hi: torch.Tensor, key0: torch.Tensor,
            key1: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """z(seed, i, k) of every chain (module docstring) in ``dtype``: u1 in (0, 1) and u2 in [0, 1)
    from 32-bit words (float64) or their top 24 bits (float32), exact in that dtype."""
    w0, w1, _, _ = philox4x32(k & _M32, k >> 32, chain_lo, chain_hi, key0, key1)
    if dtype == torch.float32:
        u1 = ((w0 >> 8).to(dtype) + 0.5) * 2.0**-24
        u2 = (w1 >> 8).to(dtype) * 2.0**-24
    else:
        u1 = (w0.to(dtype) + 0.5) * 2.0**-32
        u2 = w1.to(dtype) * 2.0**-32
    return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos((2 * math.pi) * u2)


def fused_unit(coef, kind: int, par, steps: int, keep: bool):
    """The elementwise function of ``steps`` iterations theta <- theta - a_k a_i (F'(theta) +
    sigma(theta) s_i z(seed, i, k)) for F' the polynomial ``coef`` (highest degree first) and sigma
    constant (kind 0, sigma = par[0]) or a tanh step (kind 1, as in :mod:`memdyn._step_kernel`).

    Its arguments: x (n,) states; a, s steps and noise factors, (n,) or 0-d (the same for every
    chain); first (0-d int64) the global index of x's first chain (the others follow); k0 (0-d
    int64) the first iterate; count (0-d int64) the number of steps
    taken (steps past it leave x as it is, so one compiled unit serves any shorter stretch); st
    (steps,) the step multipliers a_k; key0, key1 (0-d int64). Returns x and, with ``keep``, the
    iterates (steps, n).
    """
    coef = [float(c) for c in coef]
    par = [float(p) for p in par]

    def unit(x, a, s, first, k0, count, st, key0, key1):
        chain = first + torch.arange(x.shape[0], dtype=torch.int64, device=x.device)
        chain_lo, chain_hi = chain & _M32, chain >> 32
        hist = []
        for t in range(steps):
            z = normals(k0 + t, chain_lo, chain_hi, key0, key1, x.dtype)
            g = x * coef[0] + coef[1] if len(coef) > 1 else torch.full_like(x, coef[0])
            for c in coef[2:]:
                g = g * x + c
            if kind == 0:
                sig = par[0]
            else:
                sig = par[1] + (par[0] - par[1]) * 0.5 * (1.0 - torch.tanh((x - par[2]) / par[3]))
            x = torch.where(count > t, x - st[t] * a * (g + sig * s * z), x)
            if keep:
                hist.append(x)
        return x, (torch.stack(hist) if keep else None)

    return unit
