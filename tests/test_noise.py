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


# -- the contract between a noise model and the engine: Noise.sample_gradient and the noise factor ---------------

def _package_noise_models() -> set:
    """Every Noise subclass that memdyn defines, with all of its modules imported."""
    import importlib
    import pkgutil

    import memdyn
    from memdyn.noise import Noise

    for info in pkgutil.walk_packages(memdyn.__path__, "memdyn."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
    found, todo = set(), [Noise]
    while todo:
        for cls in todo.pop().__subclasses__():
            if cls.__module__.split(".")[0] == "memdyn" and cls not in found:
                found.add(cls)
                todo.append(cls)
    return found


def _ring(n):
    ang = 2 * np.pi * np.arange(n) / n
    return np.stack([np.cos(ang), np.sin(ang)], 1)


def _contract_cases():
    """(class, landscape, noise, init, step) per case: every model, in its drift-changing form where it has one."""
    from memdyn import DoubleWell, ProfileGaussian, Quadratic, TanhStep
    from memdyn.memorization import GeneratedData, MemorizingLandscape

    well, S = DoubleWell(-1, 0.2, 1), _ring(8)
    ls = LeastSquares(np.random.default_rng(0).standard_normal((12, 2)), np.ones(12))
    mem = MemorizingLandscape(S, 0.1, 0.2)
    near = S[0] + [0.05, -0.03]
    return {
        "gaussian-1d": (Gaussian, well, Gaussian(1.5), [0.3], 0.02),
        "gaussian-scales-2d": (Gaussian, Quadratic(np.array([[2.0, 0.3], [0.3, 1.0]])), Gaussian(1.0, [1.0, 0.1]),
                               [0.5, -0.5], 0.05),
        "state-dependent": (StateDependentGaussian, well, StateDependentGaussian(lambda th: 1 + 0.5 * th[:, 0].abs()),
                            [0.3], 0.02),
        "profile": (ProfileGaussian, well, ProfileGaussian(TanhStep(2.0, 1.0, 0.2, 0.3)), [0.3], 0.02),
        "student-t": (StudentT, well, StudentT(1.0, 4.0), [0.3], 0.02),
        "minibatch-replace": (Minibatch, ls, Minibatch(ls, 3, replace=True), [0.5, -0.5], 0.05),
        "minibatch-subset": (Minibatch, ls, Minibatch(ls, 3, replace=False), [0.5, -0.5], 0.05),
        "generated-alpha-0.9": (GeneratedData, mem, GeneratedData(S, 0.1, 20.0, 0.9), near, 1e-3),
        "generated-alpha-1": (GeneratedData, mem, GeneratedData(S, 0.1, 20.0, 1.0), near, 1e-3),
    }


CONTRACT = _contract_cases()


def test_every_noise_model_of_the_package_has_a_contract_case():
    assert {case[0] for case in CONTRACT.values()} == _package_noise_models()


@pytest.mark.parametrize("case", sorted(CONTRACT))
def test_a_noise_factor_of_one_is_the_noise_model_itself_on_every_kernel(case):
    """Per chain, as a number and per group, a factor 1 gives the chains of no factor, bit for bit, on
    every kernel that runs the model (3334c30 added grad F to own-output and minibatch samples here)."""
    from memdyn import Group, simulate, simulate_groups

    _, land, noise, init, a = CONTRACT[case]
    n, h = 1100, 60  # chains straddle a block
    ran = []
    for kernel in ("torch", "compiled", "fused"):
        kw = dict(init=init, seed=11, kernel=kernel)
        try:
            base = simulate(land, noise, a, h, n, **kw)
        except ValueError as err:
            assert kernel != "torch" and "needs a 1-D polynomial landscape" in str(err)
            continue
        ran.append(kernel)
        for scale in (np.ones(n), 1.0):
            np.testing.assert_array_equal(simulate(land, noise, a, h, n, noise_scale=scale, **kw).final, base.final)
        groups = lambda s: [Group(700, a, h, init, s), Group(n - 700, 1.5 * a, h // 2, init, s)]  # noqa: E731
        plain = simulate_groups(land, noise, groups(None), seed=11, kernel=kernel)
        np.testing.assert_array_equal(plain[0].final, base.final[:700])
        for s in (1.0, np.ones(700)):
            got = simulate_groups(land, noise, [Group(700, a, h, init, s), Group(n - 700, 1.5 * a, h // 2, init, 1.0)],
                                  seed=11, kernel=kernel)
            for g, p in zip(got, plain):
                np.testing.assert_array_equal(g.final, p.final)
    assert ran[0] == "torch" and (len(ran) == 3) == (noise.kernel_sigma(land.dim) is not None
                                                     and hasattr(land, "kernel_coefficients"))


@pytest.mark.parametrize("case", sorted(CONTRACT))
def test_sample_gradient_is_the_gradient_plus_the_factor_times_the_noise(case):
    """At factor 1 the sample is grad F + xi (xi from apply); at factor s the zero-mean noise is scaled and
    the generated-data model's own-output pull is not."""
    from memdyn.memorization import GeneratedData

    _, land, noise, init, _ = CONTRACT[case]
    n = 4000
    gen = torch.Generator().manual_seed(3)
    theta = torch.as_tensor(np.asarray(init, dtype=np.float64)) + 0.1 * torch.randn((n, land.dim), generator=gen,
                                                                                     dtype=torch.float64)
    raw = torch.empty((1, n, noise.width(land.dim)), dtype=noise.raw_dtype or torch.float64)
    noise.draw(gen, raw)
    raw = raw[0]
    grad = land.grad(theta)
    s = torch.as_tensor(np.repeat([0.0, 1.0, 2.5, 0.3], n // 4), dtype=torch.float64)[:, None]
    xi = noise.apply(raw, theta, grad)
    g1 = grad.clone()
    noise.sample_gradient(g1, raw, theta, torch.ones_like(s))
    np.testing.assert_allclose(g1, grad + xi, rtol=0, atol=1e-12 * float((grad + xi).abs().max()))
    g0 = grad.clone()
    noise.sample_gradient(g0, raw, theta)  # no factor: a factor of 1, bit for bit
    np.testing.assert_array_equal(g0, g1)
    gs = grad.clone()
    noise.sample_gradient(gs, raw, theta, s)
    expect = grad + s * xi
    if isinstance(noise, GeneratedData) and noise.alpha < 1:
        own = (raw[:, -1] >= noise.alpha)[:, None]
        assert 0 < float(own.double().mean()) < 1
        expect = torch.where(own, noise.own_gradient(theta), expect)
    np.testing.assert_allclose(gs, expect, rtol=0, atol=1e-12 * float(expect.abs().max()))  # factor 0: no noise


@pytest.mark.parametrize("kernel", ["torch", "compiled"])
def test_a_noise_factor_is_the_noise_level_of_fresh_data(kernel):
    """Factor s runs the model whose noise scale is s sigma, bit for bit: Gaussian noise on the compiled and
    torch kernels, and the generated-data model, whose own-output pull the factor leaves alone."""
    from memdyn import DoubleWell, simulate
    from memdyn.memorization import GeneratedData, MemorizingLandscape

    s = np.repeat([0.5, 2.0], 600)
    cases = [(DoubleWell(-1, 0.2, 1), lambda sig: Gaussian(sig), 1.2, [0.2], 0.05)]
    if kernel == "torch":
        S = _ring(8)
        cases.append((MemorizingLandscape(S, 0.1, 0.2), lambda sig: GeneratedData(S, 0.1, sig, 0.9), 20.0,
                      S[0] + [0.05, -0.03], 1e-3))
    for land, model, sigma, init, a in cases:
        grid = simulate(land, model(sigma), a, 80, s.size, init=init, seed=4, noise_scale=s, kernel=kernel)
        for g, f in enumerate((0.5, 2.0)):
            alone = simulate(land, model(f * sigma), a, 80, s.size, init=init, seed=4, kernel=kernel)
            sl = slice(g * 600, (g + 1) * 600)
            np.testing.assert_array_equal(grid.final[sl], alone.final[sl])
    zero = simulate(DoubleWell(-1, 0.2, 1), Gaussian(1.0), 0.05, 100, 3, init=[0.2], noise_scale=0.0, kernel=kernel)
    assert np.ptp(zero.final) == 0  # s = 0: the noiseless flow


def test_a_subclass_that_changes_the_sample_is_not_bypassed_by_the_kernels():
    """The compiled kernel computes grad F + s sigma z itself: a Gaussian subclass that adds a drift in
    sample_gradient runs on the torch path (auto) or is refused (compiled), never silently ignored."""
    from memdyn import DoubleWell, simulate

    class Tilted(Gaussian):
        def sample_gradient(self, grad, raw, theta, scale):
            super().sample_gradient(grad, raw, theta, scale)
            grad.add_(0.5)

    land = DoubleWell(-1, 0.2, 1)
    auto = simulate(land, Tilted(0.0), 0.05, 200, 4, init=[0.3])
    assert auto.info["kernel"] == "torch"
    assert np.all(auto.final < -1.0)  # the extra pull of 0.5 to the left moved the minimum
    with pytest.raises(ValueError, match="kernel='compiled' needs"):
        simulate(land, Tilted(1.0), 0.05, 10, 4, init=[0.3], kernel="compiled")
    assert simulate(land, Gaussian(1.0), 0.05, 10, 4, init=[0.3]).info["kernel"] == "compiled"
