"""Which parameters of a model matter: per-parameter influence, the split into strongly and
weakly influencing parameters, the empirical eps, and the relaxation times of the two groups.

The theory's stylized loss F(x, y) = F0(x) + eps F1(x, y) has a few strong coordinates x and many
weak ones y. For any loss, the influence of coordinate j is

    I_j = E |F(theta) - F(theta with coordinate j resampled)|,

here with theta_j resampled as theta_j + s Z, Z ~ N(0, 1). Three estimators:

* ``'resample'``: the definition itself, by Monte Carlo (one loss per coordinate and draw; for
  small models);
* ``'gradient'``: first order, I_j ~ s sqrt(2/pi) |dF/dtheta_j| (the gradient averaged over the
  batches given); right away from a minimum;
* ``'hessian'``: second order, I_j ~ (s^2 / 2) |H_jj| with the Hessian diagonal from
  Hutchinson's estimator diag(H) = E[v * (H v)], v with independent +-1 entries; right at a
  minimum, where the gradient vanishes.

Sorting I_j separates the groups (:meth:`Influence.split`: the largest gap of ln I, a given
number of strong coordinates, or the fewest that carry a given share of the total influence,
the rule for trained networks, whose ln I_j has no gap); the ratio of the groups' mean
influences is the empirical eps, with a standard error from the independent replicates
(batches, probe vectors or draws) by the delta method. :func:`relaxation_times` measures how
fast each group forgets a small perturbation under gradient descent: about 1/eps times slower
for the weak group.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Influence", "Relaxation", "Split", "influence", "relaxation_times"]


@dataclass(frozen=True)
class Split:
    """Strong and weak coordinates and the empirical eps = mean I_weak / mean I_strong.

    Attributes
    ----------
    strong : ndarray of bool (coordinates,)
    eps, eps_se : float
        The ratio and its standard error (delta method over replicates).
    gap : float
        ln(smallest strong I) - ln(largest weak I): how clean the split is.
    """

    strong: np.ndarray
    eps: float
    eps_se: float
    gap: float

    @property
    def n_strong(self) -> int:
        return int(self.strong.sum())


@dataclass(frozen=True)
class Influence:
    """Per-coordinate influence of a model's parameters.

    Attributes
    ----------
    values : ndarray (coordinates,)
        I_j, parameters flattened in ``model.named_parameters()`` order.
    replicates : ndarray (replicates, coordinates)
        Independent estimates whose mean is ``values``.
    names : list of (name, shape, offset)
        Where each parameter tensor sits in the flat vector.
    method : str
    """

    values: np.ndarray
    replicates: np.ndarray
    names: list
    method: str

    @property
    def se(self) -> np.ndarray:
        """Standard error of each I_j over the replicates."""
        r = self.replicates
        return r.std(axis=0, ddof=1) / math.sqrt(r.shape[0]) if r.shape[0] > 1 else np.zeros(r.shape[1])

    def split(self, strong: int | None = None, *, mass: float | None = None) -> Split:
        """Split the coordinates into strong and weak ones and estimate eps.

        Parameters
        ----------
        strong : int, optional
            Keep this many of the largest I_j as the strong group.
        mass : float in (0, 1), optional
            Keep the fewest coordinates that carry this fraction of the total influence sum_j I_j.
            For a trained network, whose ln I_j spread over many decades without a gap (the
            largest gap then isolates one coordinate), this is a scale-free rule; eps depends on
            it, so report it beside eps.

        With neither, split at the largest gap of ln I (the stylized losses' rule).
        """
        order = np.argsort(-self.values, kind="stable")
        v = np.maximum(self.values[order], np.finfo(float).tiny)
        if mass is not None:
            if strong is not None:
                raise ValueError("give strong or mass, not both")
            if not 0 < mass < 1:
                raise ValueError(f"mass must be in (0, 1), got {mass}")
            if v.size < 2:
                raise ValueError("need at least 2 coordinates to split")
            cum = np.cumsum(self.values[order])
            strong = min(int(np.searchsorted(cum, mass * cum[-1])) + 1, v.size - 1)
        if strong is None:
            if v.size < 2:
                raise ValueError("need at least 2 coordinates to split")
            strong = int(np.argmax(-np.diff(np.log(v)))) + 1
        if not 1 <= strong < v.size:
            raise ValueError(f"strong must be in 1..{v.size - 1}, got {strong}")
        mask = np.zeros(v.size, dtype=bool)
        mask[order[:strong]] = True
        # eps = mean_r W_r / mean_r S_r over replicates; delta method for the ratio of means
        if self.method == "gradient":
            # |mean gradient| is not a mean of replicates: linearise |g| around the mean's sign
            signed = self.replicates * np.sign(self.replicates.mean(axis=0))
        else:
            signed = np.abs(self.replicates)
        W, S = signed[:, ~mask].mean(axis=1), signed[:, mask].mean(axis=1)
        mw, ms = W.mean(), S.mean()
        eps = float(mw / ms)
        n = W.size
        if n > 1:
            cov = np.cov(np.stack([W, S]), ddof=1) / n
            var = (cov[0, 0] - 2 * eps * cov[0, 1] + eps * eps * cov[1, 1]) / ms ** 2
            se = float(math.sqrt(max(var, 0.0)))
        else:
            se = 0.0
        return Split(mask, eps, se, float(math.log(v[strong - 1]) - math.log(v[strong])))

    def by_parameter(self):
        """Mean influence per parameter tensor (a pandas DataFrame)."""
        import pandas as pd

        rows = [{"parameter": name, "size": int(np.prod(shape)), "mean_influence": float(self.values[o:o + int(np.prod(shape))].mean())}
                for name, shape, o in self.names]
        return pd.DataFrame(rows)


def _flat_params(model):
    names, offset = [], 0
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    for n, p in params:
        names.append((n, tuple(p.shape), offset))
        offset += p.numel()
    return params, names, offset


def influence(model: torch.nn.Module, loss_fn, batches, *, method: str = "hessian", scale: float = 1e-2,
              probes: int = 8, draws: int = 4, seed: int = 0) -> Influence:
    """Per-coordinate influence I_j of the parameters of ``model`` on ``loss_fn``.

    Parameters
    ----------
    model : nn.Module
    loss_fn : callable
        ``loss_fn(model, batch)`` -> scalar tensor.
    batches : iterable
        Batches; each is one replicate (``'gradient'``), or is combined with each probe
        (``'hessian'``) or draw (``'resample'``).
    method : {'hessian', 'gradient', 'resample'}
    scale : float
        s, the spread of the resampled coordinate.
    probes : int
        Hutchinson probe vectors per batch (``'hessian'``).
    draws : int
        Resampling draws per coordinate and batch (``'resample'``).
    seed : int
        Seeds the probe vectors and draws (a local generator; the global one is untouched).
    """
    if method not in ("hessian", "gradient", "resample"):
        raise ValueError(f"method must be 'hessian', 'gradient' or 'resample', got {method!r}")
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    batches = list(batches)
    if not batches:
        raise ValueError("batches is empty: give at least one batch")
    params, names, P = _flat_params(model)
    tensors = [p for _, p in params]
    gen = torch.Generator().manual_seed(int(seed))
    reps = []
    for batch in batches:
        if method == "gradient":
            grads = torch.autograd.grad(loss_fn(model, batch), tensors, allow_unused=True)
            reps.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                                   for g, p in zip(grads, tensors)]).double())
        elif method == "hessian":
            loss = loss_fn(model, batch)
            grads = torch.autograd.grad(loss, tensors, create_graph=True, allow_unused=True)
            pairs = [(g, p) for g, p in zip(grads, tensors)]
            for _ in range(int(probes)):
                vs = [torch.randint(0, 2, p.shape, generator=gen).to(p.dtype).mul_(2).sub_(1) for p in tensors]
                dot = sum((g * v).sum() for (g, _), v in zip(pairs, vs) if g is not None)
                hv = torch.autograd.grad(dot, tensors, retain_graph=True, allow_unused=True)
                reps.append(0.5 * scale ** 2 * torch.cat([(v * h if h is not None else torch.zeros_like(v)).reshape(-1)
                                                           for v, h in zip(vs, hv)]).double())
        else:
            reps.extend(_resample(model, loss_fn, batch, tensors, P, scale, int(draws), gen))
    R = torch.stack(reps).detach().cpu().numpy()
    if method == "gradient":
        values = scale * math.sqrt(2 / math.pi) * np.abs(R.mean(axis=0))
        R = scale * math.sqrt(2 / math.pi) * R
    elif method == "hessian":
        values = np.abs(R.mean(axis=0))
    else:
        values = R.mean(axis=0)
    return Influence(values, R, names, method)


@torch.no_grad()
def _resample(model, loss_fn, batch, tensors, P, scale, draws, gen):
    base = float(loss_fn(model, batch))
    out = []
    for _ in range(draws):
        delta = torch.randn(P, generator=gen, dtype=torch.float64) * scale
        row = torch.empty(P, dtype=torch.float64)
        j = 0
        for p in tensors:
            flat = p.view(-1)
            for k in range(flat.numel()):
                old = flat[k].item()
                flat[k] = old + float(delta[j])
                row[j] = abs(float(loss_fn(model, batch)) - base)
                flat[k] = old
                j += 1
        out.append(row)
    return out


@dataclass(frozen=True)
class Relaxation:
    """How fast each group of coordinates forgets a perturbation under gradient descent.

    Attributes
    ----------
    steps : ndarray
        Steps at which the distance was recorded.
    distance : dict name -> ndarray
        |theta'_group - theta_group| over steps for each group.
    time : dict name -> float
        Relaxation time in steps: -1 / (fitted slope of ln distance against steps).
    """

    steps: np.ndarray
    distance: dict
    time: dict


def relaxation_times(model: torch.nn.Module, loss_fn, batches, groups: dict, *, lr: float | None = None, steps: int,
                     perturbation: float = 1e-3, seed: int = 0, optimizer=None) -> Relaxation:
    """Relaxation time of each group of coordinates after a small perturbation.

    Two copies of the model, one with every coordinate moved by ``perturbation`` times a standard
    normal, take the same ``steps`` steps on the same batches (cycled): plain gradient steps at
    ``lr``, or steps of ``optimizer``. The distance between them, restricted to each group (a
    boolean mask over the flat parameter vector, as from :meth:`Influence.split`), decays like
    exp(-k / tau_group). tau is fitted on the part of the decay between 1 and 1e-3 of its start
    (NaN when the distance never falls below its start, inf when it does not decay). On a
    quadratic with curvatures lambda (strong) and eps lambda (weak), plain steps give
    tau = -1 / ln(1 - lr lambda) and about 1/eps times that.

    ``optimizer``: ``optimizer(params)`` -> a ``torch.optim.Optimizer`` over the given list of a
    copy's parameters, called once per copy. To perturb during training, build it like the
    training one and load its state (``opt.load_state_dict(trained.state_dict())``): Adam's
    per-coordinate step lr / sqrt(v_j) then sets the relaxation, not the curvature alone.
    """
    import copy

    if optimizer is None and not (lr is not None and lr > 0):
        raise ValueError(f"need lr > 0 (or an optimizer), got lr={lr}")
    if not isinstance(steps, int) or steps < 2:
        raise ValueError(f"need an integer steps >= 2, got steps={steps}")
    batches = list(batches)
    if not batches:
        raise ValueError("batches is empty: give at least one batch")
    a, b = copy.deepcopy(model), copy.deepcopy(model)  # the caller's model is left as it is
    pa, _, P = _flat_params(a)
    pb, _, _ = _flat_params(b)
    masks = {k: torch.as_tensor(np.asarray(m, dtype=bool)) for k, m in groups.items()}
    for k, m in masks.items():
        if m.shape != (P,):
            raise ValueError(f"group {k!r} must be a boolean mask over the {P} coordinates, got shape {tuple(m.shape)}")
    gen = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for _, p in pb:
            p.add_(perturbation * torch.randn(p.shape, generator=gen, dtype=p.dtype))

    def flat(ps):
        return torch.cat([p.detach().reshape(-1) for _, p in ps]).double()

    opts = None if optimizer is None else [optimizer([p for _, p in ps]) for ps in (pa, pb)]
    dist = {k: [] for k in masks}
    for k_step in range(steps + 1):
        diff = flat(pb) - flat(pa)
        for k, m in masks.items():
            dist[k].append(float(diff[m].norm()))
        if k_step == steps:
            break
        batch = batches[k_step % len(batches)]
        for i, (m_, ps) in enumerate(((a, pa), (b, pb))):
            grads = torch.autograd.grad(loss_fn(m_, batch), [p for _, p in ps], allow_unused=True)
            if opts is not None:
                for (_, p), g in zip(ps, grads):
                    p.grad = g
                opts[i].step()
                continue
            with torch.no_grad():
                for (_, p), g in zip(ps, grads):
                    if g is not None:
                        p.sub_(lr * g)
    ks = np.arange(steps + 1)
    times = {}
    for k, d in dist.items():
        d = np.asarray(d)
        ok = (d > d[0] * 1e-3) & (d < d[0]) & (d > 0)
        ok[0] = d[0] > 0
        if ok.sum() < 2:
            times[k] = float("nan")
            continue
        slope = np.polyfit(ks[ok], np.log(d[ok]), 1)[0]
        times[k] = float(-1.0 / slope) if slope < 0 else float("inf")
    return Relaxation(ks, {k: np.asarray(v) for k, v in dist.items()}, times)
