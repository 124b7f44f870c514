"""Freidlin-Wentzell energies of critical components.

From transition costs B_ij = V(K_i -> K_j) between the critical components, W_i = min over
spanning in-trees rooted at i of the sum of the costs of their edges (every component k != i has
exactly one outgoing edge, and following them leads to i), computed as a minimum arborescence
(Chu-Liu/Edmonds) rather than by enumeration; E_i = W_i - min_j W_j, and the long-run occupation
satisfies a ln mu_a(U_i) -> -E_i. :func:`transition_costs` computes B from a drift with the
minimum action method.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["FWEnergies", "TransitionCosts", "fw_energies", "predicted_occupation", "transition_costs"]


@dataclass(frozen=True)
class FWEnergies:
    """Result of :func:`fw_energies`.

    Attributes
    ----------
    W : ndarray (m,)
        Weight of the minimal in-tree rooted at each component.
    E : ndarray (m,)
        Energies W - min W: a ln mu_a(U_i) -> -E_i.
    most_visited : int
        argmin E, the W-graph's pick.
    trees : list of list of (k, l)
        For each root, the edges of its minimal in-tree.
    """

    W: np.ndarray
    E: np.ndarray
    most_visited: int
    trees: list


@dataclass(frozen=True)
class TransitionCosts:
    """Result of :func:`transition_costs`.

    Attributes
    ----------
    costs : ndarray (m, m)
        B[i, j] (inf where no saddle joins the two basins; 0 on the diagonal).
    minima, saddles : ndarray
        The critical points, refined.
    basins : list of (i, j)
        For each saddle, the two minima its unstable manifold falls into.
    paths : dict
        (i, saddle index) -> the minimum action path from minimum i to that saddle.
    """

    costs: np.ndarray
    minima: np.ndarray
    saddles: np.ndarray
    basins: list
    paths: dict


def fw_energies(costs) -> FWEnergies:
    """Freidlin-Wentzell energies of m components from the matrix of transition costs.

    Parameters
    ----------
    costs : array_like, shape (m, m)
        B[i, j] >= 0: cost of the cheapest path from component i to component j (the diagonal is
        ignored; ``inf`` for no direct transition).

    Returns
    -------
    FWEnergies
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
    return FWEnergies(W, E, int(np.argmin(E)), trees)


def predicted_occupation(E, a: float) -> np.ndarray:
    """Leading-order long-run occupation mu_a(U_i) proportional to exp(-E_i / a) (prefactors
    ignored: exact only in a ln mu_a as a -> 0)."""
    E = np.asarray(E, dtype=np.float64)
    if not a > 0:
        raise ValueError(f"a must be > 0, got {a}")
    z = np.exp(-(E - E.min()) / a)
    return z / z.sum()


def transition_costs(drift, minima, saddles, diffusion=None, *, n_points: int = 100, jacobian=None,
                     **mam_options) -> TransitionCosts:
    """Freidlin-Wentzell transition costs between attractors, by minimum action paths.

    For each saddle s (a fixed point whose Jacobian has exactly one eigenvalue with positive real
    part) the two ends of its unstable manifold are followed down the noiseless flow to find the
    basins i and j it separates; then V(s; K_i) and V(s; K_j) are computed with
    :func:`~memdyn.ldp.min_action_path`, and

        B_ij = min over saddles s between basins i and j of V(s; K_i)

    (falling from s into K_j costs nothing). Pairs of basins that share no saddle get ``inf``:
    the minimum in-trees of :func:`fw_energies` then route through intermediate components.

    Parameters
    ----------
    drift : callable
        b, mapping (n, d) points to (n, d) velocities; for SGD, b = -grad F.
    minima : array_like (m, d)
        Approximate stable points (refined by Newton's method and checked stable).
    saddles : array_like (k, d)
        Approximate index-1 saddles (refined and checked).
    diffusion : None, array_like or callable
        D, as in :func:`~memdyn.ldp.min_action_path`; for SGD the gradient-noise covariance C.
    n_points : int
        Points per minimum action path.
    jacobian : callable, optional
        db/dx as (n, d, d).
    **mam_options
        Passed to :func:`~memdyn.ldp.min_action_path` (``tol``, ``max_iter``).

    Returns
    -------
    TransitionCosts
        ``costs`` (m, m) array B, ``minima`` and ``saddles`` (refined), ``basins``: for each saddle
        the pair (i, j) of components it joins, and ``paths``: {(i, saddle index):
        :class:`~memdyn.ldp.MinActionPath`}.
    """
    from .field import as_field
    from .mam import min_action_path

    M = np.atleast_2d(np.asarray(minima, dtype=np.float64))
    S = np.atleast_2d(np.asarray(saddles, dtype=np.float64))
    if M.shape[0] < 2:
        raise ValueError(f"minima must hold at least 2 points, got shape {M.shape}")
    d = M.shape[1]
    if S.size == 0 or S.shape[1] != d:
        raise ValueError(f"saddles must be an array of shape (k >= 1, {d}), got shape {S.shape}")
    F = as_field(drift, d, diffusion, jacobian)
    M = np.array([F.stable_point(m, f"minima[{i}]") for i, m in enumerate(M)])
    S = np.array([_saddle(F, s, f"saddles[{k}]") for k, s in enumerate(S)])
    scale = max(1.0, float(np.abs(np.concatenate([M, S])).max()))
    B = np.full((len(M), len(M)), np.inf)
    np.fill_diagonal(B, 0.0)
    basins, paths = [], {}
    for k, s in enumerate(S):
        J = F.jacobian(s)[0]
        w, v = np.linalg.eig(J)
        u = np.real(v[:, int(np.argmax(w.real))])
        ends = [_fall(F, s + sign * 1e-4 * scale * u / np.linalg.norm(u), M, f"saddles[{k}]") for sign in (1, -1)]
        if ends[0] == ends[1]:
            raise ValueError(f"saddles[{k}] {s.tolist()}: both branches of its unstable manifold fall into "
                             f"minima[{ends[0]}]; it does not separate two of the given minima")
        i, j = ends
        basins.append((i, j))
        for src, dst in ((i, j), (j, i)):
            res = min_action_path(F, M[src], s, n_points=n_points, **mam_options)
            paths[(src, k)] = res
            B[src, dst] = min(B[src, dst], res.action)
    return TransitionCosts(B, M, S, basins, paths)


def _saddle(F, x0, name: str) -> np.ndarray:
    x = F.point(x0, name)
    for _ in range(50):
        r = F.b(x[None])[0]
        if np.linalg.norm(r) < 1e-12 * max(1.0, float(np.abs(x).max())):
            break
        x = x - np.linalg.solve(F.jacobian(x)[0], r)
    if np.linalg.norm(F.b(x[None])[0]) > 1e-6 or np.linalg.norm(x - np.asarray(x0, dtype=np.float64)) > 0.05 * max(
            1.0, float(np.abs(x).max())):
        raise ValueError(f"{name} {np.asarray(x0).tolist()} is not near a fixed point of the drift")
    n_up = int(np.sum(np.linalg.eigvals(F.jacobian(x)[0]).real > 0))
    if n_up != 1:
        raise ValueError(f"{name} {x.tolist()} is not an index-1 saddle: its Jacobian has {n_up} eigenvalues with "
                         "positive real part (need exactly 1)")
    return x


def _fall(F, x0: np.ndarray, M: np.ndarray, name: str) -> int:
    """Index of the minimum that the noiseless flow from x0 reaches."""
    from scipy.integrate import solve_ivp

    x, T = x0, 1.0
    tol = 1e-3 * max(1.0, float(np.abs(M).max()))
    for _ in range(14):
        sol = solve_ivp(lambda t, z: F.b(z[None])[0], (0.0, T), x, rtol=1e-8, atol=1e-10)
        x = sol.y[:, -1]
        dist = np.linalg.norm(M - x, axis=1)
        if dist.min() < tol:
            return int(np.argmin(dist))
        T *= 2
    raise ValueError(f"the flow from {name} reaches none of the given minima (ends at {x.tolist()})")
