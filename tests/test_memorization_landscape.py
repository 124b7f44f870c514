"""The memorizing landscape: values and gradients against autograd and a direct mixture density,
stability far from the data, minima at the training points, block-wise evaluation, bad input."""

import doctest

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from scipy.stats import multivariate_normal

import memdyn.memorization.landscape as mod
from memdyn.memorization import MemorizingLandscape


def clusters(n=30, D=3, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=2.0, size=(3, D))
    return centres[rng.integers(0, 3, n)] + 0.5 * rng.normal(size=(n, D))


def test_value_is_minus_log_of_the_mixture_density():
    S = clusters()
    F = MemorizingLandscape(S, bandwidth=0.3, c=0.4)
    x = np.random.default_rng(1).normal(scale=2.0, size=(9, 3))
    p = 0.6 * multivariate_normal(F.mean, F.cov).pdf(x)
    p += 0.4 * np.mean([multivariate_normal(s, 0.09 * np.eye(3)).pdf(x) for s in S], axis=0)
    np.testing.assert_allclose(F.value(torch.as_tensor(x)).numpy(), -np.log(p), rtol=1e-12)


@pytest.mark.parametrize("c", [0.0, 0.3, 1.0])
def test_gradient_matches_autograd_and_stays_finite_far_away(c):
    F = MemorizingLandscape(clusters(), bandwidth=0.2, c=c)
    x = np.concatenate([np.random.default_rng(2).normal(scale=2.0, size=(6, 3)), [[60.0, -40.0, 80.0]]])
    t = torch.as_tensor(x).clone().requires_grad_(True)
    F.value(t).sum().backward()
    g = F.grad(torch.as_tensor(x))
    assert torch.all(torch.isfinite(g)) and torch.all(torch.isfinite(F.value(torch.as_tensor(x))))
    np.testing.assert_allclose(g.numpy(), t.grad.numpy(), rtol=1e-8, atol=1e-10)


def test_minima_sit_at_the_training_points_and_near_the_mean():
    S = clusters(n=12, D=2, seed=3)
    gaps = np.linalg.norm(S[:, None] - S[None], axis=2) + np.eye(len(S)) * 1e9
    h = gaps.min() / 8  # separated wells (two points closer than ~2h merge into one well)
    F = MemorizingLandscape(S, bandwidth=h, c=0.5)
    fun = lambda v: float(F.value(torch.as_tensor(v[None]))[0])  # noqa: E731
    jac = lambda v: F.grad(torch.as_tensor(v[None]))[0].numpy()  # noqa: E731
    for s in S:
        res = minimize(fun, s + 0.2 * h, jac=jac, method="BFGS", options={"gtol": 1e-10})
        assert np.linalg.norm(res.x - s) < 0.05 * h
        assert np.all(np.linalg.eigvalsh(F.hessian(res.x)) > 0)
    # with c small the generalizing minimum is near m; with c = 0 it is exactly m
    F0 = MemorizingLandscape(S, bandwidth=h, c=0.0)
    res = minimize(lambda v: float(F0.value(torch.as_tensor(v[None]))[0]), S.mean(0) + 0.1, method="BFGS",
                   jac=lambda v: F0.grad(torch.as_tensor(v[None]))[0].numpy(), options={"gtol": 1e-11})
    np.testing.assert_allclose(res.x, S.mean(0), atol=1e-8)


def test_block_wise_evaluation_is_exact(monkeypatch):
    F = MemorizingLandscape(clusters(n=50), bandwidth=0.3, c=0.7)
    x = torch.as_tensor(np.random.default_rng(4).normal(size=(37, 3)))
    v, g = F.value(x), F.grad(x)
    monkeypatch.setattr(mod, "BLOCK", 120)  # 2 chains per block
    torch.testing.assert_close(F.value(x), v, rtol=1e-14, atol=1e-14)
    # the gradient sums terms of size |x| / h^2 ~ 30 by matrix products whose rounding depends on the block's
    # row count: a few ulps of those terms
    torch.testing.assert_close(F.grad(x), g, rtol=0, atol=64 * 2.2e-16 * 30)
    r = F.responsibilities(x)
    torch.testing.assert_close(r.sum(1), torch.ones(37, dtype=torch.float64))


def test_ten_thousand_points_in_float32():
    S = np.random.default_rng(5).normal(size=(10_000, 4))
    F = MemorizingLandscape(S, bandwidth=0.1, c=0.9)
    x = S[:256] + 0.02
    g = F.grad(torch.as_tensor(x, dtype=torch.float32))
    assert g.dtype == torch.float32 and torch.all(torch.isfinite(g))
    g64 = F.grad(torch.as_tensor(x)).numpy()
    assert np.abs(g.numpy() - g64).max() <= 1e-3 * np.abs(g64).max()


@pytest.mark.parametrize("kwargs,match", [
    ({"train": np.zeros((1, 2))}, "train must be an array of shape"),
    ({"train": np.array([[0.0, np.nan], [1.0, 1.0]])}, "train must be finite"),
    ({"bandwidth": 0.0}, "bandwidth must be > 0"),
    ({"c": 1.5}, r"c must be in \[0, 1\]"),
    ({"cov": [[1.0, 2.0], [2.0, 1.0]]}, "cov must be symmetric positive definite"),
])
def test_bad_input_names_the_field(kwargs, match):
    args = {"train": np.eye(2), "bandwidth": 0.1, "c": 0.5} | kwargs
    with pytest.raises(ValueError, match=match):
        MemorizingLandscape(**args)


def test_docstring_example_runs():
    assert doctest.testmod(mod).failed == 0


@pytest.mark.parametrize("c", [0.0, 0.35, 1.0])
def test_compiled_gradient_equals_the_tensor_version(c):
    rng = np.random.default_rng(4)
    for n, D in ((6, 2), (40, 5)):
        F = MemorizingLandscape(rng.standard_normal((n, D)), 0.3, c)
        theta = torch.tensor(3 * rng.standard_normal((500, D)))  # far points too: log-sum-exp, no underflow
        per_chain = torch.tensor(rng.uniform(0, 1, 500))
        for cc in (None, per_chain):
            compiled = F._grad(theta, cc)  # CPU, no autograd: the numba loop
            with torch.enable_grad():  # a tensor that needs gradients takes the differentiable tensor version
                tensor = F._grad(theta.clone().requires_grad_(True), cc).detach()
            np.testing.assert_allclose(compiled.numpy(), tensor.numpy(), rtol=1e-12, atol=1e-12 * tensor.abs().max().item())
        g32 = F.grad(theta.float())
        assert g32.dtype == torch.float32 and torch.allclose(g32.double(), F.grad(theta), rtol=1e-5, atol=1e-5)
