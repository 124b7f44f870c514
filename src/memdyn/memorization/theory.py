"""Predictions of the memorization model computed from its landscape, never from a simulation.

For F0(x; c) under isotropic Gaussian gradient noise sigma^2 I:

1. the critical points: a memorizing minimum near every training point and the generalizing one
   near the data mean (refined by Newton's method and checked), and the saddles between them
   (minimum energy paths by the string method, :func:`memdyn.ldp.minimum_energy_path`);
2. the transition costs B_ij = V(K_i -> K_j) by minimum action paths
   (:func:`memdyn.ldp.transition_costs`, the quasi-potential solver) and the Freidlin-Wentzell
   energies E_i (:func:`memdyn.ldp.fw_energies`);
3. hence the barrier of a memorizing episode, V_i = min_j B_ij: the mean length of an episode on
   training point i grows like exp(V_i / a) (the Arrhenius slope of ln(a * length) in 1/a), and
   the long-run occupation a ln mu_a(i) -> -E_i.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..ldp import FWEnergies, TransitionCosts, fw_energies, transition_costs
from ..ldp.field import as_field
from ..ldp import minimum_energy_path
from .landscape import MemorizingLandscape

__all__ = ["MemorizationTheory", "StationaryLaw", "energy_gap", "gap_sign_change", "memorization_theory",
           "stationary_law"]


@dataclass(frozen=True)
class MemorizationTheory:
    """Result of :func:`memorization_theory`. Component n (the last) is the generalizing minimum.

    Attributes
    ----------
    minima : ndarray (n + 1, D)
        Memorizing minima (one per training point, in order), then the generalizing minimum.
    saddles : ndarray (k, D)
    costs : TransitionCosts
        B[i, j] by minimum action paths.
    energies : FWEnergies
    exit_barrier : ndarray (n + 1,)
        V_i = min_j B[i, j]: the Arrhenius slope of the mean stay in component i.
    gradient_barrier : ndarray (n + 1,)
        2 (F(saddle) - F(min)) / sigma^2 over the same saddles: the closed form of a gradient
        system with isotropic noise, against which the solver's V_i is checked.
    curvature : ndarray (n + 1,)
        Largest Hessian eigenvalue at each minimum (a lambda < 2 for stability; a lambda << 1 for
        the small-a predictions).
    """

    minima: np.ndarray
    saddles: np.ndarray
    costs: TransitionCosts
    energies: FWEnergies
    exit_barrier: np.ndarray
    gradient_barrier: np.ndarray
    curvature: np.ndarray


def _dedupe(points: list[np.ndarray], tol: float) -> np.ndarray:
    out: list[np.ndarray] = []
    for p in points:
        if all(np.linalg.norm(p - q) > tol for q in out):
            out.append(p)
    return np.array(out)


def _field(F: MemorizingLandscape, sigma: float):
    def drift(x):
        if isinstance(x, torch.Tensor):
            return -F.grad(x)
        return -F.grad(torch.as_tensor(np.asarray(x, dtype=np.float64))).numpy()

    return as_field(drift, F.dim, sigma**2 * np.eye(F.dim))


def _minima(F: MemorizingLandscape, field) -> list[np.ndarray]:
    """The memorizing minima (one per training point, in order), then the generalizing one."""
    minima = []
    for i, s in enumerate(F.train):
        try:
            m = field.stable_point(s, f"the memorizing minimum of training point {i}")
        except ValueError:
            m = None
        if m is None or np.linalg.norm(m - s) > F.h / 4:
            raise ValueError(f"training point {i} has no memorizing minimum of its own (bandwidth {F.h:g} is too large "
                             "for the spacing of the training points, or c too small)")
        minima.append(m)
    try:
        gen = field.stable_point(F.mean, "the generalizing minimum")
    except ValueError:
        raise ValueError(f"no generalizing minimum near the data mean at c={F.c:g}: the memorizing components "
                         "swamp it (lower c)") from None
    if min(np.linalg.norm(gen - m) for m in minima) < F.h:
        raise ValueError("the generalizing minimum sits on a training point: no free state")
    return minima + [gen]


def energy_gap(landscape: MemorizingLandscape, sigma: float) -> float:
    """FW energy gap between the lowest memorizing state and the generalizing one,
    E_mem - E_free (negative: memorizing dominates the long run).

    For a gradient system under isotropic noise sigma^2 I the W-graph energies are
    E_i = 2 (F(m_i) - min_j F(m_j)) / sigma^2 (the minimal in-trees telescope through the saddles),
    so the gap needs only the minima; :func:`memorization_theory` computes the same energies from
    minimum action paths (the two agree within gMAM's accuracy).
    """
    M = _minima(landscape, _field(landscape, sigma))
    f = landscape.value(torch.as_tensor(np.array(M))).numpy()
    return float(2 * (f[:-1].min() - f[-1]) / sigma**2)


def gap_sign_change(landscape: MemorizingLandscape, sigma: float, c_lo: float, c_hi: float) -> float:
    """c* in (c_lo, c_hi) where the energy gap E_mem - E_free changes sign (memorization onset).

    Raises
    ------
    ValueError
        When the gap has the same sign at both ends (no onset in the range) or the landscape has
        no memorizing or no generalizing minimum at an end.
    """
    from scipy.optimize import brentq

    def gap(c):
        return energy_gap(landscape.at(c), sigma)

    g_lo, g_hi = gap(c_lo), gap(c_hi)
    if g_lo * g_hi > 0:
        raise ValueError(f"the energy gap E_mem - E_free does not change sign between c={c_lo:g} ({g_lo:+.3g}) and "
                         f"c={c_hi:g} ({g_hi:+.3g}): no memorization onset in that range")
    return float(brentq(gap, c_lo, c_hi, xtol=1e-10))


def memorization_theory(landscape: MemorizingLandscape, sigma: float, *, neighbours: int = 2,
                        n_points: int = 60) -> MemorizationTheory:
    """Minima, saddles, transition costs, FW energies and episode barriers of the memorization model.

    Parameters
    ----------
    landscape : MemorizingLandscape
    sigma : float
        Isotropic gradient-noise scale (> 0); the costs are quasi-potentials of the drift -grad F0
        with diffusion sigma^2 I.
    neighbours : int
        Saddles are searched between each training point and the generalizing minimum, and between
        each training point and its ``neighbours`` nearest training points (strings that pass
        through a third minimum find a saddle already on the list).
    n_points : int
        Points per minimum action path.

    Raises
    ------
    ValueError
        When a training point has no minimum of its own within h / 4 (its well merged with a
        neighbour's: the bandwidth is too large for the spacing), or when there is no generalizing
        minimum near the data mean (c too close to 1).
    """
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    F = landscape
    field = _field(F, sigma)
    minima = _minima(F, field)
    gen = minima[-1]
    M = np.array(minima)
    n = F.n
    cand = [minimum_energy_path(F, M[i], gen).saddle for i in range(n)]
    d = np.linalg.norm(F.train[:, None] - F.train[None], axis=2)
    np.fill_diagonal(d, np.inf)
    for i in range(n):
        for j in np.argsort(d[i])[:min(neighbours, n - 1)]:
            if j > i or i not in np.argsort(d[j])[:min(neighbours, n - 1)]:
                cand.append(minimum_energy_path(F, M[i], M[j]).saddle)
    saddles = _dedupe(cand, 1e-6 * max(1.0, float(np.abs(M).max())))
    costs = transition_costs(field, M, saddles, n_points=n_points)
    exit_barrier = np.where(np.eye(n + 1, dtype=bool), np.inf, costs.costs).min(axis=1)
    fv = F.value(torch.as_tensor(np.concatenate([costs.minima, costs.saddles]))).numpy()
    f_min, f_sad = fv[:n + 1], fv[n + 1:]
    grad_barrier = np.full(n + 1, np.inf)
    for k, (i, j) in enumerate(costs.basins):
        for src in (i, j):
            grad_barrier[src] = min(grad_barrier[src], 2 * (f_sad[k] - f_min[src]) / sigma**2)
    curvature = np.array([np.linalg.eigvals(-J).real.max() for J in field.jacobian(costs.minima)])
    return MemorizationTheory(costs.minima, costs.saddles, costs, fw_energies(costs.costs), exit_barrier, grad_barrier,
                              curvature)


# -- the long-run law ------------------------------------------------------------------------------

@dataclass(frozen=True)
class StationaryLaw:
    """The long-run law of the memorization chain on a mesh, from the landscape alone.

    For isotropic noise sigma^2 I at step a, the SDE limit's stationary law is the Gibbs law
    exp(-beta F0), beta = 2 / (a sigma^2). The discrete chain is hotter; by backward error analysis
    (the modified equation of the Euler scheme) its stationary log-density is, to first order,

        log rho_a = -beta F0 + (beta a / 4) |grad F0|^2 - (a / 2) Laplacian F0 + O((a lambda)^2),

    with lambda the largest curvature (exact for a quadratic: the variance a sigma^2 / (lambda (2 - a
    lambda)) expanded to first order).

    Attributes
    ----------
    x, y : ndarray
        Cell centres of the mesh.
    log_gibbs, log_first_order : ndarray (nx, ny)
        Unnormalised log-densities of the SDE limit and of the first-order discrete chain.
    spacing : float
    """

    x: np.ndarray
    y: np.ndarray
    log_gibbs: np.ndarray
    log_first_order: np.ndarray
    spacing: float

    def mass(self, indicator, first_order: bool = True) -> float:
        """Probability of the set ``indicator(points) -> bool`` (cell-centre rule)."""
        lp = self.log_first_order if first_order else self.log_gibbs
        w = np.exp(lp - lp.max())
        X, Y = np.meshgrid(self.x, self.y, indexing="ij")
        inside = np.asarray(indicator(np.stack([X.ravel(), Y.ravel()], 1)), dtype=bool).reshape(X.shape)
        return float(w[inside].sum() / w.sum())

    def sample(self, n: int, seed: int, first_order: bool = True) -> np.ndarray:
        """n independent draws (uniform within the drawn cell)."""
        lp = self.log_first_order if first_order else self.log_gibbs
        w = np.exp(lp - lp.max()).ravel()
        rng = np.random.default_rng(seed)
        idx = rng.choice(w.size, size=n, p=w / w.sum())
        i, j = np.unravel_index(idx, lp.shape)
        jitter = (rng.random((n, 2)) - 0.5) * self.spacing
        return np.stack([self.x[i], self.y[j]], 1) + jitter


def stationary_law(landscape, sigma: float, step: float, box, spacing: float) -> StationaryLaw:
    """:class:`StationaryLaw` of a 2-D landscape under isotropic noise on the cells of ``box``.

    Parameters
    ----------
    box : ((x_lo, x_hi), (y_lo, y_hi))
        Must hold the law (the chain practically never leaves it).
    spacing : float
        Cell width (well below the narrowest well's width).
    """
    if not (sigma > 0 and step > 0 and spacing > 0):
        raise ValueError(f"sigma, step and spacing must be > 0, got {sigma}, {step}, {spacing}")
    if landscape.dim != 2:
        raise ValueError(f"stationary_law needs a 2-D landscape, got dim={landscape.dim}")
    (x0, x1), (y0, y1) = box
    x = np.arange(x0 + spacing / 2, x1, spacing)
    y = np.arange(y0 + spacing / 2, y1, spacing)
    X, Y = np.meshgrid(x, y, indexing="ij")
    P = torch.as_tensor(np.stack([X.ravel(), Y.ravel()], 1))
    F = landscape.value(P).numpy()
    g = landscape.grad(P).numpy()
    e = 1e-4 * spacing
    lap = sum((landscape.grad(P + e * torch.eye(2, dtype=P.dtype)[k]).numpy()[:, k]
               - landscape.grad(P - e * torch.eye(2, dtype=P.dtype)[k]).numpy()[:, k]) / (2 * e) for k in range(2))
    beta = 2.0 / (step * sigma**2)
    log_g = -beta * F
    log_1 = log_g + beta * step / 4 * np.sum(g * g, axis=1) - step / 2 * lap
    return StationaryLaw(x, y, log_g.reshape(X.shape), log_1.reshape(X.shape), float(spacing))
