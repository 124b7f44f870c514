"""numba kernel of :func:`memdyn.simulate` for 1-D polynomial landscapes with Gaussian noise of a
constant or tanh-step scale: a tile of steps of every chain in one compiled call (no per-step
Python overhead). Kept apart so that importing memdyn does not import numba."""

import numba
import numpy as np

@numba.njit(inline="always", error_model="numpy")
def tanh(u):
    """tanh(u) in arithmetic the compiler vectorises (libm's tanh is a scalar call, ~13 ns a chain-step):
    e = exp(-2|u|) as (exp(-2|u|/256))^256, the inner exp by its Taylor polynomial of degree 9 on
    [-0.16, 0] (|u| is clamped at 20, where tanh is 1 in float64), then sign(u) (1 - e)/(1 + e).
    Absolute error < 1e-13 (tested against numpy)."""
    a = min(abs(u), 20.0)
    z = a * (-2.0 / 256.0)
    p = 1.0 + z * (1.0 + z * (1 / 2 + z * (1 / 6 + z * (1 / 24 + z * (1 / 120 + z * (1 / 720 + z * (
        1 / 5040 + z * (1 / 40320 + z * (1 / 362880)))))))))
    p = p * p
    p = p * p
    p = p * p
    p = p * p
    p = p * p
    p = p * p
    p = p * p
    p = p * p
    t = (1.0 - p) / (1.0 + p)
    return t if u >= 0 else -t


@numba.njit(nogil=True, cache=True, error_model="numpy")  # numpy: no zero-division branch, so loops vectorise
def advance_line(theta, raw, t0, steps, a_step, a_chain, coef, kind, par, scale, traj, start, stop):
    """Advance chains [start, stop) ``steps`` iterations of theta <- theta - a (F'(theta) + sigma(theta) s z).

    theta : (N,) states, N a multiple of the block size B, updated in place (each step is computed
        in float64 and the state stored in theta's dtype); rows outside [start, stop) (within the
        first and the last block: 0 <= start < B, N - B < stop <= N) are left as they were.
    raw : (nb, T, B) standard normals; chain i = b B + j reads raw[b, t0 + t, j] at step t.
    a_step : (steps,) step of each iteration; a_chain : (N,) per-chain factor (products with 1 are
        exact, so a constant step and per-chain steps give the same bits).
    coef : F' as polynomial coefficients, highest degree first (Horner's rule).
    kind : 0 constant sigma = par[0]; 1 tanh step
        sigma(x) = par[1] + (par[0] - par[1]) (1 - tanh((x - par[2]) / par[3])) / 2.
    scale : (N,) per-chain noise factor s.
    traj : (T, N) iterates, step t stored at traj[t0 + t], or shape (0, N) to keep none.

    The loops run over the chains of a block innermost (vectorised), one block after another,
    single-threaded: the engine draws the next tile's noise on the other core meanwhile.
    """
    block = raw.shape[2]
    keep = traj.shape[0] > 0
    m = coef.shape[0]
    nb = theta.shape[0] // block
    x = np.empty(block)
    g = np.empty(block)
    sg = np.empty(block)
    head = theta[:start].copy()
    tail = theta[stop:].copy()
    # every loop's index runs from 0 (a range the compiler knows is >= 0, so indexing needs no
    # wraparound test and the loops vectorise); the rows outside [start, stop) are stepped too and put
    # back at the end (their trajectory rows are never read)
    for b in range(nb):
        lo = b * block
        for j in range(block):
            x[j] = theta[lo + j]
        for t in range(steps):
            for j in range(block):
                g[j] = coef[0]
            for c in range(1, m):
                cc = coef[c]
                for j in range(block):
                    g[j] = g[j] * x[j] + cc
            if kind == 0:
                for j in range(block):
                    sg[j] = par[0]
            else:
                for j in range(block):
                    sg[j] = par[1] + (par[0] - par[1]) * 0.5 * (1.0 - tanh((x[j] - par[2]) / par[3]))
            at = a_step[t]
            for j in range(block):
                theta[lo + j] = x[j] - at * a_chain[lo + j] * (g[j] + sg[j] * scale[lo + j] * raw[b, t0 + t, j])
            for j in range(block):
                x[j] = theta[lo + j]
            if keep:
                for j in range(block):
                    traj[t0 + t, lo + j] = theta[lo + j]
    theta[:start] = head
    theta[stop:] = tail
