"""Glue for the libraries people train diffusion models with: a Lightning callback and a
diffusers sampler, both thin wrappers around :class:`memdyn.monitor.MemorizationMonitor`.

Lightning and diffusers are optional (``pip install 'memdyn[diffusion]'``); a missing one is
named in the error.
"""

from __future__ import annotations

import importlib

# MemorizationCallback is built on first access (module __getattr__), so lightning stays optional
__all__ = ["diffusers_sampler"]


def _need(module: str, extra: str):
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"this needs {module.split('.')[0]}; install it with pip install 'memdyn[{extra}]'") from e


def diffusers_sampler(scheduler, num_inference_steps: int = 50):
    """A sampler ``sampler(model, noise)`` for the monitor, from a diffusers ``UNet2DModel`` and the
    noise scheduler it is trained with.

    Sampling is deterministic DDIM (eta = 0) built from ``scheduler.config`` (so a ``DDPMScheduler``
    works too, with its prediction type, beta schedule and clipping); the user's scheduler object
    is never modified.

    Parameters
    ----------
    scheduler : diffusers scheduler
        The training scheduler (anything with a ``config``).
    num_inference_steps : int
        DDIM steps per sample.
    """
    diffusers = _need("diffusers", "diffusion")
    if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be an integer >= 1, got {num_inference_steps!r}")
    if not hasattr(scheduler, "config"):
        raise TypeError(f"scheduler must be a diffusers scheduler (with a config), got {type(scheduler).__name__}")
    ddim = diffusers.DDIMScheduler.from_config(scheduler.config)

    def sampler(model, noise):
        ddim.set_timesteps(num_inference_steps, device=noise.device)
        x = noise * ddim.init_noise_sigma
        for t in ddim.timesteps:
            out = model(ddim.scale_model_input(x, t), t).sample
            x = ddim.step(out, t, x, eta=0.0).prev_sample
        return x

    return sampler


def _callback_class():
    pl = _need("lightning.pytorch", "diffusion")

    class MemorizationCallback(pl.Callback):
        """Lightning callback that feeds a :class:`~memdyn.monitor.MemorizationMonitor`.

        The monitor samples the LightningModule (its sampler receives the module) at global step
        0, when fitting starts, and after every optimizer step whose ``trainer.global_step`` is a
        multiple of ``monitor.every``; with gradient accumulation a step is sampled once. Only
        global rank 0 samples. The monitor's history is saved in Lightning checkpoints and
        restored on resume.

        Parameters
        ----------
        monitor : MemorizationMonitor
        """

        def __init__(self, monitor):
            super().__init__()
            self.monitor = monitor
            self._last = None

        def _update(self, trainer, pl_module):
            step = int(trainer.global_step)
            if step != self._last and trainer.is_global_zero:
                self.monitor.update(step, pl_module)
            self._last = step

        def on_fit_start(self, trainer, pl_module):
            if trainer.is_global_zero:
                self.monitor.check(pl_module)  # a sampler with the wrong output shape fails before training
            if trainer.global_step == 0:
                self._update(trainer, pl_module)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self._update(trainer, pl_module)

        def state_dict(self):
            return {"monitor": self.monitor.state_dict(), "last": self._last}

        def load_state_dict(self, state_dict):
            self.monitor.load_state_dict(state_dict["monitor"])
            self._last = state_dict["last"]

    # importable (and picklable) as memdyn.diffusion.integrations.MemorizationCallback
    MemorizationCallback.__qualname__ = "MemorizationCallback"
    MemorizationCallback.__module__ = __name__
    return MemorizationCallback


_CLASS = None


def __getattr__(name):
    global _CLASS
    if name == "MemorizationCallback":
        if _CLASS is None:
            _CLASS = _callback_class()
        return _CLASS
    raise AttributeError(name)
