import math

import numpy as np
import pytest
import torch

from memdyn import Gaussian, LeastSquares, Minibatch, StateDependentGaussian, StudentT


def draw(noise, n, dim, seed=0, theta=None, grad=None):
    gen = torch.Generator().manual_seed(seed)
    raw = torch.empty((1, n, noise.width(dim)), dtype=noise.raw_dtype or torch.float64)
    noise.draw(gen, raw)
    theta = torch.zeros((n, dim), dtype=torch.float64) if theta is None else theta
    grad = torch.zeros_like(theta) if grad is None else grad
    return noise.apply(raw[0], theta, grad).numpy()


def test_gaussian_scales_covariance():
    xi = draw(Gaussian(2.0, scales=[1.0, 0.1]), 200_000, 2)
    cov = np.cov(xi.T)
    se = 2 * np.diag(Gaussian(2.0, [1.0, 0.1]).covariance()) / math.sqrt(200_000) * math.sqrt(2)
    assert np.all(np.abs(np.diag(cov) - [4.0, 0.04]) < 5 * se)


def test_state_dependent_gaussian_uses_state():
    noise = StateDependentGaussian(lambda th: 1.0 + th[:, 0].abs())
    theta = torch.full((100_000, 1), 2.0, dtype=torch.float64)
    xi = draw(noise, 100_000, 1, theta=theta)
    assert abs(xi.std() - 3.0) < 5 * 3.0 / math.sqrt(2 * 100_000)
    np.testing.assert_allclose(noise.covariance([2.0]), [[9.0]])


def test_student_t_unit_variance_and_heavy_tails():
    xi = draw(StudentT(1.0, dof=5.0), 400_000, 1).ravel()
    # Var of t_5 scaled to 1; the sample variance has sd ~ sqrt(kurtosis-ish / n): loose 5 se bound
    assert abs(xi.var() - 1.0) < 0.05
    assert np.mean(np.abs(xi) > 4) > 10 * 2 * (1 - 0.9999683)  # far heavier than a Gaussian tail


@pytest.mark.parametrize("replace", [True, False])
def test_minibatch_noise_mean_zero_and_exact_covariance(replace):
    rng = np.random.default_rng(0)
    n, d, b = 12, 2, 3
    ls = LeastSquares(rng.standard_normal((n, d)), rng.standard_normal(n))
    theta0 = np.array([0.3, -0.5])
    theta = torch.as_tensor(np.tile(theta0, (200_000, 1)))
    grad = ls.grad(theta)
    xi = draw(Minibatch(ls, b, replace=replace), 200_000, d, theta=theta, grad=grad)
    per = ls.per_sample_grad(torch.as_tensor(theta0[None]), torch.arange(n)[None])[0].numpy()
    sigma = np.cov(per.T, ddof=0)
    factor = 1 / b if replace else (n - b) / ((n - 1) * b)
    cov = np.cov(xi.T)
    np.testing.assert_allclose(cov, factor * sigma, atol=6 * np.abs(sigma).max() * factor * math.sqrt(2 / 200_000) * 3)
    assert np.all(np.abs(xi.mean(0)) < 5 * np.sqrt(np.diag(factor * sigma) / 200_000))


def test_bad_noise_parameters():
    with pytest.raises(ValueError, match="sigma"):
        Gaussian(-1.0)
    with pytest.raises(ValueError, match="dof"):
        StudentT(1.0, dof=0)
    with pytest.raises(ValueError, match="batch"):
        Minibatch(LeastSquares(np.eye(3), np.ones(3)), 5)
