"""Observers: reductions of a running simulation computed on the fly.

An observer keeps per-chain state for each chunk of chains (so memory is O(chains), not
O(chains x steps), unless a trace is asked for) and merges chunks in chain order at the end, so
its result does not depend on how chains were chunked.

Steps are counted in iterations: k = 0 is the initial state, k = n_steps the last.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

__all__ = [
    "Observer",
    "Trace",
    "Moments",
    "Occupation",
    "FirstPassage",
    "Passages",
    "TraceResult",
    "MomentsResult",
    "OccupationResult",
    "FirstPassageResult",
    "ExitTime",
    "ExitTimeResult",
    "intervals",
]


class Observer:
    """Base class. ``name`` keys the result in :attr:`memdyn.dynamics.Simulation.observed`."""

    name: str = "observer"

    def start(self, offset: int, n: int, dim: int, dtype, device):
        """Per-chunk state for chains ``offset .. offset + n - 1``."""
        raise NotImplementedError

    def update(self, state, k: int, theta: torch.Tensor) -> None:
        """Called with the iterate after step k (k = 0: initial state)."""
        raise NotImplementedError

    def update_block(self, state, k: int, thetas: torch.Tensor) -> None:
        """Called with the iterates after steps k + 1, ..., k + L, ``thetas`` of shape (L, n, dim)
        (the engine's tiles). The default calls :meth:`update` for each; built-in observers reduce
        the whole block in a few tensor operations."""
        for t in range(thetas.shape[0]):
            self.update(state, k + 1 + t, thetas[t])

    def finish(self, states: list):
        """Merge per-chunk states (in chain order) into the result."""
        raise NotImplementedError


def _due(k: int, start: int, every: int) -> bool:
    return k >= start and (k - start) % every == 0


def _due_rows(k: int, length: int, start: int, every: int) -> list[int]:
    """Rows t of a block of iterates after steps k + 1 .. k + length whose step is due."""
    first = max(k + 1, start)
    first += (-(first - start)) % every
    return list(range(first - k - 1, length, every))


def _coords(coords, dim: int) -> np.ndarray:
    c = np.arange(dim) if coords is None else np.atleast_1d(np.asarray(coords, dtype=np.int64))
    if c.size == 0 or c.min() < 0 or c.max() >= dim:
        raise ValueError(f"coords must index 0..{dim - 1}, got {c.tolist()}")
    return c


@dataclass
class TraceResult:
    """Subsampled trajectories: ``values[t, i, j]`` is coordinate ``coords[j]`` of chain
    ``chains[i]`` after step ``steps[t]``."""

    steps: np.ndarray
    chains: np.ndarray
    coords: np.ndarray
    values: np.ndarray


class Trace(Observer):
    """Record every ``every``-th iterate of the selected chains and coordinates.

    Parameters
    ----------
    every : int
        Save steps 0, every, 2 every, ...
    chains : sequence of int, optional
        Global chain indices to keep (default all).
    coords : sequence of int, optional
        Coordinates to keep (default all).
    until : int, optional
        Last step recorded (default: all).
    """

    name = "trace"

    def __init__(self, every: int = 1, chains: Sequence[int] | None = None, coords=None, until: int | None = None,
                 name: str | None = None):
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.every, self.chains, self.coords, self.until = int(every), chains, coords, until
        self.name = name or self.name

    def start(self, offset, n, dim, dtype, device):
        coords = _coords(self.coords, dim)
        if self.chains is None:
            local = np.arange(n)
        else:
            g = np.asarray(self.chains, dtype=np.int64)
            local = g[(g >= offset) & (g < offset + n)] - offset
        return {
            "global": local + offset,
            "coords": coords,
            "idx": torch.as_tensor(local, device=device),
            "cidx": torch.as_tensor(coords, device=device),
            "rows": [],
            "steps": [],
        }

    def update(self, state, k, theta):
        self.update_block(state, k - 1, theta[None])

    def update_block(self, state, k, thetas):
        rows = _due_rows(k, thetas.shape[0], 0, self.every)
        if self.until is not None:
            rows = [t for t in rows if k + 1 + t <= self.until]
        if rows:
            state["steps"].extend(k + 1 + t for t in rows)
            sel = thetas[rows] if len(rows) < thetas.shape[0] else thetas
            state["rows"].append(sel.index_select(1, state["idx"]).index_select(2, state["cidx"]).cpu())

    def finish(self, states):
        steps = np.asarray(states[0]["steps"], dtype=np.int64)
        blocks = [torch.cat(s["rows"]).numpy() for s in states if len(s["global"])]
        values = np.concatenate(blocks, axis=1) if blocks else np.empty((steps.size, 0, len(states[0]["coords"])))
        chains = np.concatenate([s["global"] for s in states])
        return TraceResult(steps, chains, states[0]["coords"], values)


@dataclass
class MomentsResult:
    """Per-chain time averages of theta and theta theta^T over ``count`` saved iterates."""

    count: int
    coords: np.ndarray
    chain_mean: np.ndarray
    chain_second: np.ndarray

    @property
    def mean(self) -> np.ndarray:
        return self.chain_mean.mean(axis=0)

    @property
    def cov(self) -> np.ndarray:
        """Covariance pooled over chains and time."""
        m = self.mean
        return self.chain_second.mean(axis=0) - np.outer(m, m)


class Moments(Observer):
    """Running first and second moments per chain (float64 accumulators).

    Parameters
    ----------
    start : int
        First step included (burn-in before it).
    every : int
        Thinning.
    coords : sequence of int, optional
    center : array_like, optional
        Subtracted before accumulating (reduces cancellation; default 0).
    """

    name = "moments"

    def __init__(self, start: int = 0, every: int = 1, coords=None, center=None, name: str | None = None):
        if start < 0 or every < 1:
            raise ValueError(f"need start >= 0 and every >= 1, got {start}, {every}")
        self.start_step, self.every, self.coords, self.center = int(start), int(every), coords, center
        self.name = name or self.name

    def start(self, offset, n, dim, dtype, device):
        coords = _coords(self.coords, dim)
        c = len(coords)
        center = np.zeros(c) if self.center is None else np.asarray(self.center, dtype=np.float64)
        return {
            "coords": coords,
            "cidx": torch.as_tensor(coords, device=device),
            "center": torch.as_tensor(center, dtype=torch.float64, device=device),
            "s1": torch.zeros((n, c), dtype=torch.float64, device=device),
            "s2": torch.zeros((n, c, c), dtype=torch.float64, device=device),
            "count": 0,
        }

    def update(self, state, k, theta):
        if _due(k, self.start_step, self.every):
            self.update_block(state, k - 1, theta[None])

    def update_block(self, state, k, thetas):
        rows = _due_rows(k, thetas.shape[0], self.start_step, self.every)
        if rows:
            z = thetas[rows].index_select(2, state["cidx"]).to(torch.float64) - state["center"]
            state["s1"] += z.sum(0)
            state["s2"] += torch.einsum("tni,tnj->nij", z, z)
            state["count"] += len(rows)

    def finish(self, states):
        count = states[0]["count"]
        if count == 0:
            raise ValueError(f"{self.name}: no iterate was at or after step {self.start_step}")
        center = states[0]["center"].cpu().numpy()
        s1 = np.concatenate([s["s1"].cpu().numpy() for s in states]) / count
        s2 = np.concatenate([s["s2"].cpu().numpy() for s in states]) / count
        mean = s1 + center
        second = s2 + center[None, :, None] * s1[:, None, :] + s1[:, :, None] * center[None, None, :]
        second += np.outer(center, center)[None]
        return MomentsResult(count, states[0]["coords"], mean, second)


@dataclass
class OccupationResult:
    """``counts[i, r]``: number of saved iterates chain i spent in region r."""

    counts: np.ndarray
    total: int

    @property
    def fractions(self) -> np.ndarray:
        """Per-chain fraction of saved iterates in each region, shape (chains, regions)."""
        return self.counts / max(self.total, 1)


def intervals(edges, coord: int = 0) -> Callable[[torch.Tensor], torch.Tensor]:
    """State assignment by intervals of one coordinate: label r for edges[r] <= theta_coord <
    edges[r+1], -1 outside. Use +-inf edges for unbounded regions."""
    e = np.asarray(edges, dtype=np.float64)
    if e.ndim != 1 or e.size < 2 or np.any(np.diff(e) <= 0):
        raise ValueError(f"edges must be increasing with at least 2 entries, got {e.tolist()}")

    def assign(theta: torch.Tensor) -> torch.Tensor:
        et = torch.as_tensor(e, dtype=theta.dtype, device=theta.device)
        lab = torch.bucketize(theta[:, coord].contiguous(), et, right=True) - 1
        return torch.where((lab < 0) | (lab >= e.size - 1), torch.full_like(lab, -1), lab)

    return assign


class Occupation(Observer):
    """Count the iterates each chain spends in each region.

    Parameters
    ----------
    assign : callable
        ``assign(theta)`` -> integer labels in ``[0, n_states)`` (or -1: no region), shape (n,).
    n_states : int
    start, every : int
        Burn-in and thinning.
    """

    name = "occupation"

    def __init__(self, assign, n_states: int, start: int = 0, every: int = 1, name: str | None = None):
        if n_states < 1:
            raise ValueError(f"n_states must be >= 1, got {n_states}")
        self.assign, self.n_states, self.start_step, self.every = assign, int(n_states), int(start), int(every)
        self.name = name or self.name

    def start(self, offset, n, dim, dtype, device):
        r = self.n_states + 1
        return {"counts": torch.zeros(n * r, dtype=torch.int64, device=device),
                "base": torch.arange(n, device=device) * r, "total": 0}

    def update(self, state, k, theta):
        if _due(k, self.start_step, self.every):
            self.update_block(state, k - 1, theta[None])

    def update_block(self, state, k, thetas):
        rows = _due_rows(k, thetas.shape[0], self.start_step, self.every)
        if rows:
            sel = thetas[rows]
            lab = self.assign(sel.reshape(-1, sel.shape[2])).long()
            lab = torch.where(lab < 0, torch.full_like(lab, self.n_states), lab)
            state["counts"].index_add_(0, state["base"].repeat(len(rows)) + lab, torch.ones_like(lab))
            state["total"] += len(rows)

    def finish(self, states):
        r = self.n_states + 1
        counts = np.concatenate([s["counts"].cpu().numpy().reshape(-1, r) for s in states])
        return OccupationResult(counts[:, : self.n_states], states[0]["total"])


@dataclass
class FirstPassageResult:
    """First step at which each chain was in the target; ``hit`` False means censored at
    ``horizon`` (times is -1 there)."""

    times: np.ndarray
    hit: np.ndarray
    horizon: int


class Passages(Observer):
    """Passages through a sequence of target sets, in order: tau_1 is the first step (from
    ``start``) in ``targets[0]``, tau_{j+1} the first step at or after tau_j in ``targets[j]``
    (so one step can complete several). The result's ``times`` is (len(targets), chains), -1 where
    a chain had not made that passage by the horizon (``hit`` False)."""

    name = "passages"

    def __init__(self, targets, start: int = 0, name: str | None = None):
        self.targets, self.start_step = list(targets), int(start)
        if not self.targets:
            raise ValueError("Passages needs at least one target")
        self.name = name or self.name

    def start(self, offset, n, dim, dtype, device):
        return {"times": torch.full((len(self.targets), n), -1, dtype=torch.int64, device=device), "last": 0}

    def update(self, state, k, theta):
        self.update_block(state, k - 1, theta[None])

    def update_block(self, state, k, thetas):
        L, n = thetas.shape[0], thetas.shape[1]
        state["last"] = k + L
        r0 = max(0, self.start_step - k - 1)
        if r0 >= L:
            return
        rows = torch.arange(L, device=thetas.device)[:, None]  # row r is step k + 1 + r
        flat = thetas.reshape(-1, thetas.shape[2])
        times = state["times"]
        for j, target in enumerate(self.targets):
            hit = target(flat).reshape(L, n) & (rows >= r0) & (times[j] < 0)
            if j > 0:  # only at or after the previous passage
                prev = times[j - 1]
                hit &= (prev >= 0) & (rows >= (prev - k - 1).clamp(min=0))
            first = torch.argmax(hit.to(torch.uint8), dim=0)  # the first True (0 where none)
            new = hit.any(dim=0)
            times[j][new] = (k + 1 + first)[new]

    def finish(self, states):
        times = np.concatenate([s["times"].cpu().numpy() for s in states], axis=1)
        return FirstPassageResult(times, times >= 0, states[0]["last"])


class FirstPassage(Passages):
    """First-passage step into a target set ``target(theta) -> bool (n,)``, from step ``start``."""

    name = "first_passage"

    def __init__(self, target, start: int = 0, name: str | None = None):
        super().__init__([target], start, name)
        self.target = target

    def finish(self, states):
        out = super().finish(states)
        return FirstPassageResult(out.times[0], out.hit[0], out.horizon)


@dataclass
class ExitTimeResult:
    """Per-chain first exit: ``grid_time`` is the first step whose iterate is outside (-1 if
    none: censored at ``horizon``); ``bridge_time`` is the Brownian-bridge corrected expectation
    E[tau | path] in steps (for a censored chain, the expected time survived within the horizon)."""

    grid_time: np.ndarray
    bridge_time: np.ndarray
    exited: np.ndarray
    horizon: int


class ExitTime(Observer):
    """First exit through a boundary, with a Brownian-bridge crossing correction.

    Checking the boundary only at the iterates misses excursions between them and overestimates
    exit times. Between iterates at signed distances d_k, d_{k+1} > 0 from the boundary (inside),
    a Brownian bridge with variance ``var_per_step`` per step crosses it with probability
    p_k = exp(-2 d_k d_{k+1} / var_per_step); the estimator E[tau | path] = sum_k prod_{j<k}(1 - p_j)
    (summed until the iterate itself is outside) uses these without extra randomness.

    Parameters
    ----------
    distance : callable
        ``distance(theta)`` -> signed distance to the boundary along its normal, > 0 inside.
    var_per_step : float
        Variance of one step's noise along the normal, a^2 sigma^2 for noise sigma^2 I at step a.
    """

    name = "exit_time"

    def __init__(self, distance, var_per_step: float, name: str | None = None):
        if not var_per_step > 0:
            raise ValueError(f"var_per_step must be > 0, got {var_per_step}")
        self.distance, self.var = distance, float(var_per_step)
        self.name = name or self.name

    def start(self, offset, n, dim, dtype, device):
        f64 = torch.float64
        return {"grid": torch.full((n,), -1, dtype=torch.int64, device=device),
                "survive": torch.ones(n, dtype=f64, device=device),
                "bridge": torch.zeros(n, dtype=f64, device=device),
                "prev": None, "last": 0}

    def update(self, state, k, theta):
        if state["prev"] is None:  # the initial state
            d = self.distance(theta).to(torch.float64)
            state["grid"][d <= 0] = k
            state["prev"], state["last"] = d.clamp(min=0), k
        else:
            self.update_block(state, k - 1, theta[None])

    def update_block(self, state, k, thetas):
        L, n = thetas.shape[0], thetas.shape[1]
        d = self.distance(thetas.reshape(-1, thetas.shape[2])).to(torch.float64).reshape(L, n)
        inside = d.clamp(min=0)
        prev = torch.cat([state["prev"][None], inside[:-1]])
        # survival through step j-1 -> j counts before the endpoint test; the crossing probability
        # exp(-2 d_(j-1)^+ d_j^+ / var) is 1 as soon as either end is outside, which zeroes the survival
        # weight of an exited chain for good (no alive mask needed). Over the block:
        # bridge += S (1 + q_1 + q_1 q_2 + ...), S <- S q_1 ... q_L, with q_j = 1 - p_j.
        q = torch.cumprod(torch.expm1(prev * inside * (-2 / self.var)).neg_(), dim=0)
        state["bridge"].add_(state["survive"] * (1 + q[:-1].sum(0)))
        state["survive"].mul_(q[-1])
        out = d <= 0
        grid = state["grid"]
        new = out.any(dim=0) & (grid < 0)
        grid[new] = (k + 1 + torch.argmax(out.to(torch.uint8), dim=0))[new]
        state["prev"], state["last"] = inside[-1], k + L

    def finish(self, states):
        grid = np.concatenate([s["grid"].cpu().numpy() for s in states])
        bridge = np.concatenate([s["bridge"].cpu().numpy() for s in states])
        return ExitTimeResult(grid, bridge, grid >= 0, states[0]["last"])
