"""The experiment catalogue: one module per experiment id, registered here."""

from .base import ConfigError, Context, Experiment, Outcome
from .collapse import Collapse
from .degeneration import Degeneration
from .diffusion_calibration import DiffusionCalibration
from .diffusion_episodes import DiffusionEpisodes
from .diffusion_tau_mem import DiffusionTauMem
from .diffusion_temperature import DiffusionTemperature
from .double_descent import DoubleDescent
from .exit_times import ExitTimes
from .gibbs import Gibbs
from .hysteresis import Hysteresis
from .memorization import Memorization
from .noise_geometry import NoiseGeometry
from .noise_mitigation import NoiseMitigation
from .quasipotential import Quasipotential
from .refit import Refit
from .self_consuming import SelfConsuming
from .three_wells import ThreeWells
from .timescales import Timescales

#: every registered experiment, in the order of the default suite
EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in (Timescales(), Gibbs(), NoiseGeometry(), ThreeWells(), ExitTimes(),
                                                  Quasipotential(),
                                                  Collapse(), Degeneration(), Refit(), Memorization(), Hysteresis(),
                                                  NoiseMitigation(), DoubleDescent(), DiffusionCalibration(),
                                                  DiffusionEpisodes(), DiffusionTemperature(), DiffusionTauMem(), SelfConsuming())}

#: what `memdyn run` and `memdyn calibrate` run when no experiment is named
DEFAULT_SUITE: list[str] = [n for n, e in EXPERIMENTS.items() if e.in_default_suite]

__all__ = ["DEFAULT_SUITE", "EXPERIMENTS", "ConfigError", "Context", "Experiment", "Outcome"]
