"""memdyn: memorization as two-time-scale, metastable dynamics of constant-step SGD.

The public API is re-exported here; everything else is private.
"""

from .collapse import exact_fit, gaussian_refit
from .dynamics import (
    BLOCK, DivergenceError, Group, Simulation, fast_equilibrium, fast_ode, simulate, simulate_groups, slow_ode,
)
from . import diffusion, episodes, influence, ldp, memorization, metrics, reference, stats
from .monitor import MemorizationMonitor
from .episodes import Episodes, StreamingDetector, core_sets
from .landscapes import (
    BentDoubleWell,
    BilinearCoupling,
    CriticalPoint,
    DoubleWell,
    DoubleWellND,
    Landscape,
    LeastSquares,
    Modulated,
    MultiWell,
    Quadratic,
    S1,
    TiltedWell,
    SlowlyDriven,
    DrivenTiltedWell,
)
from .kinetics import ImpliedTimescales, ReactionCoordinateModel, implied_timescales
from .markov import MarkovChain, gth_stationary, sparse_lu
from .noise import (Gaussian, Minibatch, Noise, ProfileGaussian, StateDependentGaussian, StudentT, TanhStep, s1_noise,
                    tanh_step)
from .observers import ExitTime, FirstPassage, Moments, Occupation, Observer, Passages, Trace, intervals

__version__ = "0.1.0"

__all__ = [
    "BLOCK", "DivergenceError", "Group", "Simulation", "simulate", "simulate_groups", "fast_ode", "fast_equilibrium",
    "slow_ode",
    "Landscape", "CriticalPoint", "Quadratic", "DoubleWell", "DoubleWellND", "BentDoubleWell", "S1", "BilinearCoupling",
    "TiltedWell", "Modulated", "SlowlyDriven", "DrivenTiltedWell", "LeastSquares", "MultiWell",
    "Noise", "Gaussian", "StateDependentGaussian", "ProfileGaussian", "StudentT", "Minibatch", "s1_noise", "TanhStep",
    "tanh_step",
    "episodes", "ldp", "memorization", "reference", "stats", "Episodes", "StreamingDetector", "core_sets",
    "diffusion", "influence", "metrics", "MemorizationMonitor",
    "MarkovChain", "gth_stationary", "sparse_lu", "exact_fit", "gaussian_refit",
    "ReactionCoordinateModel", "ImpliedTimescales", "implied_timescales",
    "Observer", "ExitTime", "Trace", "Moments", "Occupation", "FirstPassage", "Passages", "intervals",
    "__version__",
]
