"""The memorization model: a generative model under constant-step SGD whose outputs sit on
training points for long stretches, then move on.

* :class:`MemorizingLandscape`: F0(x; c) = -log of a density that is part generalizing (a
  Gaussian fit of the data), part memorizing (the training points smoothed by a bandwidth h).
"""

from .landscape import MemorizingLandscape

__all__ = ["MemorizingLandscape"]
