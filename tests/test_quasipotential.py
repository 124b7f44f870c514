"""Quasi-potential solvers against closed forms: linear systems (Lyapunov),
manufactured non-gradient systems b = -1/2 D grad U + J grad U (V = U - U(min)), Maier-Stein."""

import numpy as np
import pytest
import torch
from scipy.integrate import quad
from scipy.linalg import solve_continuous_lyapunov

from memdyn.landscapes import DoubleWell
from memdyn.ldp import (characteristic_slope, fw_energies, geometric_action, min_action_path, quasipotential_grid,
                        transition_costs)


def maier_stein(beta):
    def b(x):
        lib = torch if isinstance(x, torch.Tensor) else np
        return lib.stack([x[:, 0] - x[:, 0] ** 3 - beta * x[:, 0] * x[:, 1] ** 2, -(1 + x[:, 0] ** 2) * x[:, 1]], 1)
    return b


def random_linear(seed, d=2):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(d, d))
    A -= (np.max(np.linalg.eigvals(A).real) + 0.5) * np.eye(d)
    B = rng.normal(size=(d, d))
    D = B @ B.T + 0.1 * np.eye(d)
    Sigma = solve_continuous_lyapunov(A, -D)
    return A, D, np.linalg.inv(Sigma)


def fitted_box(Si, margin=1.3):
    """A box holding the ellipse V <= 1 of V = x^T Si x / 2 with a margin."""
    ext = margin * np.sqrt(2 * np.diag(np.linalg.inv(Si)))
    return [(-ext[0], ext[0]), (-ext[1], ext[1])]


def manufactured(seed):
    """b = -1/2 D grad U + J grad U with U = x^2/2 + y^2 + x^4/4 + x y/2: V = U exactly."""
    rng = np.random.default_rng(seed)
    B = rng.normal(size=(2, 2))
    D = B @ B.T + 0.2 * np.eye(2)
    J = rng.uniform(0.5, 2.0) * np.array([[0.0, 1.0], [-1.0, 0.0]])
    Dt, Jt = torch.tensor(D), torch.tensor(J)

    def grad_u(x):
        return torch.stack([x[:, 0] + x[:, 0] ** 3 + 0.5 * x[:, 1], 2 * x[:, 1] + 0.5 * x[:, 0]], 1)

    def U(p):
        return p[..., 0] ** 2 / 2 + p[..., 1] ** 2 + p[..., 0] ** 4 / 4 + 0.5 * p[..., 0] * p[..., 1]

    return (lambda x: -0.5 * grad_u(x) @ Dt.T + grad_u(x) @ Jt.T), D, U


def inside_error(qp, exact):
    """Max |V - exact| / max exact over the largest sublevel set of the exact V inside the box
    (optimal paths to those points stay in the box)."""
    X, Y = np.meshgrid(qp.x, qp.y, indexing="ij")
    Vex = exact(np.stack([X, Y], -1))
    edge = np.concatenate([Vex[0], Vex[-1], Vex[:, 0], Vex[:, -1]]).min()
    m = Vex <= 0.9 * edge
    return float(np.abs(qp.V - Vex)[m].max() / Vex[m].max())


# -- minimum action paths ------------------------------------------------------------------------

@pytest.mark.parametrize("seed,d", [(1, 2), (2, 2), (3, 3), (4, 4)])
def test_mam_linear_lyapunov(seed, d):
    A, D, Si = random_linear(seed, d)
    x = np.linspace(1.0, -0.6, d)
    res = min_action_path(lambda z: z @ torch.tensor(A).T, np.zeros(d), x, diffusion=D)
    assert res.converged
    assert res.action == pytest.approx(0.5 * x @ Si @ x, rel=1e-3)


@pytest.mark.parametrize("seed", [5, 6])
def test_mam_manufactured_nongradient(seed):
    b, D, U = manufactured(seed)
    for end in ([1.0, 0.5], [-0.7, 0.8]):
        res = min_action_path(b, [0.0, 0.0], end, diffusion=D)
        assert res.converged
        assert res.action == pytest.approx(U(np.array(end)), rel=5e-3)


def test_mam_second_order_in_points():
    errs = [abs(min_action_path(maier_stein(1.0), [-1, 0], [0, 0], n_points=n).action - 0.5) for n in (25, 50, 100)]
    orders = np.log2(np.array(errs[:-1]) / np.array(errs[1:]))
    assert np.all(orders > 1.8), (errs, orders)


def test_mam_maier_stein_path_leaves_axis():
    # a single straight start lies on the invariant axis y = 0 and stays there: the axis path, action 1/2
    on_axis = min_action_path(maier_stein(10.0), [-1, 0], [0, 0], starts=1)
    assert on_axis.action == pytest.approx(0.5, rel=1e-3)
    # the default bent starts leave the axis, keep the least action and report that the starts disagree
    default = min_action_path(maier_stein(10.0), [-1, 0], [0, 0])
    # three starts plus the linearised optimal path (the start point is an attractor)
    assert default.action < 0.45 and not default.starts_agree and default.start_actions.size == 4
    assert np.abs(default.path[:, 1]).max() > 0.2
    off = min_action_path(maier_stein(10.0), [-1, 0], [0, 0], init=[[-0.5, 0.4]])
    assert off.action == pytest.approx(default.action, rel=1e-3)
    assert off.converged and off.action < 0.45
    assert np.abs(off.path[:, 1]).max() > 0.2
    # below beta = 4 the axis path is the minimiser even from an off-axis start
    low = min_action_path(maier_stein(3.0), [-1, 0], [0, 0], init=[[-0.5, 0.4]])
    assert low.action == pytest.approx(0.5, rel=1e-3) and np.abs(low.path[:, 1]).max() < 1e-3
    # the path starts on a small ellipse around the attractor (a radial segment for this node)
    assert geometric_action(maier_stein(10.0), np.vstack([[-1.0, 0.0], off.path])) == pytest.approx(off.action, rel=1e-3)


def test_mam_numpy_drift_uses_finite_differences():
    # b = -grad U with U = 1 - cos(x) + y^2 / 2 written with numpy only: V(x) = 2 (U(x) - U(0))
    b = lambda x: np.stack([-np.sin(x[:, 0]), -x[:, 1]], axis=1)  # noqa: E731
    res = min_action_path(b, [0.0, 0.0], [1.5, 0.3])
    assert res.action == pytest.approx(2 * (1 - np.cos(1.5) + 0.045), rel=1e-3)
    jac = lambda x: np.stack([np.stack([-np.cos(x[:, 0]), 0 * x[:, 0]], 1), np.stack([0 * x[:, 0], -1 + 0 * x[:, 0]], 1)], 1)  # noqa: E731
    res2 = min_action_path(b, [0.0, 0.0], [1.5, 0.3], jacobian=jac)
    assert res2.action == pytest.approx(res.action, rel=1e-6)


def test_mam_state_dependent_diffusion_1d_and_2d():
    w = DoubleWell(-1.0, 0.2, 1.0, 1.0)
    sig = lambda x: 1.2 + 1.8 * 0.5 * (1 - np.tanh((x - 0.2) / 0.3))  # noqa: E731
    exact = quad(lambda x: 2 * (x + 1) * (x - 0.2) * (x - 1) / sig(x) ** 2, -1.0, 0.2)[0]
    res = min_action_path(lambda x: -w.grad(x), [-1.0], [0.2], diffusion=lambda X: (sig(X[:, 0]) ** 2)[:, None, None])
    assert res.action == pytest.approx(exact, rel=1e-3)
    # 2-D: D(x) = g(x) I scales the gradient system b = -grad U, U = |x|^2/2: V = int 2 U'/g along a ray
    g = lambda X: (1 + 0.5 * X[:, 0] ** 2)[:, None, None] * np.eye(2)  # noqa: E731
    res = min_action_path(lambda x: -x, [0.0, 0.0], [1.2, 0.0], diffusion=g)
    assert res.action == pytest.approx(quad(lambda r: 2 * r / (1 + 0.5 * r**2), 0, 1.2)[0], rel=1e-3)


# -- the grid solver ---------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [1, 2, 5, 7, 8])
def test_grid_linear_lyapunov(seed):
    A, D, Si = random_linear(seed)
    qp = quasipotential_grid(lambda z: z @ A.T, [0.0, 0.0], fitted_box(Si), 129, diffusion=D)
    err = inside_error(qp, lambda P: 0.5 * np.einsum("...i,ij,...j->...", P, Si, P))
    assert err < 0.01


def test_grid_second_order():
    A, D, Si = random_linear(4)  # strongly anisotropic D
    errs = []
    for n in (33, 65, 129):
        qp = quasipotential_grid(lambda z: z @ A.T, [0.0, 0.0], fitted_box(Si), n, diffusion=D)
        errs.append(inside_error(qp, lambda P: 0.5 * np.einsum("...i,ij,...j->...", P, Si, P)))
    order = np.polyfit(np.log([32, 64, 128]), np.log(errs), 1)[0]
    assert order < -1.8, (errs, order)


def test_grid_strongly_rotating_non_normal_drift_within_one_percent(ratio=10.0, seed=11):
    # A = P [[-mu, w], [-w, -mu]] P^-1 with |w/mu| = ratio, a non-orthogonal P and anisotropic D
    rng = np.random.default_rng(seed)
    mu = rng.uniform(0.5, 1.5)
    P = np.array([[1.0, 0.5], [-0.3, 1.2]])
    A = P @ np.array([[-mu, ratio * mu], [-ratio * mu, -mu]]) @ np.linalg.inv(P)
    B = rng.normal(size=(2, 2))
    D = B @ B.T + 0.3 * np.eye(2)
    Si = np.linalg.inv(solve_continuous_lyapunov(A, -D))
    qp = quasipotential_grid(lambda z: z @ A.T, [0.0, 0.0], fitted_box(Si), 201, diffusion=D)
    # the slope near the attractor is about 60 cells here; the default radius stops at 24, which is enough
    assert qp.radius == 24
    assert inside_error(qp, lambda X: 0.5 * np.einsum("...i,ij,...j->...", X, Si, X)) < 0.01


def test_characteristic_slope_known_values():
    for r in (0.0, 3.0, 10.0):  # A = -I + r J, D = I: optimal paths x' = (I + r J) x, normals 2x: tan = r
        A = np.array([[-1.0, -r], [r, -1.0]])
        assert characteristic_slope(A, np.eye(2), np.eye(2) / 2) == pytest.approx(r, abs=1e-9)
    # a gradient drift with D = I on a mesh twice as fine in y: level sets of V = x^2 + 4 y^2 ...
    A = np.diag([-1.0, -4.0])
    Sigma = solve_continuous_lyapunov(A, -np.eye(2))
    assert characteristic_slope(A, np.eye(2), Sigma) == pytest.approx(0.0, abs=1e-9)
    # ... but in mesh units with h = (1, 2) paths and normals part: slope > 0
    assert characteristic_slope(A, np.eye(2), Sigma, (1.0, 2.0)) > 0.5


def test_grid_manufactured_and_maier_stein():
    b, D, U = manufactured(7)
    qp = quasipotential_grid(b, [0, 0], [(-1.5, 1.5), (-1.5, 1.5)], 129, diffusion=D)
    assert inside_error(qp, U) < 0.01
    ms = quasipotential_grid(maier_stein(1.0), [-1, 0], [(-2, 0.5), (-1.25, 1.25)], 129)
    assert float(ms([[0.0, 0.0]])[0]) == pytest.approx(0.5, rel=0.01)
    ms10 = quasipotential_grid(maier_stein(10.0), [-1, 0], [(-2, 0.5), (-1.25, 1.25)], 129)
    gmam = min_action_path(maier_stein(10.0), [-1, 0], [0, 0], init=[[-0.5, 0.4]]).action
    assert float(ms10([[0.0, 0.0]])[0]) == pytest.approx(gmam, rel=0.01)


# -- transition costs and energies --------------------------------------------------------------

def test_transition_costs_feed_fw_energies():
    res = transition_costs(maier_stein(1.0), [[-1, 0], [1, 0]], [[0, 0]])
    np.testing.assert_allclose(res.costs, [[0, 0.5], [0.5, 0]], atol=2e-4)
    # state-dependent noise: the shallower well (right) is the most visited
    w = DoubleWell(-1.0, 0.2, 1.0, 1.0)
    sig = lambda x: 1.2 + 1.8 * 0.5 * (1 - np.tanh((x - 0.2) / 0.3))  # noqa: E731
    res = transition_costs(lambda x: -w.grad(x), [[-1.0], [1.0]], [[0.2]],
                           diffusion=lambda X: (sig(X[:, 0]) ** 2)[:, None, None])
    fp = lambda x: (x + 1) * (x - 0.2) * (x - 1)  # noqa: E731
    exact = [quad(lambda x: 2 * fp(x) / sig(x) ** 2, -1, 0.2)[0], quad(lambda x: -2 * fp(x) / sig(x) ** 2, 0.2, 1)[0]]
    np.testing.assert_allclose([res.costs[0, 1], res.costs[1, 0]], exact, rtol=1e-3)
    assert fw_energies(res.costs).most_visited == 1 and w.f(1.0) > w.f(-1.0)


# -- bad input -------------------------------------------------------------------------------------

def test_bad_input_messages():
    with pytest.raises(TypeError, match="drift must be a function"):
        min_action_path(3.0, [0, 0], [1, 0])
    with pytest.raises(ValueError, match="same shape"):
        min_action_path(lambda x: x[:, :1], [0, 0], [1, 0])
    with pytest.raises(ValueError, match="not a stable point"):
        quasipotential_grid(maier_stein(1.0), [0.0, 0.0], [(-1, 1), (-1, 1)], 33)
    with pytest.raises(ValueError, match="not a fixed point"):
        quasipotential_grid(maier_stein(1.0), [-0.5, 0.3], [(-1, 1), (-1, 1)], 33)
    with pytest.raises(ValueError, match="positive definite"):
        min_action_path(lambda x: -x, [0, 0], [1, 0], diffusion=[[1.0, 0.0], [0.0, -1.0]])
    with pytest.raises(ValueError, match="symmetric"):
        quasipotential_grid(lambda x: -x, [0, 0], [(-1, 1), (-1, 1)], 33, diffusion=[[1.0, 0.5], [0.0, 1.0]])
    with pytest.raises(ValueError, match="positive definite; at x"):
        quasipotential_grid(lambda x: -x, [0, 0], [(-1, 1), (-1, 1)], 33,
                            diffusion=lambda X: (X[:, 0] + 0.5)[:, None, None] * np.eye(2))
    with pytest.raises(ValueError, match="bounds"):
        quasipotential_grid(lambda x: -x, [0, 0], [(1, -1), (-1, 1)], 33)
    with pytest.raises(ValueError, match="outside bounds"):
        quasipotential_grid(lambda x: -x, [0, 0], [(0.5, 1), (-1, 1)], 33)
    with pytest.raises(ValueError, match="different points"):
        min_action_path(lambda x: -x, [0, 0], [0, 0])
    with pytest.raises(ValueError, match="index-1 saddle"):
        transition_costs(maier_stein(1.0), [[-1, 0], [1, 0]], [[-1, 0]])


def test_state_dependent_anisotropic_diffusion_manufactured():
    """b = -1/2 D(x) grad U + J grad U has V = U for any state-dependent D: both solvers."""
    def D(X):
        out = np.empty((len(X), 2, 2))
        out[:, 0, 0], out[:, 1, 1] = 1 + 0.5 * X[:, 0] ** 2, 1 + 0.5 * X[:, 1] ** 2
        out[:, 0, 1] = out[:, 1, 0] = 0.3
        return out

    def b(x):
        g = torch.stack([x[:, 0] + x[:, 0] ** 3 + 0.3 * x[:, 1], 1.5 * x[:, 1] + 0.3 * x[:, 0]], 1)
        Dg = torch.stack([(1 + 0.5 * x[:, 0] ** 2) * g[:, 0] + 0.3 * g[:, 1], 0.3 * g[:, 0] + (1 + 0.5 * x[:, 1] ** 2) * g[:, 1]], 1)
        return -0.5 * Dg + 0.8 * torch.stack([g[:, 1], -g[:, 0]], 1)

    def U(p):
        p = np.asarray(p, dtype=float)
        return p[..., 0] ** 2 / 2 + 0.75 * p[..., 1] ** 2 + p[..., 0] ** 4 / 4 + 0.3 * p[..., 0] * p[..., 1]

    for end in ([1.0, 0.5], [-0.7, 0.8]):
        assert min_action_path(b, [0, 0], end, diffusion=D).action == pytest.approx(U(end), rel=2e-3)
    qp = quasipotential_grid(b, [0, 0], [(-1.5, 1.5), (-1.5, 1.5)], 129, diffusion=D)
    assert inside_error(qp, U) < 0.01


def test_mam_tight_spirals():
    """Foci with |Im| = 5.5 |Re| and 10 |Re|: the optimal path spirals out of the attractor with
    infinitely many turns; the linearised start keeps the default points accurate."""
    A = np.array([[0.12165889, -1.8473248], [1.56654877, -0.72165889]])  # eigenvalues -0.3 +- 1.648i
    P = np.array([[1.0, 0.4], [0.2, 1.0]])
    B = P @ np.array([[-0.2, 2.0], [-2.0, -0.2]]) @ np.linalg.inv(P)  # -0.2 +- 2i
    x = np.array([0.5, 0.3])
    for M, rel in ((A, 1e-4), (B, 5e-3)):
        V = 0.5 * x @ np.linalg.solve(solve_continuous_lyapunov(M, -np.eye(2)), x)
        res = min_action_path(lambda z, M=M: z @ torch.tensor(M).T, [0.0, 0.0], x)
        assert res.converged
        assert res.action == pytest.approx(V, rel=rel)


def test_mam_linearised_start_curve_finds_the_right_winding_of_a_focus():
    # a non-normal linear focus: the exact optimal path is the fluctuation flow, which one of the
    # default starts follows; single straight starts can stop on a curve that winds differently
    from scipy.linalg import solve_continuous_lyapunov

    P = np.array([[1.0, 0.6], [-0.3, 1.2]])
    A = P @ np.array([[-1.0, 1.5], [-1.5, -1.0]]) @ np.linalg.inv(P)
    Si = np.linalg.inv(solve_continuous_lyapunov(A, -np.eye(2)))
    end = np.array([0.9, -0.4])
    exact = 0.5 * end @ Si @ end
    res = min_action_path(lambda x: x @ A.T, [0.0, 0.0], end)
    assert res.start_actions.size == 4 and res.action == pytest.approx(exact, rel=1e-4)
