"""Many small denoisers trained at once: independent runs at their own learning rates and batch
sizes, stepped together as one vectorised computation (``torch.func.vmap``) so that the replicated
grids a referee asks for fit on a CPU.

Member m is an ordinary denoiser (built by ``build()``, its weights from ``weights_seeds[m]``)
trained on its own items ``data[m]`` with the DDPM loss, constant learning rate ``lrs[m]`` and
batch size ``batch_sizes[m]``, its batches, time steps and noise drawn from its own generator
(seeded by ``batch_seeds[m]``): what it does depends on its own settings and seeds only, never on
which other members share the ensemble. A member's step is exactly the step :func:`memdyn.diffusion.train`
takes: the gradient of the mean loss over its batch, then

* ``'sgd'``: theta <- theta - lr g (plain constant-step SGD: no momentum, no weight decay; the
  gradient noise has covariance Sigma / B, so lr / B is the temperature);
* ``'adam'``: Adam with beta = (0.9, 0.999), eps = 1e-8 and bias correction (torch's defaults).

Batch sizes may differ between members: every member draws ``max(batch_sizes)`` items and weights
the first ``batch_sizes[m]`` of them by 1 / batch_sizes[m], the rest by 0.

A member with an EMA decay d > 0 (``ema``) is sampled from the bias-corrected exponential moving
average of its weights over its own iterates, e_k = sum_(j=1..k) d^(k-j) theta_j / sum_(j=1..k) d^(k-j)
(as :func:`memdyn.diffusion.train` keeps it: nothing of the weights it started from), the rest from
their weights. Every ``every`` steps all members' probes are sampled by DDIM at once and handed to one
:class:`memdyn.monitor.MemorizationMonitor` per member (:meth:`~memdyn.monitor.MemorizationMonitor.record`),
so their histories, core sets and episodes are the monitor's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from .schedule import NoiseSchedule, ddim_sample, probe_noise
from .train import ema_keep

__all__ = ["EnsembleResult", "StackedMLP", "train_ensemble"]


@dataclass
class EnsembleResult:
    """What :func:`train_ensemble` leaves behind.

    Attributes
    ----------
    monitors : list of MemorizationMonitor
        One per member, with its checkpoints (``states()``, ``f_mem()``, ``history()``).
    losses : ndarray (members, steps)
        Each member's training loss per step.
    model : StackedMLP
        The members' final weights (``model.member(m)`` is member m as a ResidualMLP).
    """

    monitors: list
    losses: np.ndarray
    model: torch.nn.Module


def _per_member(name: str, value, M: int, kind) -> list:
    vals = list(value) if isinstance(value, (list, tuple, range, np.ndarray)) else [value] * M
    if len(vals) != M:
        raise ValueError(f"{name} must be one value or one per member ({M}), got {len(vals)}")
    return [kind(v) for v in vals]


class StackedMLP(torch.nn.Module):
    """M :class:`~memdyn.diffusion.ResidualMLP` denoisers as one module: every linear layer's weights
    are stacked on a leading member axis and applied with one batched matrix product, so M small
    networks cost about as much Python as one.

    ``forward(x, t)`` takes x (M, batch, ...) and t (M, batch) and returns member m's output on
    x[m], t[m] (equal to ``models[m](x[m], t[m])`` up to rounding); :meth:`member` returns member m
    as an ordinary ResidualMLP.
    """

    def __init__(self, models: Sequence[torch.nn.Module]):
        super().__init__()
        from .models import ResidualMLP

        if not models or not all(isinstance(m, ResidualMLP) for m in models):
            raise TypeError("StackedMLP stacks ResidualMLP denoisers (at least one)")
        first = models[0]
        self.prediction, self.steps, self.shape = first.prediction, first.steps, first.shape
        self.depth = len(first.blocks)
        self.template = first
        names = [k for k, _ in first.named_parameters()]
        for m in models[1:]:
            if [k for k, _ in m.named_parameters()] != names or any(
                    a.shape != b.shape for a, b in zip(first.parameters(), m.parameters())):
                raise ValueError("all stacked models must share one architecture")
        self.names = names
        self._index = {k: i for i, k in enumerate(names)}
        self.weights = torch.nn.ParameterList(
            torch.nn.Parameter(torch.stack([dict(m.named_parameters())[k].detach() for m in models]).clone())
            for k in names)

    @property
    def members(self) -> int:
        return int(self.weights[0].shape[0])

    def _p(self, name: str) -> torch.Tensor:
        return self._params[self._index[name]]

    def _linear(self, prefix: str, h: torch.Tensor) -> torch.Tensor:
        # h (M, batch, in); weight (M, out, in); bias (M, out)
        return torch.baddbmm(self._p(prefix + ".bias")[:, None, :], h, self._p(prefix + ".weight").transpose(1, 2))

    def _norm(self, prefix: str, h: torch.Tensor) -> torch.Tensor:
        h = torch.nn.functional.layer_norm(h, h.shape[-1:], eps=1e-5)
        return h * self._p(prefix + ".weight")[:, None, :] + self._p(prefix + ".bias")[:, None, :]

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        from .models import time_embedding

        self._params = list(self.weights)  # one lookup per call, not per layer
        M, b = x.shape[0], x.shape[1]
        silu = torch.nn.functional.silu
        e = time_embedding(t.reshape(-1), 64, self.steps).reshape(M, b, 64)
        e = self._linear("temb.2", silu(self._linear("temb.0", e)))
        h = self._linear("inp", x.reshape(M, b, -1))
        for i in range(self.depth):
            pre = f"blocks.{i}."
            u = self._norm(pre + "norm", h) + self._linear(pre + "t", e)
            h = h + self._linear(pre + "mlp.2", silu(self._linear(pre + "mlp.0", u)))
        return self._linear("out.1", self._norm("out.0", h)).reshape(x.shape)

    @torch.no_grad()
    def sample(self, noise: torch.Tensor, schedule: NoiseSchedule, steps: int) -> torch.Tensor:
        """DDIM samples of every member at once: ``noise`` (M, P, ...) -> (M, P, ...), member m's
        samples from noise[m]."""
        if noise.shape[0] != self.members:
            raise ValueError(f"noise must be (members = {self.members}, probes, ...), got {tuple(noise.shape)}")
        flat = noise.reshape(-1, *noise.shape[2:])
        return ddim_sample(_Flat(self), flat, schedule, steps=steps, batch=flat.shape[0]).reshape(noise.shape)

    def member(self, m: int) -> torch.nn.Module:
        """Member m as a ResidualMLP (a copy of its current weights)."""
        import copy

        out = copy.deepcopy(self.template)
        self._params = list(self.weights)
        with torch.no_grad():
            for k, p in out.named_parameters():
                p.copy_(self._p(k)[m])
        return out


class _Flat:
    """``model(x, t)`` over all members at once with x (members * probes, ...), member-major."""

    def __init__(self, stacked: StackedMLP):
        self.stacked, self.prediction = stacked, stacked.prediction

    def __call__(self, x, t):
        M = self.stacked.members
        return self.stacked(x.reshape(M, -1, *x.shape[1:]), t.reshape(M, -1)).reshape(x.shape)


def train_ensemble(build: Callable[[], torch.nn.Module], data: torch.Tensor, *, steps: int, lrs, batch_sizes,
                   weights_seeds: Sequence[int] | None, batch_seeds: Sequence[int], optimizer: str = "sgd",
                   schedule: NoiseSchedule | None = None, every: int = 1, start: int = 0, probes: int = 32,
                   probe_seeds: Sequence[int] | None = None, sample_steps: int = 10, progress: bool = True,
                   start_from: Sequence[torch.nn.Module] | None = None, ema=0.0) -> EnsembleResult:
    """Train M independent denoisers together and monitor their memorization.

    Parameters
    ----------
    build : callable
        ``build()`` returns one denoiser (an ``nn.Module`` with attribute ``prediction``); all
        members share its architecture.
    data : Tensor (M, n, ...)
        Each member's n training items in [-1, 1].
    steps : int
        Optimizer steps per member.
    lrs : float or sequence of M floats
        Constant learning rates (> 0).
    batch_sizes : int or sequence of M ints
        Batch sizes (>= 1).
    weights_seeds, batch_seeds : sequence of M ints
        Seeds of each member's initial weights (unused with ``start_from``) and of its batches, time
        steps and noise.
    optimizer : {'sgd', 'adam'}
    schedule : NoiseSchedule, optional
    every : int
        Steps between checkpoints.
    start : int
        First step sampled (rounded up to a multiple of ``every``); the probes are sampled at the
        steps k >= start that are multiples of ``every``, so a burn-in costs no sampling.
    probes : int
        Probes per member; member m's noise is :func:`probe_noise` of ``probe_seeds[m]``
        (default: its weights seed).
    sample_steps : int
        DDIM steps per sample.
    progress : bool
        Show a progress bar with the members' mean f_mem.
    start_from : sequence of M ResidualMLP, optional
        Start member m from a copy of this model's weights (e.g. a pre-trained state, with a fresh
        optimizer state) instead of fresh weights.
    ema : float or sequence of M floats
        EMA decay d in [0, 1) per member; d > 0: the member's probes are sampled from its
        bias-corrected EMA (it averages over about 1 / (1 - d) steps: count episodes only after
        several of those), d = 0: from its weights. ``model`` in the result holds the weights.

    Raises
    ------
    FloatingPointError
        When a member's loss is not finite, naming the member, its settings and the step.
    """
    from ..monitor import MemorizationMonitor

    schedule = schedule or NoiseSchedule()
    if data.ndim < 3 or data.shape[0] < 1 or data.shape[1] < 2:
        raise ValueError(f"data must be (members, n >= 2, ...), got {tuple(data.shape)}")
    M, n = int(data.shape[0]), int(data.shape[1])
    lr = _per_member("lrs", lrs, M, float)
    bs = _per_member("batch_sizes", batch_sizes, M, int)
    if start_from is not None:
        models = list(start_from)
        if len(models) != M:
            raise ValueError(f"start_from must hold one model per member ({M}), got {len(models)}")
    elif weights_seeds is None:
        raise ValueError("weights_seeds is needed unless start_from gives the initial models")
    ws = _per_member("weights_seeds", range(M) if weights_seeds is None else weights_seeds, M, int)
    bseed = _per_member("batch_seeds", batch_seeds, M, int)
    ps = _per_member("probe_seeds", ws if probe_seeds is None else probe_seeds, M, int)
    decay = _per_member("ema", ema, M, float)
    if not all(0 <= d < 1 for d in decay):
        raise ValueError(f"ema must be in [0, 1) per member, got {decay}")
    if not all(math.isfinite(v) and v > 0 for v in lr):
        raise ValueError(f"lrs must be finite and > 0, got {lr}")
    if min(bs) < 1:
        raise ValueError(f"batch_sizes must be >= 1, got {bs}")
    if optimizer not in ("sgd", "adam"):
        raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    if not isinstance(every, int) or every < 1:
        raise ValueError(f"every must be an integer >= 1, got {every!r}")
    if not isinstance(start, int) or start < 0:
        raise ValueError(f"start must be an integer >= 0, got {start!r}")
    from .models import seeded

    net = StackedMLP(models if start_from is not None else [seeded(build, s) for s in ws])
    averaged = any(d > 0 for d in decay)
    # the EMA members' sampled copy (others: their weights, copied in at each checkpoint)
    shadow = StackedMLP([net.member(m) for m in range(M)]).requires_grad_(False) if averaged else net
    shape = tuple(data.shape[2:])
    B = max(bs)
    weight = torch.zeros(M, B)
    for m, b in enumerate(bs):
        weight[m, :b] = 1.0 / b
    lr_t = torch.tensor(lr, dtype=torch.float32)
    gens = [torch.Generator().manual_seed(s) for s in bseed]
    T = schedule.steps
    flat = _Flat(net)
    noise = torch.cat([probe_noise(probes, shape, s) for s in ps])
    mons = [MemorizationMonitor(data[m], lambda model, z: z, probes=noise[m * probes:(m + 1) * probes], every=every)
            for m in range(M)]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc=f"train {M} models", unit="step", dynamic_ncols=True)

    def checkpoint(step):
        with torch.no_grad():
            out = shadow.sample(noise.reshape(M, probes, *shape), schedule, sample_steps)
        bad = ~torch.isfinite(out.reshape(M, -1)).all(1)
        if bad.any():
            m = int(torch.nonzero(bad)[0])
            raise FloatingPointError(f"training diverged by step {step}: member {m} (lr={lr[m]:g}, batch size {bs[m]}) "
                                     "samples non-finite values (lower its lr)")
        for m in range(M):
            mons[m].record(step, out[m])

    params = list(net.weights)
    if optimizer == "adam":
        mom = [torch.zeros_like(p) for p in params]
        sq = [torch.zeros_like(p) for p in params]
    lr_b = [lr_t.reshape((M,) + (1,) * (p.ndim - 1)) for p in params]
    has_ema = [torch.tensor([d > 0 for d in decay]).reshape((M,) + (1,) * (p.ndim - 1)) for p in params]
    losses = np.empty((M, steps))
    if start <= 0:
        checkpoint(0)
    rows = torch.arange(M)[:, None]
    for k in range(1, steps + 1):
        idx = torch.stack([torch.randint(0, n, (B,), generator=g) for g in gens])
        t = torch.stack([torch.randint(0, T, (B,), generator=g) for g in gens])
        eps = torch.stack([torch.randn((B,) + shape, generator=g) for g in gens])
        x0 = data[rows, idx].reshape(M * B, *shape)  # member-major, as the flat view expects
        t, eps = t.reshape(-1), eps.reshape(M * B, *shape)
        a, s = schedule.coefficients(t, x0)
        out = flat(a * x0 + s * eps, t)
        per = (out - schedule.target(net.prediction, x0, eps, t)).pow(2).reshape(M, B, -1).mean(2)
        member_loss = (per * weight).sum(1)  # (M,): each member's mean loss over its own batch
        for p in params:
            p.grad = None
        member_loss.sum().backward()  # members share no weights: each gets its own gradient
        losses[:, k - 1] = member_loss.detach().numpy()
        if not np.all(np.isfinite(losses[:, k - 1])):
            m = int(np.flatnonzero(~np.isfinite(losses[:, k - 1]))[0])
            raise FloatingPointError(f"training diverged at step {k}: member {m} (lr={lr[m]:g}, batch size "
                                     f"{bs[m]}) has loss {losses[m, k - 1]} (lower its lr)")
        with torch.no_grad():
            if optimizer == "sgd":
                torch._foreach_sub_(params, torch._foreach_mul([p.grad for p in params], lr_b))
            else:
                grads = [p.grad for p in params]
                torch._foreach_lerp_(mom, grads, 0.1)
                torch._foreach_mul_(sq, 0.999)
                torch._foreach_addcmul_(sq, grads, grads, value=0.001)
                denom = torch._foreach_add(torch._foreach_sqrt(torch._foreach_div(sq, 1 - 0.999**k)), 1e-8)
                torch._foreach_sub_(params, torch._foreach_div(torch._foreach_mul(mom, [v / (1 - 0.9**k) for v in lr_b]),
                                                               denom))
        if averaged:
            with torch.no_grad():
                w = torch.tensor([1.0 - ema_keep(d, k) for d in decay])
                torch._foreach_lerp_(list(shadow.weights), params,
                                     [w.reshape((M,) + (1,) * (p.ndim - 1)) for p in params])
        if k % every == 0 and k >= start:
            if averaged:
                with torch.no_grad():
                    for e, p, h in zip(shadow.weights, params, has_ema):
                        e.copy_(torch.where(h, e, p))
            checkpoint(k)
        if bar is not None:
            bar.set_postfix({"f_mem": f"{np.mean([mo.last for mo in mons]):.2f}"}, refresh=False)
            bar.update(1)
    if bar is not None:
        bar.close()
    return EnsembleResult(mons, losses, net)
