"""numba kernel of :func:`memdyn.collapse.exact_fit`: the per-generation observables of a block of
replicates in one pass over their counts. Kept apart so that importing memdyn does not import numba."""

import numba
import numpy as np


@numba.njit(cache=True)
def record(counts, N, mu0, homozygosity, support, entropy, distance):
    """Observables of one generation, written into the 1-D outputs (one entry per row of ``counts``).

    counts : (R, n) int64 points per atom; N : points per generation; mu0 : (n,) the real law over
    the same atoms. With mu_i = counts_i / N over the atoms present (counts_i > 0):
    homozygosity sum mu_i^2, support #present, entropy -sum mu_i ln mu_i, and total variation to
    mu0, 1/2 (sum_present |mu_i - mu0_i| + 1 - sum_present mu0_i). Sums run over i in order, as
    ``np.bincount`` over ``np.nonzero`` does.
    """
    R, n = counts.shape
    for r in range(R):
        hom = 0.0
        ent = 0.0
        gap = 0.0
        mass = 0.0
        sup = 0
        for i in range(n):
            c = counts[r, i]
            if c == 0:
                continue
            mu = c / N
            hom += mu * mu
            ent += mu * np.log(mu)
            gap += abs(mu - mu0[i])
            mass += mu0[i]
            sup += 1
        homozygosity[r] = hom
        support[r] = sup
        entropy[r] = -ent
        distance[r] = 0.5 * (gap + 1.0 - mass)
