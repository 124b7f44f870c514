"""The experiment catalogue: one module per experiment id, registered here."""

from .base import ConfigError, Context, Experiment, Outcome
from .collapse import Collapse
from .degeneration import Degeneration
from .diffusion_calibration import DiffusionCalibration
from .double_descent import DoubleDescent
from .exit_times import ExitTimes
from .gibbs import Gibbs
from .memorization import Memorization
from .noise_geometry import NoiseGeometry
from .noise_mitigation import NoiseMitigation
from .quasipotential import Quasipotential
from .refit import Refit
from .three_wells import ThreeWells
from .timescales import Timescales

#: every registered experiment, in the order of the default suite
EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in (Timescales(), Gibbs(), NoiseGeometry(), ThreeWells(), ExitTimes(),
                                                  Quasipotential(),
                                                  Collapse(), Degeneration(), Refit(), Memorization(),
                                                  NoiseMitigation(), DoubleDescent(), DiffusionCalibration())}

__all__ = ["EXPERIMENTS", "ConfigError", "Context", "Experiment", "Outcome"]
