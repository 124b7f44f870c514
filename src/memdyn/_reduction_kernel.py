"""numba kernel of :func:`memdyn.reference.sde_exit_time_2d`: mean absorption times of a banded
continuous-time chain by state reduction. Kept apart so that importing memdyn does not import numba."""

import numba
import numpy as np


@numba.njit(cache=True)
def banded_absorption_times(P, absorb, tau):
    """Mean times to absorption m, from m_i = tau_i + sum_j P[i, j] m_j, by state reduction.

    P : (n, 2w + 1) jump probabilities between transient states, band storage: P[i, w + d] is the
        probability of i -> i + d (|d| <= w); absorb : (n,) probability of i -> absorbed;
        tau : (n,) mean holding time per visit. All are overwritten.

    States are eliminated in order; eliminating k sends every i -> k jump on to k's successors
    (P[i, j] += P[i, k] P[k, j] / S_k, likewise for absorb and tau), where S_k is the probability
    of leaving k for a later state or absorption, summed rather than taken as 1 - P[k, k]. Every
    operation adds non-negative numbers (Grassmann, Taksar & Heyman's rule), so the result keeps
    its relative accuracy however widely the rates and times range (times of 1e50 steps included).
    """
    n, width = P.shape
    w = (width - 1) // 2
    S = np.empty(n)
    for k in range(n):
        s = absorb[k]
        for d in range(1, w + 1):
            if k + d < n:
                s += P[k, w + d]
        S[k] = s
        if s <= 0.0:
            continue
        for di in range(1, w + 1):
            i = k + di
            if i >= n:
                break
            pik = P[i, w - di]
            if pik == 0.0:
                continue
            f = pik / s
            P[i, w - di] = 0.0
            tau[i] += f * tau[k]
            absorb[i] += f * absorb[k]
            for dj in range(1, w + 1):
                j = k + dj
                if j >= n:
                    break
                pkj = P[k, w + dj]
                if pkj != 0.0:
                    P[i, w + j - i] += f * pkj
    m = np.zeros(n)
    for k in range(n - 1, -1, -1):
        if S[k] <= 0.0:
            m[k] = np.inf
            continue
        acc = tau[k]
        for d in range(1, w + 1):
            if k + d < n:
                acc += P[k, w + d] * m[k + d]
        m[k] = acc / S[k]
    return m
