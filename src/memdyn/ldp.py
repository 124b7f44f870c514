"""Large deviations of constant-step SGD: Freidlin-Wentzell energies and the Arrhenius / Gibbs
fits (MODEL.md §5).

* :func:`fw_energies`: from transition costs B_ij = V(K_i -> K_j) between the critical components,
  W_i = min over spanning in-trees rooted at i of the sum of the costs of their edges (every
  component k != i has exactly one outgoing edge, and following them leads to i), computed as a
  minimum arborescence (Chu-Liu/Edmonds) rather than by enumeration; E_i = W_i - min_j W_j, and
  the long-run occupation satisfies a ln mu_a(U_i) -> -E_i.
* :func:`arrhenius_fit`: mean exit times ~ a^-1 P exp(V/a) iterations, so ln(a * mean exit) is
  linear in 1/a with slope V (the barrier) and intercept ln P.
* :func:`gibbs_fit`: a ln(occupation ratio) is linear in a near 0; its intercept is the energy
  difference.

Fits are weighted least squares with the measurements' standard errors taken as known.
"""

from __future__ import annotations

import math

import numpy as np

from .claims import weighted_line_fit

__all__ = ["fw_energies", "predicted_occupation", "arrhenius_fit", "gibbs_fit", "mean_exit_time_1d"]


def fw_energies(costs) -> dict:
    """Freidlin-Wentzell energies of m components from the matrix of transition costs.

    Parameters
    ----------
    costs : array_like, shape (m, m)
        B[i, j] >= 0: cost of the cheapest path from component i to component j (the diagonal is
        ignored; ``inf`` for no direct transition).

    Returns
    -------
    dict with ``W`` (m,), ``E`` (m,) = W - min W, ``most_visited`` (argmin E) and ``trees``:
    for each root i, the list of edges (k, l) of its minimal in-tree.
    """
    import networkx as nx

    B = np.asarray(costs, dtype=np.float64)
    if B.ndim != 2 or B.shape[0] != B.shape[1] or B.shape[0] < 1:
        raise ValueError(f"costs must be a non-empty square matrix, got shape {B.shape}")
    off = ~np.eye(B.shape[0], dtype=bool)
    if np.any(np.isnan(B[off])) or np.any(B[off] < 0):
        raise ValueError("transition costs must be >= 0 (inf allowed for no transition)")
    m = B.shape[0]
    W, trees = np.empty(m), []
    for root in range(m):
        if m == 1:
            W[root] = 0.0
            trees.append([])
            continue
        # an in-tree to `root` in B is an out-arborescence from `root` in the reversed graph;
        # dropping every edge out of `root` in B forces it to be the arborescence's root
        G = nx.DiGraph()
        G.add_nodes_from(range(m))
        for k in range(m):
            for l in range(m):
                if k != l and k != root and np.isfinite(B[k, l]):
                    G.add_edge(l, k, weight=float(B[k, l]))
        try:
            arb = nx.minimum_spanning_arborescence(G, attr="weight", preserve_attrs=True)
        except nx.NetworkXException:
            raise ValueError(f"no spanning in-tree reaches component {root}: some component cannot reach it") from None
        edges = [(k, l) for l, k in arb.edges()]
        trees.append(sorted(edges))
        W[root] = sum(B[k, l] for k, l in edges)
    E = W - W.min()
    return {"W": W, "E": E, "most_visited": int(np.argmin(E)), "trees": trees}


def predicted_occupation(E, a: float) -> np.ndarray:
    """Leading-order long-run occupation mu_a(U_i) proportional to exp(-E_i / a) (prefactors
    ignored: exact only in a ln mu_a as a -> 0)."""
    E = np.asarray(E, dtype=np.float64)
    if not a > 0:
        raise ValueError(f"a must be > 0, got {a}")
    z = np.exp(-(E - E.min()) / a)
    return z / z.sum()


def arrhenius_fit(steps, mean_exit, se) -> dict:
    """Fit ln(a * mean exit time) = ln P + V / a.

    Parameters
    ----------
    steps : array_like
        Step sizes a (>= 2 distinct).
    mean_exit, se : array_like
        Mean exit times in iterations and their standard errors.

    Returns
    -------
    dict with ``barrier`` (V), ``barrier_se``, ``log_prefactor`` (ln P), ``log_prefactor_se``,
    ``chi2``, ``dof``.
    """
    a, t, s = (np.asarray(v, dtype=np.float64).ravel() for v in (steps, mean_exit, se))
    if np.any(a <= 0) or np.any(t <= 0) or np.any(s <= 0):
        raise ValueError("steps, mean exit times and their errors must be > 0")
    y, y_se = np.log(a * t), s / t
    coef, cov = weighted_line_fit(1 / a, y, y_se)
    chi2 = float(np.sum(((y - coef[0] - coef[1] / a) / y_se) ** 2))
    return {"barrier": coef[1], "barrier_se": math.sqrt(cov[1, 1]), "log_prefactor": coef[0],
            "log_prefactor_se": math.sqrt(cov[0, 0]), "chi2": chi2, "dof": a.size - 2}


def gibbs_fit(steps, a_log_ratio, se) -> dict:
    """Extrapolate a ln(occupation ratio) linearly to a -> 0.

    Returns
    -------
    dict with ``intercept`` (the a -> 0 limit, = -(E_1 - E_0)), ``intercept_se``, ``slope``,
    ``slope_se``, ``chi2``, ``dof``.
    """
    a, y, s = (np.asarray(v, dtype=np.float64).ravel() for v in (steps, a_log_ratio, se))
    coef, cov = weighted_line_fit(a, y, s)
    chi2 = float(np.sum(((y - coef[0] - coef[1] * a) / s) ** 2))
    return {"intercept": coef[0], "intercept_se": math.sqrt(cov[0, 0]), "slope": coef[1],
            "slope_se": math.sqrt(cov[1, 1]), "chi2": chi2, "dof": a.size - 2}


def mean_exit_time_1d(landscape, sigma: float, step: float, x0: float, boundary: float, lower: float | None = None,
                      n: int = 20001) -> float:
    """Exact mean first-passage time of the SDE limit of 1-D SGD, in iterations, by quadrature.

    For dX = -F'(X) dt + sqrt(a sigma^2) dW (time t = k a) started at x0 < b = ``boundary`` and
    reflected far below (at ``lower``, default: where F exceeds its minimum by 60 a sigma^2),

        T(x0) = (2 / (a sigma^2)) int_{x0}^{b} exp(2F(y)/(a sigma^2)) int_{lower}^{y} exp(-2F(z)/(a sigma^2)) dz dy,

    returned as T / a iterations. Evaluated in log space (no overflow at small a). The discrete
    iteration differs from its SDE limit by O(a); a Brownian-bridge corrected simulation removes
    most of the grid-crossing part of that difference.
    """
    import torch
    from scipy.special import logsumexp

    if not (sigma > 0 and step > 0):
        raise ValueError("sigma and step must be > 0")
    if not x0 < boundary:
        raise ValueError(f"need x0 < boundary, got {x0}, {boundary}")
    D2 = step * sigma**2
    f = lambda x: landscape.value(torch.as_tensor(np.asarray(x, dtype=np.float64)[:, None])).numpy()  # noqa: E731
    if lower is None:
        xs = np.linspace(x0 - 50, x0, 200001)
        fx = f(xs)
        above = np.flatnonzero(fx > fx.min() + 30 * D2)
        lower = xs[above[-1]] if above.size and above[-1] < np.argmin(fx) else x0 - 50
    y = np.linspace(lower, boundary, n)
    h = y[1] - y[0]
    g = 2 * f(y) / D2
    inner = np.logaddexp.accumulate(-g + math.log(h))  # log int_lower^y exp(-g)
    outer = g + inner
    sel = y >= x0
    T = 2 / D2 * math.exp(logsumexp(outer[sel] + math.log(h)))
    return T / step
