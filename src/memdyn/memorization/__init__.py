"""The memorization model: a generative model under constant-step SGD whose outputs sit on
training points for long stretches, then move on.

* :class:`MemorizingLandscape`: F0(x; c) = -log of a density that is part generalizing (a
  Gaussian fit of the data), part memorizing (the training points smoothed by a bandwidth h).
* :func:`probe_states`, :func:`nearest_two`: memorization detection (d1/d2 and core sets), the
  same code for simulated chains and for samples of a real model.
"""

from .landscape import MemorizingLandscape
from .probes import ProbeStates, nearest_two, probe_states

__all__ = ["MemorizingLandscape", "ProbeStates", "nearest_two", "probe_states"]
