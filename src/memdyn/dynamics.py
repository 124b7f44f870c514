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
generators differ). The fused kernel computes chain i's normal at iterate k from (seed, i, k) by a
counter-based generator instead (:mod:`memdyn._fused`): the same on every device, up to rounding.
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
from .noise import Noise, kernel_form
from .observers import Observer

__all__ = [
    "BLOCK",
    "DivergenceError",
    "Group",
    "Simulation",
    "simulate",
    "simulate_groups",
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
    """(kind of run, (coef, sigma kind, sigma parameters) or None): "compiled" (numba, CPU), "fused"
    (torch.compile with in-kernel normals, any device) or "torch"."""
    if kernel not in ("auto", "compiled", "fused", "torch"):
        raise ValueError(f"kernel must be 'auto', 'compiled', 'fused' or 'torch', got {kernel!r}")
    coef = getattr(landscape, "kernel_coefficients", lambda: None)()
    sig = kernel_form(noise, landscape.dim) if coef is not None else None
    spec = None if coef is None or sig is None else (
        np.ascontiguousarray(coef, dtype=np.float64), int(sig[0]), np.ascontiguousarray(sig[1], dtype=np.float64))
    need = "1-D polynomial landscape (DoubleWell, MultiWell) with Gaussian or ProfileGaussian(TanhStep) noise"
    got = f"got {type(landscape).__name__} with {type(noise).__name__} on {device}"
    if kernel == "compiled" and (spec is None or device.type != "cpu"):
        raise ValueError(f"kernel='compiled' needs a {need} on the CPU; {got}")
    if kernel == "fused" and spec is None:
        raise ValueError(f"kernel='fused' needs a {need}; {got}")
    if kernel == "auto":
        kernel = "compiled" if spec is not None and device.type == "cpu" else "torch"
    return kernel, (None if kernel == "torch" else spec)


class _Draws:
    """Raw noise of one chunk, tile by tile, in block layout (blocks, T, BLOCK, width): block b's
    draws for tile j come from the generator seeded by (seed, b, j); blocks whose chains have all
    reached their horizon are not drawn. On the CPU a worker thread draws
    up to two tiles ahead of the one being stepped (the draws and the steps each keep a core busy);
    a buffer is refilled only once the stepping has moved past it."""

    AHEAD = 2

    def __init__(self, noise, seed: int, b0: int, b1: int, T: int, width: int, dtype, device, tiles: int,
                 needed: Callable[[int], int] | None = None):
        self.noise, self.seed, self.b0, self.b1 = noise, seed, b0, b1
        self.needed = needed or (lambda tile: b1 - b0)  # blocks (from b0) whose chains still run in a tile
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
        for b in range(self.b0, self.b0 + self.needed(tile)):
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


@dataclass
class Group:
    """One setting of a grid run by :func:`simulate_groups`: ``n_chains`` chains with their own
    step(s), horizon, initial states, noise factor and observers.

    Attributes
    ----------
    n_chains : int
    step : float or array_like of shape (n_chains,)
        Constant step a > 0, or per-chain steps.
    n_steps : int
        Horizon: every chain of the group is stepped exactly this many times, and its observers see
        its iterates 0 .. n_steps.
    init : array_like or callable
        As in :func:`simulate`: shape (dim,), (n_chains, dim), or ``init(generator, BLOCK, dim, dtype,
        device)``.
    noise_scale : float or array_like of shape (n_chains,), optional
        Per-chain noise factor s >= 0 (default 1).
    observers : sequence of Observer
        This group's observers (names unique within the group).
    """

    n_chains: int
    step: Any
    n_steps: int
    init: Any
    noise_scale: Any = None
    observers: Sequence[Observer] = ()


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
    first_chain: int = 0,
) -> Simulation:
    """Run constant-step SGD on ``n_chains`` independent chains for ``n_steps`` iterations.

    Chain i iterates theta <- theta - a_i (grad F(theta) + s_i xi), with its own step a_i and noise
    factor s_i (for a noise model that changes the drift, the sample its
    :meth:`~memdyn.noise.Noise.sample_gradient` gives at factor s_i), so a whole grid of step sizes or
    noise levels runs as one vectorised simulation (repeat each grid value over a group of chains). Chain i's noise is a function of (seed, i)
    alone, so its path is a function of (seed, i, a_i, s_i): a grid run equals running each value
    alone over the same chain indices, bit for bit. Grid values that need different horizons run
    together with :func:`simulate_groups`.

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
        Per-chain factor s_i >= 0 on the noise (default 1: the noise model itself, the same paths
        as a factor of 1). What it scales is the noise model's to say
        (:meth:`memdyn.noise.Noise.sample_gradient`): the zero-mean noise xi of every model in
        :mod:`memdyn.noise`; only the fresh-data noise of
        :class:`memdyn.memorization.GeneratedData`, not its own-output pull.
    kernel : {"auto", "compiled", "fused", "torch"}
        "compiled" advances a 1-D polynomial landscape (:class:`memdyn.DoubleWell`,
        :class:`memdyn.MultiWell`) with :class:`memdyn.Gaussian` or :class:`memdyn.ProfileGaussian`
        noise a whole tile of steps per call in a numba loop (each step computed in float64, the state
        stored in ``dtype``); "torch" runs one batch of tensor operations per step (any landscape,
        any noise, CPU or GPU); "fused" (the same landscapes and noises, CPU or GPU) runs a few steps
        per ``torch.compile``'d call with the normals computed inside it from (seed, chain, iterate)
        by Philox4x32-10 (:mod:`memdyn._fused`; no noise in memory: the GPU path; the first call
        compiles, 10-30 s); "auto" picks "compiled" where it applies, else "torch". They give the
        same law, not the same bits.
    first_chain : int
        Global index of this run's chain 0 (>= 0): chain i draws the streams of chain
        ``first_chain + i``, so runs over disjoint index ranges are independent and a range split
        over several runs (or workers) gives the same paths as one run over all of it.

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
    group = Group(n_chains, 1.0 if schedule is not None else step, n_steps, init, noise_scale, observers)
    out = _run_groups(landscape, noise, [group], schedule, seed, first_chain, dtype, device, chunk_size, bound,
                      progress, kernel)[0]
    if schedule is not None:
        out.step = _scheduled(schedule, 0)
    return out


def simulate_groups(
    landscape: Landscape,
    noise: Noise,
    groups: Sequence[Group],
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
    chunk_size: int | None = None,
    bound: float = 1e8,
    progress: bool | None = None,
    kernel: str = "auto",
    first_chain: int = 0,
) -> list[Simulation]:
    """Run several settings (:class:`Group`) with their own horizons as one simulation.

    The groups' chains are laid out one after another: group g holds the chains with global indices
    ``first_chain + n_0 + ... + n_(g-1)`` onwards, and its results are exactly those of
    :func:`simulate` run alone with its parameters and that ``first_chain`` (bit for bit: the
    streams are those of the global indices). The groups must come in order of non-increasing
    ``n_steps``, so that the chains still running are a prefix: a group stops being stepped, drawn
    for and observed at its own horizon, so the grid costs the sum of its groups' chain-steps while
    every step's tensor operations (or compiled call) serve all groups still running. A step-size
    grid at the same number of mean exit times per step (horizons growing like exp(V/a)) runs in
    one pass.

    Parameters
    ----------
    landscape, noise, seed, dtype, device, chunk_size, bound, progress, kernel, first_chain
        As in :func:`simulate`.
    groups : sequence of Group
        At least one; ``n_steps`` non-increasing along the sequence.

    Returns
    -------
    list of Simulation
        One per group, in the given order (``info["first_chain"]``: its first global chain index;
        ``seconds``: the whole run's wall time).
    """
    return _run_groups(landscape, noise, list(groups), None, seed, first_chain, dtype, device, chunk_size, bound,
                       progress, kernel)


def _run_groups(landscape, noise, groups, schedule, seed, first_chain, dtype, device, chunk_size, bound, progress,
                kernel) -> list[Simulation]:
    """The engine behind :func:`simulate` and :func:`simulate_groups` (``schedule``: a step
    schedule shared by every chain, only with one group)."""
    if not groups:
        raise ValueError("simulate_groups needs at least one group")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if not (isinstance(first_chain, (int, np.integer)) and first_chain >= 0):
        raise ValueError(f"first_chain must be an integer >= 0, got {first_chain!r}")
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    device = _resolve_device(device)
    kind, spec = _kernel_spec(landscape, noise, device, kernel)
    dim = landscape.dim
    G = len(groups)
    sizes, H, a_parts, s_parts, inits = [], [], [], [], []
    for g, grp in enumerate(groups):
        where = "" if G == 1 else f"group {g}: "
        n, h = grp.n_chains, grp.n_steps
        if not (isinstance(n, (int, np.integer)) and isinstance(h, (int, np.integer))) or h < 0 or n < 1:
            raise ValueError(f"{where}need integers n_steps >= 0 and n_chains >= 1, got {h!r}, {n!r}")
        if g and h > H[-1]:
            raise ValueError(f"groups must come in order of non-increasing n_steps (the running chains stay a prefix): "
                             f"group {g} has {h} > group {g - 1}'s {H[-1]}; sort them by horizon")
        st = grp.step
        if isinstance(st, (int, float, np.floating, np.integer)) and not (math.isfinite(st) and st > 0):
            raise ValueError(f"{where}step must be a finite number > 0, an array of them or a schedule k -> a_k, "
                             f"got {st!r}")
        a_parts.append(_per_chain(f"{where}step", st, n, positive=True))
        s_parts.append(None if grp.noise_scale is None else
                       _per_chain(f"{where}noise_scale", grp.noise_scale, n, positive=False))
        names = [o.name for o in grp.observers]
        if len(set(names)) != len(names):
            raise ValueError(f"{where}observer names must be unique, got {names}")
        inits.append(_initial_states(grp.init, n, dim, dtype, device))
        sizes.append(int(n))
        H.append(int(h))
    offs = first_chain + np.concatenate([[0], np.cumsum(sizes)])  # group g: global chains [offs[g], offs[g+1])
    C0, C1 = int(offs[0]), int(offs[-1])
    a_chain = np.concatenate(a_parts)
    s_chain = None if all(s is None for s in s_parts) else np.concatenate(
        [np.ones(n) if s is None else s for s, n in zip(s_parts, sizes)])

    def active_end(k: int) -> int:
        """Global end of the chains still stepped from iterate k to k + 1 (a prefix from C0)."""
        return int(offs[sum(h > k for h in H)])

    width = noise.width(dim)
    T = _tile_length(width)
    check_every = min(16, T)
    B0, B1 = C0 // BLOCK, -(-C1 // BLOCK)
    n_blocks = B1 - B0
    per_chunk = n_blocks if chunk_size is None else max(1, -(-int(chunk_size) // BLOCK))
    if chunk_size is None:  # a tile of draws within ~8 MB (float32): the buffers stay in cache
        per_chunk = max(1, min(n_blocks, (1 << 21) // (T * BLOCK * max(width, dim))))
    if progress is None:
        import sys

        progress = sys.stderr.isatty() and sum(n * h for n, h in zip(sizes, H)) * dim > 5e8
    from tqdm.auto import tqdm

    a0 = float(a_parts[0][0])
    label = "SGD" if G > 1 or np.ptp(a_parts[0]) > 0 or schedule is not None else f"SGD a={a0:g}"
    bar = tqdm(total=sum(n * h for n, h in zip(sizes, H)), unit="chain-step", unit_scale=True, disable=not progress,
               desc=label, leave=False)
    gen = torch.Generator(device=device)
    raw_dtype = noise.raw_dtype or dtype
    states: list[dict[str, list]] = [{o.name: [] for o in grp.observers} for grp in groups]
    finals: list[list] = [[] for _ in groups]
    t0 = time.perf_counter()
    with _draw_core(device, 0 if kind == "fused" else -(-H[0] // T)):
        for cb0 in range(B0, B1, per_chunk):
            cb1 = min(B1, cb0 + per_chunk)
            base, N = cb0 * BLOCK, (cb1 - cb0) * BLOCK  # global chain of row 0; rows (padded to whole blocks)
            r_lo, r_hi = max(C0, base) - base, min(C1, cb1 * BLOCK) - base  # the real rows
            # the groups in this chunk: (g, first row, end row)
            parts = [(g, max(int(offs[g]), base) - base, min(int(offs[g + 1]), base + N) - base) for g in range(G)
                     if offs[g] < base + N and offs[g + 1] > base]
            horizon = H[parts[0][0]]
            theta = torch.empty((N, dim), dtype=dtype, device=device)
            for g, p0, p1 in parts:
                src, first = inits[g], int(offs[g])
                if callable(src):
                    for b in range((base + p0) // BLOCK, -(-(base + p1) // BLOCK)):
                        gen.manual_seed(stream_seed(seed, b, -1))
                        drawn = src(gen, BLOCK, dim, dtype, device)
                        lo, hi = max(b * BLOCK, base + p0), min((b + 1) * BLOCK, base + p1)
                        theta[lo - base : hi - base] = drawn[lo - b * BLOCK : hi - b * BLOCK]
                else:
                    theta[p0:p1] = src[base + p0 - first : base + p1 - first]
            theta[:r_lo] = theta[r_lo]  # padding rows: valid states, never stepped or observed
            theta[r_hi:] = theta[r_lo]
            a_loc = np.full(N, a_chain[base + r_lo - C0])
            a_loc[r_lo:r_hi] = a_chain[base + r_lo - C0 : base + r_hi - C0]
            s_loc = None
            if s_chain is not None:
                s_loc = np.ones(N)
                s_loc[r_lo:r_hi] = s_chain[base + r_lo - C0 : base + r_hi - C0]
            watch = any(groups[g].observers for g, _, _ in parts)
            traj = torch.empty((T if watch else 0, N, dim), dtype=dtype, device=device)
            obs_states = []
            for g, p0, p1 in parts:
                row = [o.start(base + p0 - int(offs[g]), p1 - p0, dim, dtype, device) for o in groups[g].observers]
                for o, s in zip(groups[g].observers, row):
                    o.update(s, 0, theta[p0:p1])
                obs_states.append(row)
            tiles = -(-horizon // T)

            def blocks_needed(tile: int) -> int:
                return -(-(min(active_end(tile * T), base + r_hi) - base) // BLOCK)

            draws = None if kind == "fused" else _Draws(noise, seed, cb0, cb1, T, width, raw_dtype, device, tiles,
                                                        blocks_needed)
            if kind == "fused":
                run = _Fused(spec, theta, a_loc, s_loc, traj, bound, seed, base)
            elif kind == "compiled":
                run = _Compiled(spec, theta, a_loc, s_loc, traj, bound)
            else:
                run = _Torch(landscape, noise, theta, a_loc, s_loc, traj, bound, check_every, dtype)
            try:
                for tile in range(tiles):
                    k = tile * T
                    L = min(T, horizon - k)
                    steps = np.ones(L) if schedule is None else np.array([_scheduled(schedule, k + t) for t in range(L)])
                    raw = None if draws is None else draws.get(tile)
                    cuts = sorted({k, k + L} | {h for h in H if k < h < k + L})
                    for u, v in zip(cuts[:-1], cuts[1:]):  # the running prefix is fixed between horizons
                        stop = min(active_end(u), base + r_hi) - base
                        bad = run.advance(raw, u - k, steps[u - k : v - k], u, r_lo, stop)
                        if bad is not None:
                            raise DivergenceError(bad[0], base + bad[1], bad[2], bound)
                        bar.update((v - u) * (stop - r_lo))
                    for (g, p0, p1), row in zip(parts, obs_states):
                        if row and H[g] > k:
                            block = traj[: min(L, H[g] - k), p0:p1]
                            for o, s in zip(groups[g].observers, row):
                                o.update_block(s, k, block)
            finally:
                if draws is not None:
                    draws.close()
            for (g, p0, p1), row in zip(parts, obs_states):
                for o, s in zip(groups[g].observers, row):
                    states[g][o.name].append(s)
                finals[g].append(theta[p0:p1].cpu().numpy())
    bar.close()
    seconds = time.perf_counter() - t0
    out = []
    for g, grp in enumerate(groups):
        observed = {o.name: o.finish(states[g][o.name]) for o in grp.observers}
        a = a_parts[g]
        step = float(a[0]) if np.ndim(grp.step) == 0 else a.copy()
        out.append(Simulation(np.concatenate(finals[g]), observed, step, H[g], sizes[g], int(seed), seconds,
                              {"tile": T, "block": BLOCK, "device": str(device), "dtype": str(dtype),
                               "schedule": schedule is not None, "kernel": kind, "first_chain": int(offs[g]),
                               "groups": G}))
    return out


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
    """Steps of the running rows [start, stop) of a chunk in one numba call per stretch
    (:mod:`memdyn._step_kernel`); a divergence is located by replaying the stretch from its start
    one step at a time."""

    def __init__(self, spec, theta, a_loc, s_loc, traj, bound):
        from ._step_kernel import advance_line

        self.kernel, (self.coef, self.kind, self.par), self.bound = advance_line, spec, float(bound)
        self.theta = theta.view(-1).numpy()
        self.snapshot = np.empty_like(self.theta)
        self.a_loc = a_loc
        self.s_loc = np.ones_like(a_loc) if s_loc is None else s_loc
        self.traj = traj.reshape(traj.shape[0], traj.shape[1]).numpy()  # dim 1

    def _run(self, theta, raw, t0, steps, keep, start, stop):
        """The kernel on the blocks holding rows [start, stop) (views: its loops start at 0)."""
        b0, b1 = start // BLOCK, -(-stop // BLOCK)
        lo, hi = b0 * BLOCK, b1 * BLOCK
        traj = self.traj[:, lo:hi] if keep else self.traj[:0, lo:hi]
        self.kernel(theta[lo:hi], raw[b0:b1], t0, steps.size, steps, self.a_loc[lo:hi], self.coef, self.kind,
                    self.par, self.s_loc[lo:hi], traj, start - lo, stop - lo)

    def advance(self, raw, t0, steps, k, start, stop):
        """Steps k .. k + len(steps) - 1 (draws t0 onwards of the tile) of rows [start, stop):
        None, or (step, row, |theta|) of the first row beyond the bound."""
        raw = raw.view(raw.shape[0], raw.shape[1], -1).numpy()
        keep = self.traj.shape[0] > 0
        self.snapshot[start:stop] = self.theta[start:stop]
        self._run(self.theta, raw, t0, steps, keep, start, stop)
        if stop <= start or np.abs(self.theta[start:stop]).max() <= self.bound:  # False for a NaN too
            return None
        theta = self.snapshot.copy()
        for t in range(steps.size):
            self._run(theta, raw, t0 + t, steps[t : t + 1], False, start, stop)
            size = np.abs(theta[start:stop])
            bad = ~(size <= self.bound)
            if bad.any():
                i = int(np.argmax(bad))
                return k + t + 1, start + i, float(size[i])


class _Fused:
    """Steps of the running rows [start, stop) of a chunk by the fused kernel (:mod:`memdyn._fused`):
    :data:`memdyn._fused.UNIT` steps per compiled call, the normals computed in the kernel from
    (seed, chain, iterate); a divergence is located by replaying the stretch one step at a time."""

    def __init__(self, spec, theta, a_loc, s_loc, traj, bound, seed: int, base: int):
        from ._fused import UNIT

        self.spec, self.bound, self.base = spec, float(bound), int(base)
        self.theta = theta.view(-1)  # dim 1
        dev, dt = theta.device, theta.dtype
        self.unit = UNIT.get(dev.type, max(UNIT.values()))

        def per_chain(v):  # a 0-d tensor when every chain has the same value (nothing to read per chain)
            v = np.ones_like(a_loc) if v is None else v
            return torch.tensor(float(v[0]), dtype=dt, device=dev) if np.ptp(v) == 0 else \
                torch.as_tensor(v, dtype=dt, device=dev)

        self.a, self.s = per_chain(a_loc), per_chain(s_loc)
        key = _splitmix(int(seed) & _MASK64)
        self.key = (torch.tensor(key & 0xFFFFFFFF, device=dev), torch.tensor(key >> 32, device=dev))
        self.traj = traj.view(traj.shape[0], traj.shape[1])  # dim 1

    def _rows(self, v, start, stop):
        return v if v.ndim == 0 else v[start:stop]

    def _stretch(self, x, k, steps, start, stop, unit, keep, compiled, t0):
        """Run ``steps`` on x (rows [start, stop)) unit by unit; eager (``compiled`` False) it stops
        after the first step that leaves the bound and returns the number of steps taken."""
        fn = _fused_function(self.spec, unit, keep, self.a.ndim == 0, self.s.ndim == 0, compiled)
        a, s = self._rows(self.a, start, stop), self._rows(self.s, start, stop)
        dev, units = x.device, -(-steps.size // unit)
        # the stretch's scalars and step multipliers go to the device once, not once per unit
        mult = torch.ones(units * unit, dtype=x.dtype)
        mult[: steps.size] = torch.as_tensor(steps, dtype=x.dtype)
        mult = mult.to(dev)
        first = torch.tensor(self.base + start, dtype=torch.int64, device=dev)
        ks = k + unit * torch.arange(units, dtype=torch.int64, device=dev)
        sizes = [min(unit, steps.size - u) for u in range(0, steps.size, unit)]
        counts = torch.tensor(sizes, dtype=torch.int64, device=dev)
        for j, (u, count) in enumerate(zip(range(0, steps.size, unit), sizes)):
            new, hist = fn(x, a, s, first, ks[j], counts[j], mult[u : u + unit], *self.key)
            x.copy_(new)
            if keep:
                self.traj[t0 + u : t0 + u + count, start:stop] = hist[:count]
            if not compiled and not bool(x.abs().amax() <= self.bound):
                return u + 1
        return None

    def advance(self, raw, t0, steps, k, start, stop):
        """Steps k .. k + len(steps) - 1 of rows [start, stop) (``raw`` unused: the normals are
        computed in the kernel): None, or (step, row, |theta|) of the first row beyond the bound."""
        if stop <= start or steps.size == 0:
            return None
        x = self.theta[start:stop]
        snapshot = x.clone()
        self._stretch(x, k, steps, start, stop, self.unit, self.traj.shape[0] > 0, True, t0)
        if bool(x.abs().amax() <= self.bound):
            return None
        t = self._stretch(snapshot, k, steps, start, stop, 1, False, False, t0)  # replayed in place
        t = steps.size if t is None else t
        size = snapshot.abs()
        i = int(torch.argmax((~(size <= self.bound)).to(torch.uint8)))
        return k + t, start + i, float(size[i])


_FUSED_CACHE: dict = {}


def _fused_function(spec, unit: int, keep: bool, a_scalar: bool, s_scalar: bool, compiled: bool):
    """The fused unit for a landscape spec, compiled once per process and shape family (0-d or
    per-chain steps and noise factors) with dynamic shapes; eager when ``compiled`` is False."""
    from ._fused import fused_unit

    coef, kind, par = spec
    key = (tuple(coef), kind, tuple(par), unit, keep, a_scalar, s_scalar, compiled)
    if key not in _FUSED_CACHE:
        fn = fused_unit(coef, kind, par, unit, keep)
        _FUSED_CACHE[key] = torch.compile(fn, dynamic=True) if compiled else fn
    return _FUSED_CACHE[key]


class _Torch:
    """Steps of the running rows [start, stop) of a chunk, one batch of tensor operations per step
    (any landscape and noise, any device); a divergence is located by replaying from the last
    checked state."""

    def __init__(self, landscape, noise, theta, a_loc, s_loc, traj, bound, check_every, dtype):
        self.landscape, self.noise, self.theta, self.traj = landscape, noise, theta, traj
        dev = theta.device
        self.a_loc = torch.as_tensor(a_loc, dtype=dtype, device=dev)[:, None]
        self.neg = -self.a_loc
        self.scale = None if s_loc is None else torch.as_tensor(s_loc, dtype=dtype, device=dev)[:, None]
        self.grad = torch.empty_like(theta)
        self.snapshot = torch.empty_like(theta)
        self.bound, self.check_every = bound, check_every

    def step(self, theta, raw_t, a_k, start, stop):
        """theta[start:stop] <- theta - a_k a_i g, in place, g the noise model's gradient sample at
        noise factor s_i (:meth:`memdyn.noise.Noise.sample_gradient`)."""
        x, grad = theta[start:stop], self.grad[start:stop]
        neg = self.neg[start:stop] if a_k == 1.0 else self.a_loc[start:stop] * -a_k
        self.landscape.grad_into(x, grad)
        self.noise.sample_gradient(grad, raw_t[start:stop], x, None if self.scale is None else self.scale[start:stop])
        x.addcmul_(grad, neg)

    def advance(self, raw, t0, steps, k0, start, stop):
        """Steps k0 .. k0 + len(steps) - 1 (draws t0 onwards of the tile) of rows [start, stop):
        None, or (step, row, |theta|) of the first row beyond the bound."""
        theta = self.theta
        if stop <= start:
            return None
        keep = self.traj.shape[0] > 0
        self.snapshot.copy_(theta)
        k_snap = k0
        end = k0 + steps.size
        nb = -(-stop // BLOCK)  # the blocks holding running rows
        for t in range(steps.size):
            self.step(theta, raw[:nb, t0 + t].reshape(nb * BLOCK, raw.shape[3]), float(steps[t]), start, stop)
            if keep:
                self.traj[t0 + t, start:stop].copy_(theta[start:stop])
            k = k0 + t + 1
            if k % self.check_every == 0 or k == end:
                if not bool(theta[start:stop].abs().amax() <= self.bound):
                    return self._locate(raw, t0 - k0, k_snap, steps, start, stop, k0)
                self.snapshot.copy_(theta)
                k_snap = k
        return None

    def _locate(self, raw, shift, k_snap, steps, start, stop, k0):
        """Replay from the last good snapshot one step at a time: (step, row, |theta|) of the first
        row beyond the bound (iterate k uses the tile's draws k + shift)."""
        theta, nb = self.snapshot.clone(), -(-stop // BLOCK)
        k = k_snap
        while True:
            self.step(theta, raw[:nb, k + shift].reshape(nb * BLOCK, raw.shape[3]), float(steps[k - k0]), start, stop)
            k += 1
            size = theta[start:stop].abs().amax(dim=1)
            bad = ~(size <= self.bound)
            if bool(bad.any()):
                i = int(torch.nonzero(bad)[0, 0])
                return k, start + i, float(size[i])


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
