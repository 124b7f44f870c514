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

import contextlib
import math
import queue
import threading
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


def _per_chain(name: str, value, n: int, positive: bool) -> np.ndarray:
    """A scalar or (n,) array of finite values (> 0, or >= 0), as a float64 array of length n."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full(n, float(arr))
    if arr.shape != (n,):
        raise ValueError(f"{name} must be a number or an array of shape (n_chains,) = ({n},), got shape {arr.shape}")
    ok = np.isfinite(arr) & ((arr > 0) if positive else (arr >= 0))
    if not ok.all():
        i = int(np.argmin(ok))
        raise ValueError(f"{name} must be finite and {'> 0' if positive else '>= 0'}; chain {i} has {arr[i]!r}")
    return arr


def _kernel_spec(landscape, noise, device, kernel: str):
    """(coef, kind, par) for the compiled 1-D kernel, or None for the torch path."""
    if kernel not in ("auto", "compiled", "torch"):
        raise ValueError(f"kernel must be 'auto', 'compiled' or 'torch', got {kernel!r}")
    coef = getattr(landscape, "kernel_coefficients", lambda: None)()
    sig = noise.kernel_sigma(landscape.dim) if coef is not None else None
    spec = None if coef is None or sig is None or device.type != "cpu" else (
        np.ascontiguousarray(coef, dtype=np.float64), int(sig[0]), np.ascontiguousarray(sig[1], dtype=np.float64))
    if kernel == "compiled" and spec is None:
        raise ValueError(f"kernel='compiled' needs a 1-D polynomial landscape (DoubleWell, MultiWell) with Gaussian or "
                         f"ProfileGaussian(TanhStep) noise on the CPU; got {type(landscape).__name__} with "
                         f"{type(noise).__name__} on {device}")
    return None if kernel == "torch" else spec


class _Draws:
    """Raw noise of one chunk, tile by tile, in block layout (blocks, T, BLOCK, width): block b's
    draws for tile j come from the generator seeded by (seed, b, j). On the CPU a worker thread draws
    up to two tiles ahead of the one being stepped (the draws and the steps each keep a core busy);
    a buffer is refilled only once the stepping has moved past it."""

    AHEAD = 2

    def __init__(self, noise, seed: int, b0: int, b1: int, T: int, width: int, dtype, device, tiles: int):
        self.noise, self.seed, self.b0, self.b1 = noise, seed, b0, b1
        self.gen = torch.Generator(device=device)
        threaded = device.type == "cpu" and tiles > 1
        count = min(tiles, self.AHEAD + 1) if threaded else 1
        self.bufs = [torch.empty((b1 - b0, T, BLOCK, width), dtype=dtype, device=device) for _ in range(count)]
        self.worker = None
        if threaded:
            self.ready: queue.Queue = queue.Queue()
            self.free = threading.Semaphore(count)
            self.stop = threading.Event()
            self.worker = threading.Thread(target=self._loop, args=(tiles,), name="memdyn-draw", daemon=True)
            self.worker.start()

    def _fill(self, tile: int) -> torch.Tensor:
        buf = self.bufs[tile % len(self.bufs)]
        for b in range(self.b0, self.b1):
            self.gen.manual_seed(stream_seed(self.seed, b, tile))
            self.noise.draw(self.gen, buf[b - self.b0])
        return buf

    def _loop(self, tiles: int):
        try:
            for tile in range(tiles):
                self.free.acquire()
                if self.stop.is_set():
                    return
                self.ready.put(self._fill(tile))
        except BaseException as e:  # handed to the stepping thread
            self.ready.put(e)

    def get(self, tile: int) -> torch.Tensor:
        """Tile ``tile``'s draws; with the worker, tiles must be asked for in order, and the
        previous one is given back by this call."""
        if self.worker is None:
            return self._fill(tile)
        if tile:
            self.free.release()
        got = self.ready.get()
        if isinstance(got, BaseException):
            raise got
        return got

    def close(self):
        if self.worker is not None:
            self.stop.set()
            self.free.release()
            self.worker.join()


def simulate(
    landscape: Landscape,
    noise: Noise,
    step,
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
    noise_scale=None,
    kernel: str = "auto",
) -> Simulation:
    """Run constant-step SGD on ``n_chains`` independent chains for ``n_steps`` iterations.

    Chain i iterates theta <- theta - a_i (grad F(theta) + s_i xi), with its own step a_i and noise
    factor s_i, so a whole grid of step sizes or noise levels runs as one vectorised simulation
    (repeat each grid value over a group of chains). Chain i's noise is a function of (seed, i)
    alone, so its path is a function of (seed, i, a_i, s_i): a grid run equals running each value
    alone over the same chain indices, bit for bit.

    Parameters
    ----------
    landscape : Landscape
        Mean loss F; its gradient is evaluated for all chains of a chunk at once.
    noise : Noise
        Gradient-noise model xi.
    step : float, array_like of shape (n_chains,), or callable
        Constant step size a > 0; per-chain steps a_i > 0; or a schedule ``step(k) -> a_k`` (the
        step used to go from iterate k to k + 1, finite and > 0, the same for every chain; e.g. a
        decaying a_k = a_0 / (1 + k / k_d)).
    n_steps, n_chains : int
    init : array_like or callable
        Initial states: shape (dim,) (same for every chain), (n_chains, dim), or a callable
        ``init(generator, BLOCK, dim, dtype, device)`` drawing one block's states.
    seed : int
        Root of every random stream (>= 0).
    observers : sequence of Observer
        On-the-fly reductions; results in ``Simulation.observed[observer.name]``. They receive the
        iterates a tile of steps at a time (:meth:`memdyn.observers.Observer.update_block`).
    dtype : torch.float32 or torch.float64
        Precision of the states (and of the raw noise, unless the noise model fixes its own).
    device : str
        ``"cpu"`` or ``"cuda"``.
    chunk_size : int, optional
        Chains stepped together (rounded up to a multiple of :data:`BLOCK`); bounds memory,
        does not change results.
    bound : float
        A chain with |theta_j| > bound or a non-finite coordinate has diverged.
    progress : bool, optional
        Show a progress bar (default: only when stderr is a terminal and the run is long).
    noise_scale : float or array_like of shape (n_chains,), optional
        Per-chain factor s_i >= 0 on the noise (default: none, i.e. s_i = 1).
    kernel : {"auto", "compiled", "torch"}
        "compiled" advances a 1-D polynomial landscape (:class:`memdyn.DoubleWell`,
        :class:`memdyn.MultiWell`) with :class:`memdyn.Gaussian` or :class:`memdyn.ProfileGaussian`
        noise a whole tile of steps per call in a numba loop (each step computed in float64, the state
        stored in ``dtype``); "torch" runs one batch of tensor operations per step (any landscape,
        any noise, CPU or GPU); "auto" picks "compiled" where it applies. The two give the same law,
        not the same bits.

    Returns
    -------
    Simulation

    Raises
    ------
    DivergenceError
        With the first step and chain at which an iterate left the bounded set; no NaN is ever
        returned.
    """
    if n_steps < 0 or n_chains < 1:
        raise ValueError(f"need n_steps >= 0 and n_chains >= 1, got {n_steps}, {n_chains}")
    schedule = step if callable(step) else None
    if schedule is None:
        if isinstance(step, (int, float, np.floating, np.integer)) and not (math.isfinite(step) and step > 0):
            raise ValueError(f"step must be a finite number > 0, an array of them or a schedule k -> a_k, got {step!r}")
        a_chain = _per_chain("step", step, n_chains, positive=True)
    else:
        a_chain = np.ones(n_chains)
    s_chain = None if noise_scale is None else _per_chain("noise_scale", noise_scale, n_chains, positive=False)
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    names = [o.name for o in observers]
    if len(set(names)) != len(names):
        raise ValueError(f"observer names must be unique, got {names}")
    device = _resolve_device(device)
    spec = _kernel_spec(landscape, noise, device, kernel)
    dim = landscape.dim
    width = noise.width(dim)
    T = _tile_length(width)
    check_every = min(16, T)
    n_blocks = -(-n_chains // BLOCK)
    per_chunk = n_blocks if chunk_size is None else max(1, -(-int(chunk_size) // BLOCK))
    if chunk_size is None:  # a tile of draws within ~8 MB (float32): the buffers stay in cache
        per_chunk = max(1, min(n_blocks, (1 << 21) // (T * BLOCK * max(width, dim))))
    init_src = _initial_states(init, n_chains, dim, dtype, device)
    if schedule is None:
        a = float(a_chain[0]) if np.ndim(step) == 0 else a_chain.copy()
    else:
        a = _scheduled(schedule, 0)

    if progress is None:
        import sys

        progress = sys.stderr.isatty() and n_steps * n_chains * dim > 5e8
    from tqdm.auto import tqdm

    bar = tqdm(total=n_steps * n_chains, unit="chain-step", unit_scale=True, disable=not progress,
               desc=f"SGD a={a:g}" if np.ndim(a) == 0 else "SGD", leave=False)
    gen = torch.Generator(device=device)
    raw_dtype = noise.raw_dtype or dtype
    states: dict[str, list] = {o.name: [] for o in observers}
    tiles = -(-n_steps // T)
    t0 = time.perf_counter()
    finals = []
    with _draw_core(device, tiles):
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
            pad = np.full(N - n, 1.0)  # padding chains take step a_lo (always valid) and noise factor 1
            a_loc = np.concatenate([a_chain[lo:hi], np.full(N - n, a_chain[lo])])
            s_loc = None if s_chain is None else np.concatenate([s_chain[lo:hi], pad])
            real = theta[:n]
            traj = torch.empty((T if observers else 0, N, dim), dtype=dtype, device=device)
            obs_states = [o.start(lo, n, dim, dtype, device) for o in observers]
            for o, s in zip(observers, obs_states):
                o.update(s, 0, real)
            draws = _Draws(noise, seed, b0, b1, T, width, raw_dtype, device, tiles)
            run = _Compiled(spec, theta, a_loc, s_loc, traj, bound) if spec is not None else \
                _Torch(landscape, noise, theta, a_loc, s_loc, traj, bound, check_every, dtype)
            try:
                for tile in range(tiles):
                    k = tile * T
                    L = min(T, n_steps - k)
                    steps = np.ones(L) if schedule is None else np.array([_scheduled(schedule, k + t) for t in range(L)])
                    bad = run.advance(draws.get(tile), k, steps, n, n_steps)
                    if bad is not None:
                        raise DivergenceError(bad[0], lo + bad[1], bad[2], bound)
                    if observers:
                        block = traj[:L, :n]
                        for o, s in zip(observers, obs_states):
                            o.update_block(s, k, block)
                    bar.update(L * n)
            finally:
                draws.close()
            for o, s in zip(observers, obs_states):
                states[o.name].append(s)
            finals.append(real.cpu().numpy())
    bar.close()
    seconds = time.perf_counter() - t0
    observed = {o.name: o.finish(states[o.name]) for o in observers}
    return Simulation(np.concatenate(finals), observed, a, int(n_steps), int(n_chains), int(seed), seconds,
                      {"tile": T, "block": BLOCK, "device": str(device), "dtype": str(dtype),
                       "schedule": schedule is not None, "kernel": "torch" if spec is None else "compiled"})


@contextlib.contextmanager
def _draw_core(device, tiles: int):
    """While the draw thread runs, leave it a core: torch's intra-op threads are one fewer (then restored)."""
    threads = torch.get_num_threads()
    lend = device.type == "cpu" and tiles > 1 and threads > 1
    if lend:
        torch.set_num_threads(threads - 1)
    try:
        yield
    finally:
        if lend:
            torch.set_num_threads(threads)


class _Compiled:
    """One tile of steps for every chain of a chunk in one numba call (:mod:`memdyn._step_kernel`);
    a divergence is located by replaying the tile from its start one step at a time."""

    def __init__(self, spec, theta, a_loc, s_loc, traj, bound):
        from ._step_kernel import advance_line

        self.kernel, (self.coef, self.kind, self.par), self.bound = advance_line, spec, float(bound)
        self.theta = theta.view(-1).numpy()
        self.snapshot = np.empty_like(self.theta)
        self.a_loc = a_loc
        self.s_loc = np.ones_like(a_loc) if s_loc is None else s_loc
        self.traj = traj.reshape(traj.shape[0], traj.shape[1]).numpy()  # dim 1

    def _run(self, theta, raw, t0, steps, traj):
        self.kernel(theta, raw, t0, steps.size, steps, self.a_loc, self.coef, self.kind, self.par, self.s_loc, traj)

    def advance(self, raw, k, steps, n, n_steps):
        raw = raw.view(raw.shape[0], raw.shape[1], -1).numpy()
        self.snapshot[:] = self.theta
        self._run(self.theta, raw, 0, steps, self.traj[: steps.size] if self.traj.shape[0] else self.traj)
        if np.abs(self.theta[:n]).max() <= self.bound:  # False for a NaN too
            return None
        theta, none = self.snapshot.copy(), self.traj[:0]
        for t in range(steps.size):
            self._run(theta, raw, t, steps[t : t + 1], none)
            size = np.abs(theta[:n])
            bad = ~(size <= self.bound)
            if bad.any():
                i = int(np.argmax(bad))
                return k + t + 1, i, float(size[i])


class _Torch:
    """One tile of steps, one batch of tensor operations per step (any landscape and noise, any
    device); a divergence is located by replaying from the last checked state."""

    def __init__(self, landscape, noise, theta, a_loc, s_loc, traj, bound, check_every, dtype):
        self.landscape, self.noise, self.theta, self.traj = landscape, noise, theta, traj
        dev = theta.device
        self.a_loc = torch.as_tensor(a_loc, dtype=dtype, device=dev)[:, None]
        self.neg = -self.a_loc
        self.scale = None if s_loc is None else torch.as_tensor(s_loc, dtype=dtype, device=dev)[:, None]
        self.grad = torch.empty_like(theta)
        self.xi = None if s_loc is None else torch.empty_like(theta)
        self.snapshot = torch.empty_like(theta)
        self.bound, self.check_every = bound, check_every

    def step(self, theta, raw_t, a_k):
        """theta <- theta - a_k a_i (grad F + s_i xi), in place."""
        neg = self.neg if a_k == 1.0 else self.a_loc * -a_k
        self.landscape.grad_into(theta, self.grad)
        if self.scale is None:
            self.noise.add_to(self.grad, raw_t, theta)
        else:
            self.xi.zero_()
            self.noise.add_to(self.xi, raw_t, theta)
            self.grad.addcmul_(self.xi, self.scale)
        theta.addcmul_(self.grad, neg)

    def advance(self, raw, k0, steps, n, n_steps):
        theta, N = self.theta, self.theta.shape[0]
        keep = self.traj.shape[0] > 0
        self.snapshot.copy_(theta)
        k_snap = k0
        for t in range(steps.size):
            self.step(theta, raw[:, t].reshape(N, raw.shape[3]), float(steps[t]))
            if keep:
                self.traj[t].copy_(theta)
            k = k0 + t + 1
            if k % self.check_every == 0 or k == n_steps:
                if not bool(theta[:n].abs().amax() <= self.bound):
                    return self._locate(raw, k0, k_snap, steps, n)
                self.snapshot.copy_(theta)
                k_snap = k
        return None

    def _locate(self, raw, k0, k_snap, steps, n):
        """Replay from the last good snapshot one step at a time: (step, chain, |theta|) of the first
        chain beyond the bound."""
        theta, N = self.snapshot.clone(), self.snapshot.shape[0]
        k = k_snap
        while True:
            self.step(theta, raw[:, k - k0].reshape(N, raw.shape[3]), float(steps[k - k0]))
            k += 1
            size = theta[:n].abs().amax(dim=1)
            bad = ~(size <= self.bound)
            if bool(bad.any()):
                i = int(torch.nonzero(bad)[0, 0])
                return k, i, float(size[i])


def _scheduled(schedule, k: int) -> float:
    a = schedule(k)
    if not (isinstance(a, (int, float, np.floating)) and math.isfinite(a) and a > 0):
        raise ValueError(f"the step schedule gave a_{k} = {a!r}; steps must be finite numbers > 0")
    return float(a)


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
