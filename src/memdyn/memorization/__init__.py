"""The memorization model: a generative model under constant-step SGD whose outputs sit on
training points for long stretches, then move on.

* :class:`MemorizingLandscape`: F0(x; c) = -log of a density that is part generalizing (a
  Gaussian fit of the data), part memorizing (the training points smoothed by a bandwidth h).
* :class:`GeneratedData`: gradient samples from fresh data with probability alpha, from the
  model's own output otherwise.
* :func:`probe_states`, :func:`nearest_two`: memorization detection (d1/d2 and core sets), the
  same code for simulated chains and for samples of a real model; :class:`ProbeObserver` runs it
  inside a simulation and returns episodes and a raster.
* :func:`memorization_theory`: minima, saddles, transition costs, FW energies and episode barriers
  computed from the landscape.
"""

from .generated import GeneratedData
from .landscape import MemorizingLandscape, ModulatedMemorizingLandscape
from .observe import ProbeObserver, ProbeRecord
from .probes import ProbeStates, nearest_two, probe_states
from .theory import MemorizationTheory, memorization_theory

__all__ = ["GeneratedData", "MemorizationTheory", "MemorizingLandscape", "ModulatedMemorizingLandscape", "ProbeObserver", "ProbeRecord", "ProbeStates",
           "memorization_theory", "nearest_two", "probe_states"]
