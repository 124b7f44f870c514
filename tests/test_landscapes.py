import numpy as np
import pytest
import torch

from memdyn import (S1, BentDoubleWell, BilinearCoupling, DoubleWell, DoubleWellND, LeastSquares, Modulated, Quadratic,
                    TiltedWell)


def autograd(land, theta):
    t = torch.as_tensor(theta, dtype=torch.float64).clone().requires_grad_(True)
    land.value(t).sum().backward()
    return t.grad.numpy()


def grad_into(land, theta):
    t = torch.as_tensor(theta, dtype=torch.float64)
    out = torch.empty_like(t)
    land.grad_into(t, out)
    return out.numpy()


def all_landscapes():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((3, 3))
    yield Quadratic(A @ A.T + np.eye(3), center=[0.1, -0.2, 0.3])
    yield DoubleWell(-1.0, 0.3, 2.0, 1.7)
    yield DoubleWellND(DoubleWell(-1, 0.2, 1), [1.0, 3.0])
    yield BentDoubleWell(DoubleWell(-1, -0.3, 1), 2.5, 0.4)
    yield S1(Quadratic([[2.0]]), Quadratic([[0.0, 0.5], [0.5, 1.0]]), 0.1)
    yield S1(Quadratic(np.diag([1.0, 2.0])), BilinearCoupling([0.5, 1.0, 1.5], rng.standard_normal((2, 3))), 0.05)
    yield Modulated(TiltedWell(DoubleWell(-1, 0.1, 1)), Quadratic(np.eye(2)), [[1.0], [0.5]], 0.2)
    yield LeastSquares(rng.standard_normal((20, 3)), rng.standard_normal(20))


@pytest.mark.parametrize("land", list(all_landscapes()), ids=lambda l: type(l).__name__)
def test_gradients_match_autograd(land):
    theta = np.random.default_rng(1).standard_normal((7, land.dim))
    g = land.grad(torch.as_tensor(theta)).numpy()
    np.testing.assert_allclose(g, autograd(land, theta), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grad_into(land, theta), g, rtol=1e-12, atol=1e-14)


def test_double_well_closed_forms():
    k, s = 1.3, 0.25
    w = DoubleWell(-1.0, s, 1.0, k)
    cps = w.critical_points()
    assert [c.kind for c in cps] == ["minimum", "saddle", "minimum"]
    assert [c.location[0] for c in cps] == [-1.0, s, 1.0]
    np.testing.assert_allclose(w.delta_f, 4 * k * s / 3, rtol=1e-13)
    np.testing.assert_allclose(cps[0].curvatures[0], 2 * k * (1 + s), rtol=1e-9)
    np.testing.assert_allclose(cps[2].curvatures[0], 2 * k * (1 - s), rtol=1e-9)
    np.testing.assert_allclose(cps[1].curvatures[0], -k * (1 - s * s), rtol=1e-9)
    assert w.barrier("left") == pytest.approx(w.f(s) - w.f(-1.0))
    with pytest.raises(ValueError, match="left < saddle < right"):
        DoubleWell(0.0, -1.0, 1.0)


def test_nd_double_well_critical_points_have_zero_gradient():
    land = DoubleWellND(DoubleWell(-1, 0.2, 1), [1.0, 2.0, 5.0])
    cps = land.critical_points()
    g = land.grad(torch.as_tensor(np.stack([c.location for c in cps])))
    assert torch.all(g.abs() < 1e-14)
    assert [c.index for c in cps] == [0, 1, 0]


def test_bent_double_well_is_non_separable_with_the_saddle_off_the_axes():
    land = BentDoubleWell(DoubleWell(-1, 0.2, 1), 2.0, 0.25)
    cps = land.critical_points()
    assert [c.index for c in cps] == [0, 1, 0]
    g = land.grad(torch.as_tensor(np.stack([c.location for c in cps])))
    assert torch.all(g.abs() < 1e-14)
    assert cps[1].location == pytest.approx([0.2, 0.25 * (1 - 0.04)])  # off both axes
    H = land.hessian(cps[0].location)
    assert abs(H[0, 1]) > 0.1  # not separable at the minimum
    for c in cps:  # the analytic Hessian against autograd
        f = lambda t: land.value(t[None])[0]  # noqa: E731
        Ha = torch.autograd.functional.hessian(f, torch.as_tensor(c.location)).numpy()
        np.testing.assert_allclose(land.hessian(c.location), Ha, atol=1e-12)
    with pytest.raises(ValueError, match="minima must be at -1 and 1"):
        BentDoubleWell(DoubleWell(-2, 0, 1))
    with pytest.raises(ValueError, match="curvature"):
        BentDoubleWell(DoubleWell(), 0.0)


def test_s1_quadratic_hessian_and_equilibrium():
    lx, ly, k, eps = 1.5, 0.7, 0.4, 0.05
    land = S1.quadratic(lx, ly, k, eps)
    np.testing.assert_allclose(land.hessian(np.zeros(2)), [[lx, eps * k], [eps * k, eps * ly]])
    (cp,) = land.critical_points()
    np.testing.assert_allclose(cp.location, 0, atol=1e-14)
    with pytest.raises(ValueError, match="positive definite"):
        S1.quadratic(1.0, 1.0, 10.0, 0.1)


def test_bilinear_coupling_hessian_is_exact():
    rng = np.random.default_rng(3)
    land = BilinearCoupling([0.5, 1.0, 2.0], rng.standard_normal((2, 3)))
    numeric = super(BilinearCoupling, land).hessian(rng.standard_normal(5))
    np.testing.assert_allclose(numeric, land.hessian(), atol=1e-6)


def test_tilted_well_equilibria_are_roots():
    fam = TiltedWell(DoubleWell(-1, 0.0, 1))
    eq = fam.equilibria(0.1)
    assert len(eq) == 3 and [i for _, i in eq] == [0, 1, 0]
    for x, _ in eq:
        assert abs(fam.well.df(x) + 0.1) < 1e-12
    assert len(fam.equilibria(2.0)) == 1  # past the fold only one branch survives


def test_s1_with_bilinear_coupling_has_its_critical_point():
    import torch

    from memdyn import BilinearCoupling, Quadratic, S1

    land = S1(Quadratic(np.diag([2.0, 3.0]), center=[0.5, -1.0]),
              BilinearCoupling([1.0, 2.0, 0.5], np.full((2, 3), 0.1)), 0.1)
    (c,) = land.critical_points()
    assert c.index == 0 and c.location.shape == (5,)
    assert float(land.grad(torch.tensor(c.location[None])).abs().max()) < 1e-12
    assert c.value == pytest.approx(float(land.value(torch.tensor(c.location[None]))[0]))


def test_multiwell_matches_double_well_and_places_critical_points():
    from memdyn import MultiWell

    m, d = MultiWell([-1, 0.2, 1]), DoubleWell(-1, 0.2, 1)
    x = np.linspace(-2, 2, 9)
    np.testing.assert_allclose(m.f(x), d.f(x) - d.f(-1.0), atol=1e-12)
    np.testing.assert_allclose(m.grad(torch.tensor(x[:, None])).numpy()[:, 0], d.df(x), atol=1e-12)
    tri = MultiWell([-1.25, -0.6, 0.0, 0.6, 1.2], scale=2.0)
    assert [c.index for c in tri.critical_points()] == [0, 1, 0, 1, 0]
    assert np.allclose(tri.minima_x, [-1.25, 0.0, 1.2]) and np.allclose(tri.saddles_x, [-0.6, 0.6])
    g = tri.grad(torch.tensor(tri.points[:, None]))
    assert float(g.abs().max()) < 1e-12
    with pytest.raises(ValueError, match="odd number"):
        MultiWell([-1, 0, 1, 2])


def test_driven_tilted_well_fold_branches_and_field():
    import math

    from memdyn import DoubleWell, DrivenTiltedWell

    land = DrivenTiltedWell(eps=0.01, y_target=0.8)
    c_f, x_f = land.fold("left")
    assert c_f == pytest.approx(2 / (3 * math.sqrt(3)), abs=1e-12) and x_f == pytest.approx(-1 / math.sqrt(3), abs=1e-12)
    assert land.fold("right")[0] == pytest.approx(-c_f, abs=1e-12)
    x_l = land.branch(0.1, "left")
    assert x_l ** 3 - x_l - 0.1 == pytest.approx(0, abs=1e-10) and x_l < x_f
    assert math.isnan(land.branch(c_f + 1e-3, "left")) and not math.isnan(land.branch(c_f - 1e-3, "left"))
    th = torch.tensor([[-1.2, 0.3], [0.4, -0.5]], dtype=torch.float64)
    g = land.grad(th)
    assert torch.allclose(g[:, 0], th[:, 0] ** 3 - th[:, 0] - th[:, 1])
    assert torch.allclose(g[:, 1], 0.01 * (th[:, 1] - 0.8))
    assert land.slow_path(-0.8, 0.05, [0, 10])[1] == pytest.approx(0.8 - 1.6 * (1 - 0.05 * 0.01) ** 10)
    # an asymmetric well: the fold sits where W'' = 0 left of the barrier
    w = DoubleWell(-1.0, 0.2, 1.5, 2.0)
    c_f, x_f = DrivenTiltedWell(0.01, 2.0, w).fold("left")
    assert float(w.d2f(x_f)) == pytest.approx(0, abs=1e-9) and c_f == pytest.approx(float(w.df(x_f)))
