"""numba kernel of :meth:`memdyn.memorization.MemorizingLandscape.grad` on the CPU: the
responsibility-weighted pull of every chain in one compiled loop (the tensor version spends its
time dispatching some 70 small operations per call when chains are few). Kept apart so that
importing memdyn does not import numba."""

import math

import numba
import numpy as np


@numba.njit(cache=True, error_model="numpy")
def memorizing_grad(x, S, mean, cov_inv, h2, log_w0, log_wi, c, log_norm0, log_normi, out):
    """out[i] = r0 C^-1 (x_i - m) + ((1 - r0) x_i - sum_j r_j s_j) / h^2 for every chain i.

    x : (N, D) states; S : (n, D) training points; mean (D,), cov_inv (D, D); h2 = h^2.
    log_w0, log_wi : log-weights with normalising constants of the generalizing and of each
        memorizing component (used when c is empty).
    c : (N,) per-chain memorization weights, or shape (0,): then log(1 - c) + log_norm0 and
        log(c) + log_normi replace log_w0 and log_wi chain by chain.
    The responsibilities r are the softmax of the components' log-weights at x_i, by log-sum-exp.
    """
    N, D = x.shape
    n = S.shape[0]
    li = np.empty(n)
    dm = np.empty(D)
    cd = np.empty(D)
    per_chain = c.shape[0] > 0
    for i in range(N):
        w0, wi = log_w0, log_wi
        if per_chain:
            w0 = (math.log1p(-c[i]) if c[i] < 1.0 else -math.inf) + log_norm0
            wi = (math.log(c[i]) if c[i] > 0.0 else -math.inf) + log_normi
        for d in range(D):
            dm[d] = x[i, d] - mean[d]
        q = 0.0
        for d in range(D):
            acc = 0.0
            for e in range(D):
                acc += cov_inv[d, e] * dm[e]
            cd[d] = acc
            q += acc * dm[d]
        l0 = w0 - 0.5 * q
        top = l0
        for j in range(n):
            s2 = 0.0
            for d in range(D):
                u = x[i, d] - S[j, d]
                s2 += u * u
            li[j] = wi - 0.5 * s2 / h2
            if li[j] > top:
                top = li[j]
        r0 = math.exp(l0 - top)
        z = r0
        for j in range(n):
            li[j] = math.exp(li[j] - top)
            z += li[j]
        r0 /= z
        for d in range(D):
            pull = 0.0
            for j in range(n):
                pull += li[j] * S[j, d]
            out[i, d] = r0 * cd[d] + ((1.0 - r0) * x[i, d] - pull / z) / h2
