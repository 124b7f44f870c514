"""Constant-step SGD over many chains, and the ODE limits it is compared against.

The engine iterates

    theta_{k+1} = theta_k - a (grad F(theta_k) + xi_{k+1})

for every chain at once, in place, on CPU or GPU. Time is counted in iterations k; the ODE
time of the a -> 0 limit is t = k a, and the slow time of an S1 / modulated loss is
tau = eps t.

Randomness. Chains are grouped in blocks of :data:`BLOCK` consecutive indices; block b draws its
noise for steps [jT, (j+1)T) from its own generator seeded by (seed, b, j). Chain i's noise
is therefore a function of (seed, i) alone: results do not depend on the number of chains run
beside it, the chunk size, or the number of workers (they do depend on the device, whose
generators differ).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
from scipy.integrate import solve_ivp
from scipy.optimize import minimize

from .landscapes import Landscape
from .noise import Noise
from .observers import Observer

__all__ = [
    "BLOCK",
    "DivergenceError",
    "Simulation",
    "simulate",
    "fast_ode",
    "fast_equilibrium",
    "slow_ode",
]

#: Chains per random stream. Part of the definition of a seed's streams: do not change.
BLOCK = 1024
_TILE_ELEMENTS = 1 << 22
_MASK64 = (1 << 64) - 1


class DivergenceError(RuntimeError):
    """The iterates left every bounded set: step too large for the landscape's curvature.

    Attributes
    ----------
    step : int
        First iteration after which a chain was non-finite or beyond ``bound``.
    chain : int
        Global index of the first such chain.
    value : float
        Largest |theta| of that chain at that step (inf or nan possible).
    """

    def __init__(self, step: int, chain: int, value: float, bound: float):
        self.step, self.chain, self.value, self.bound = step, chain, value, bound
        super().__init__(
            f"SGD diverged at step {step}, chain {chain}: |theta| = {value:.3g} exceeds {bound:.3g}"
        )


@dataclass
class Simulation:
    """Outcome of :func:`simulate`: the final iterates and every observer's result."""

    final: np.ndarray
    observed: dict[str, Any]
    step: float
    n_steps: int
    n_chains: int
    seed: int
    seconds: float
    info: dict = field(default_factory=dict)

    def __getitem__(self, name: str):
        return self.observed[name]


def _splitmix(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def stream_seed(seed: int, block: int, tile: int) -> int:
    """Seed of the generator that block ``block`` uses for tile ``tile`` (tile -1: initial
    states). A 64-bit mix of the three integers."""
    h = _splitmix(seed & _MASK64)
    h = _splitmix(h ^ (block & _MASK64))
    return _splitmix(h ^ (tile & _MASK64))


def _tile_length(width: int) -> int:
    t = max(1, _TILE_ELEMENTS // (BLOCK * max(width, 1)))
    return min(64, 1 << (t.bit_length() - 1))


def _resolve_device(device) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' requested but torch.cuda.is_available() is False")
    return dev


def _initial_states(init, n: int, dim: int, dtype, device) -> torch.Tensor | Callable:
    if callable(init):
        return init
    arr = torch.as_tensor(np.asarray(init, dtype=np.float64), dtype=dtype, device=device)
    if arr.ndim == 1 and arr.shape[0] == dim:
        return arr.expand(n, dim)
    if arr.shape == (n, dim):
        return arr
    raise ValueError(f"init must have shape ({dim},) or ({n}, {dim}) or be callable, got {tuple(arr.shape)}")


def simulate(
    landscape: Landscape,
    noise: Noise,
    step: float,
    n_steps: int,
    n_chains: int,
    *,
    init,
    seed: int = 0,
    observers: Sequence[Observer] = (),
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
    chunk_size: int | None = None,
    bound: float = 1e8,
    progress: bool | None = None,
) -> Simulation:
    """Run constant-step SGD on ``n_chains`` independent chains for ``n_steps`` iterations.

    Parameters
    ----------
    landscape : Landscape
        Mean loss F; its gradient is evaluated for all chains of a chunk at once.
    noise : Noise
        Gradient-noise model xi.
    step : float or callable
        Constant step size a > 0, or a schedule ``step(k) -> a_k`` (the step used to go from
        iterate k to k + 1, finite and > 0; e.g. a decaying a_k = a_0 / (1 + k / k_d)).
    n_steps, n_chains : int
    init : array_like or callable
        Initial states: shape (dim,) (same for every chain), (n_chains, dim), or a callable
        ``init(generator, BLOCK, dim, dtype, device)`` drawing one block's states.
    seed : int
        Root of every random stream (>= 0).
    observers : sequence of Observer
        On-the-fly reductions; results in ``Simulation.observed[observer.name]``.
    dtype : torch.float32 or torch.float64
    device : str
        ``"cpu"`` or ``"cuda"``.
    chunk_size : int, optional
        Chains stepped together (rounded up to a multiple of :data:`BLOCK`); bounds memory,
        does not change results.
    bound : float
        A chain with |theta_j| > bound or a non-finite coordinate has diverged.
    progress : bool, optional
        Show a progress bar (default: only when stderr is a terminal and the run is long).

    Returns
    -------
    Simulation

    Raises
    ------
    DivergenceError
        With the first step and chain at which an iterate left the bounded set; no NaN is ever
        returned.
    """
    schedule = step if callable(step) else None
    if schedule is None and not (isinstance(step, (int, float)) and math.isfinite(step) and step > 0):
        raise ValueError(f"step must be a finite number > 0 or a schedule k -> a_k, got {step!r}")
    if n_steps < 0 or n_chains < 1:
        raise ValueError(f"need n_steps >= 0 and n_chains >= 1, got {n_steps}, {n_chains}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    names = [o.name for o in observers]
    if len(set(names)) != len(names):
        raise ValueError(f"observer names must be unique, got {names}")
    device = _resolve_device(device)
    dim = landscape.dim
    width = noise.width(dim)
    T = _tile_length(width)
    check_every = min(16, T)
    n_blocks = -(-n_chains // BLOCK)
    per_chunk = n_blocks if chunk_size is None else max(1, -(-int(chunk_size) // BLOCK))
    if chunk_size is None:  # keep a tile of raw draws under ~256 MB
        per_chunk = max(1, min(n_blocks, (1 << 26) // (T * BLOCK * width)))
    init_src = _initial_states(init, n_chains, dim, dtype, device)
    a = float(step) if schedule is None else _scheduled(schedule, 0)

    if progress is None:
        import sys

        progress = sys.stderr.isatty() and n_steps * n_chains * dim > 5e8
    from tqdm.auto import tqdm

    bar = tqdm(total=n_steps * n_chains, unit="chain-step", unit_scale=True, disable=not progress,
               desc=f"SGD a={a:g}", leave=False)
    gen = torch.Generator(device=device)
    raw_dtype = noise.raw_dtype or dtype
    scratch = torch.empty((T, BLOCK, width), dtype=raw_dtype, device=device)
    states: dict[str, list] = {o.name: [] for o in observers}
    t0 = time.perf_counter()
    finals = []
    for b0 in range(0, n_blocks, per_chunk):
        b1 = min(n_blocks, b0 + per_chunk)
        lo, hi = b0 * BLOCK, min(n_chains, b1 * BLOCK)
        n, N = hi - lo, (b1 - b0) * BLOCK  # real and padded chains in this chunk
        theta = torch.empty((N, dim), dtype=dtype, device=device)
        if callable(init_src):
            for b in range(b0, b1):
                gen.manual_seed(stream_seed(seed, b, -1))
                theta[(b - b0) * BLOCK : (b - b0 + 1) * BLOCK] = init_src(gen, BLOCK, dim, dtype, device)
        else:
            theta[:n] = init_src[lo:hi]
            theta[n:] = init_src[lo]  # padding chains: valid states, never observed
        real = theta[:n]
        grad = torch.empty_like(theta)
        raw = torch.empty((T, N, width), dtype=raw_dtype, device=device)
        snapshot = torch.empty_like(theta)
        obs_states = [o.start(lo, n, dim, dtype, device) for o in observers]
        for o, s in zip(observers, obs_states):
            o.update(s, 0, real)
        k = 0
        while k < n_steps:
            tile = k // T
            for b in range(b0, b1):
                gen.manual_seed(stream_seed(seed, b, tile))
                if b1 - b0 == 1:  # one block: draw in place (same numbers, no copy)
                    noise.draw(gen, raw)
                else:
                    noise.draw(gen, scratch)
                    raw[:, (b - b0) * BLOCK : (b - b0 + 1) * BLOCK] = scratch
            snapshot.copy_(theta)
            k_snap = k_tile = k
            for t in range(min(T, n_steps - k)):
                _sgd_step(landscape, noise, theta, grad, raw[t], a if schedule is None else _scheduled(schedule, k))
                k += 1
                for o, s in zip(observers, obs_states):
                    o.update(s, k, real)
                if k % check_every == 0 or k == n_steps:
                    if not bool(real.abs().amax() <= bound):
                        _locate_divergence(landscape, noise, snapshot, raw, k_snap, k_tile, schedule or a, bound, lo,
                                           n)
                    snapshot.copy_(theta)
                    k_snap = k
            bar.update((k - k_tile) * n)
        for o, s in zip(observers, obs_states):
            states[o.name].append(s)
        finals.append(real.cpu().numpy())
    bar.close()
    seconds = time.perf_counter() - t0
    observed = {o.name: o.finish(states[o.name]) for o in observers}
    return Simulation(np.concatenate(finals), observed, a, int(n_steps), int(n_chains), int(seed), seconds,
                      {"tile": T, "block": BLOCK, "device": str(device), "dtype": str(dtype),
                       "schedule": schedule is not None})


def _sgd_step(landscape, noise, theta, grad, raw_t, a):
    landscape.grad_into(theta, grad)
    noise.add_to(grad, raw_t, theta)
    theta.add_(grad, alpha=-a)


def _scheduled(schedule, k: int) -> float:
    a = schedule(k)
    if not (isinstance(a, (int, float, np.floating)) and math.isfinite(a) and a > 0):
        raise ValueError(f"the step schedule gave a_{k} = {a!r}; steps must be finite numbers > 0")
    return float(a)


def _locate_divergence(landscape, noise, snapshot, raw, k_snap, tile_start, a, bound, offset, n):
    """Replay from the last good snapshot one step at a time to find the first bad step/chain
    (``a``: the step, or the schedule)."""
    theta, grad = snapshot.clone(), torch.empty_like(snapshot)
    k = k_snap
    while True:
        _sgd_step(landscape, noise, theta, grad, raw[k - tile_start], _scheduled(a, k) if callable(a) else a)
        k += 1
        size = theta[:n].abs().amax(dim=1)
        bad = ~(size <= bound)
        if bool(bad.any()):
            i = int(torch.nonzero(bad)[0, 0])
            raise DivergenceError(k, offset + i, float(size[i]), bound)


# -- ODE limits ------------------------------------------------------------------------------


def _grad_np(landscape: Landscape, theta: np.ndarray) -> np.ndarray:
    return landscape.grad(torch.as_tensor(np.asarray(theta, dtype=np.float64)[None, :]))[0].numpy()


def fast_ode(landscape: Landscape, x0, y, t) -> np.ndarray:
    """Solve the fast ODE dx/dt = -grad_x F(x, y) with y frozen (ODE time t = k a).

    Parameters
    ----------
    x0 : array_like, shape (p,)
    y : array_like, shape (q,)
    t : array_like
        Increasing output times, t[0] the start.

    Returns
    -------
    ndarray, shape (len(t), p)
    """
    p = landscape.fast_dim
    y = np.asarray(y, dtype=np.float64).ravel()
    t = np.asarray(t, dtype=np.float64)

    def rhs(_, x):
        return -_grad_np(landscape, np.concatenate([x, y]))[:p]

    sol = solve_ivp(rhs, (t[0], t[-1]), np.asarray(x0, dtype=np.float64).ravel(), t_eval=t,
                    method="LSODA", rtol=1e-9, atol=1e-12)
    if not sol.success:
        raise RuntimeError(f"fast ODE failed: {sol.message}")
    return sol.y.T


def fast_equilibrium(landscape: Landscape, y, x0) -> np.ndarray:
    """lambda(y): the minimum of x -> F(x, y) reached from ``x0`` (the stable branch that the
    fast flow started at x0 follows)."""
    p = landscape.fast_dim
    y = np.asarray(y, dtype=np.float64).ravel()

    def f(x):
        th = torch.as_tensor(np.concatenate([x, y])[None, :])
        return float(landscape.value(th)[0]), landscape.grad(th)[0, :p].numpy()

    res = minimize(f, np.asarray(x0, dtype=np.float64).ravel(), jac=True, method="BFGS",
                   options={"gtol": 1e-11})
    return res.x


def slow_ode(landscape: Landscape, y0, tau, x0) -> tuple[np.ndarray, np.ndarray]:
    """Solve the averaged slow ODE dy/dtau = -(1/eps) grad_y F(lambda(y), y) in slow time
    tau = eps t, following the fast equilibrium branch that starts from ``x0``.

    Returns
    -------
    y : ndarray, shape (len(tau), q)
    lam : ndarray, shape (len(tau), p)
        lambda(y(tau)) along the path.
    """
    p, eps = landscape.fast_dim, float(landscape.eps)
    tau = np.asarray(tau, dtype=np.float64)
    branch = [np.asarray(x0, dtype=np.float64).ravel()]

    def rhs(_, y):
        x = fast_equilibrium(landscape, y, branch[-1])
        branch[-1] = x
        return -_grad_np(landscape, np.concatenate([x, y]))[p:] / eps

    sol = solve_ivp(rhs, (tau[0], tau[-1]), np.asarray(y0, dtype=np.float64).ravel(), t_eval=tau,
                    method="RK45", rtol=1e-8, atol=1e-10)
    if not sol.success:
        raise RuntimeError(f"slow ODE failed: {sol.message}")
    lam, x = [], branch[0]
    for yv in sol.y.T:
        x = fast_equilibrium(landscape, yv, x)
        lam.append(x)
    return sol.y.T, np.asarray(lam)
