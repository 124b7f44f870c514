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
  computed from the landscape; :func:`stationary_law` (Gibbs and the discrete chain's first-order
  correction); :func:`energy_gap`, :func:`gap_sign_change` (the onset c*).
* :class:`ModulatedMemorizingLandscape`: c moved by a slow variable; :func:`time_scale` and
  :func:`survival` for onset and trapping along a sweep.
"""

from .generated import GeneratedData
from .landscape import MemorizingLandscape, ModulatedMemorizingLandscape
from .observe import ProbeObserver, ProbeRecord
from .probes import ProbeStates, nearest_two, probe_states
from .sweeps import TimeScale, survival, time_scale
from .theory import (MemorizationTheory, StationaryLaw, energy_gap, gap_sign_change, memorization_theory,
                     stationary_law)

__all__ = ["GeneratedData", "MemorizationTheory", "MemorizingLandscape", "ModulatedMemorizingLandscape", "ProbeObserver",
           "ProbeRecord", "ProbeStates", "StationaryLaw", "TimeScale", "energy_gap", "gap_sign_change",
           "memorization_theory", "nearest_two", "probe_states", "stationary_law", "survival", "time_scale"]
