"""Large deviations of constant-step SGD: Freidlin-Wentzell energies, Arrhenius and
Gibbs fits, and quasi-potential solvers.

* :func:`fw_energies`, :func:`predicted_occupation`: energies of critical components from the
  transition costs B_ij = V(K_i -> K_j) (minimum spanning in-trees) and the long-run law they give.
* :func:`transition_costs`: B from a drift and its saddles, by minimum action paths.
* :func:`min_action_path`: geometric minimum action method, any dimension, constant or
  state-dependent diffusion.
* :func:`quasipotential_grid`: the quasi-potential of an attractor on a 2-D mesh by an ordered
  line-integral (Dijkstra-like) sweep.
* :func:`minimum_energy_path`: the saddle between two minima of a gradient system (string method).
* :func:`arrhenius_fit`, :func:`gibbs_fit`: the exit-time and long-run law fits (exact finite-step
  values to check them against are in :mod:`memdyn.reference`).

The quasi-potential is V(x; K) = inf over paths from K to x of 1/2 int |phi' - b(phi)|^2_{D^-1} dt
for dX = b dt + sqrt(eps) D^{1/2} dW; constant-step SGD with gradient-noise covariance C is the
case b = -grad F, D = C, eps = a.
"""

from .energies import FWEnergies, TransitionCosts, fw_energies, predicted_occupation, transition_costs
from .field import Field
from .fits import ArrheniusFit, arrhenius_fit, gibbs_fit
from .mam import GMAM_ACCURACY, MinActionPath, geometric_action, min_action_path

__all__ = ["FWEnergies", "TransitionCosts", "fw_energies", "predicted_occupation", "transition_costs", "ArrheniusFit", "arrhenius_fit", "gibbs_fit",
           "Field", "GMAM_ACCURACY", "MinActionPath", "min_action_path", "geometric_action"]
from .olim import QuasiPotential, characteristic_slope, quasipotential_grid

from .string import EnergyPath, minimum_energy_path

__all__ += ["QuasiPotential", "characteristic_slope", "quasipotential_grid", "EnergyPath", "minimum_energy_path"]
