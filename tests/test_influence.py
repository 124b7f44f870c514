"""Per-parameter influence and relaxation times on models whose split is known."""

import math

import numpy as np
import pytest
import torch

from memdyn.influence import influence, relaxation_times


class S1Quadratic(torch.nn.Module):
    """F(x, y) = 1/2 sum lam_i x_i^2 + eps (1/2 sum mu_k y_k^2 + x . B y): p strong, q weak."""

    def __init__(self, p=4, q=40, eps=0.05, coupling=0.3, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.eps = eps
        self.x = torch.nn.Parameter(torch.randn(p, generator=g, dtype=torch.float64))
        self.y = torch.nn.Parameter(torch.randn(q, generator=g, dtype=torch.float64))
        self.lam = torch.ones(p, dtype=torch.float64)
        self.mu = torch.ones(q, dtype=torch.float64)
        self.B = coupling * torch.randn(p, q, generator=g, dtype=torch.float64) / math.sqrt(q)

    def loss(self, shift=0.0):
        x, y = self.x - shift, self.y
        return 0.5 * (self.lam * x * x).sum() + self.eps * (0.5 * (self.mu * y * y).sum() + x @ self.B @ y)


def _loss(model, batch):
    return model.loss(batch)


@pytest.mark.parametrize("eps", [0.02, 0.1])
def test_hessian_influence_recovers_eps(eps):
    model = S1Quadratic(eps=eps)
    inf = influence(model, _loss, [0.0] * 4, method="hessian", probes=16, seed=1)
    split = inf.split()
    assert split.n_strong == 4 and split.strong[:4].all()
    assert split.eps_se > 0
    assert abs(split.eps - eps) <= 4 * split.eps_se + 1e-12
    assert split.gap == pytest.approx(-math.log(eps), rel=0.2)


def test_split_by_share_of_the_total_influence():
    from memdyn.influence import Influence

    reps = np.array([[4.0, 1.0, 3.0, 2.0, 0.5, 0.5], [4.0, 1.0, 3.0, 2.0, 0.5, 0.5]])
    inf = Influence(reps.mean(axis=0), reps, [("w", (6,), 0)], "hessian")
    sp = inf.split(mass=0.5)  # total 11: 4 + 3 = 7 >= 5.5, 4 alone is not
    assert sp.strong.tolist() == [True, False, True, False, False, False]
    assert sp.eps == pytest.approx(np.mean([1.0, 2.0, 0.5, 0.5]) / 3.5)
    assert inf.split(mass=0.99).n_strong == 5  # at least one weak coordinate stays
    with pytest.raises(ValueError, match="mass must be in \\(0, 1\\)"):
        inf.split(mass=1.0)
    with pytest.raises(ValueError, match="strong or mass, not both"):
        inf.split(strong=2, mass=0.5)


def test_gradient_influence_recovers_eps_away_from_the_minimum():
    eps = 0.05
    model = S1Quadratic(eps=eps, coupling=0.0)
    with torch.no_grad():
        model.x.fill_(1.0)
        model.y.fill_(1.0)
    # batches shift the minimum of x: dF/dx = x - shift, dF/dy = eps y; mean shift 0
    shifts = [0.2, -0.2, 0.1, -0.1]
    inf = influence(model, _loss, shifts, method="gradient")
    split = inf.split(strong=4)
    assert abs(split.eps - eps) <= 4 * split.eps_se + 1e-9


def test_resample_influence_is_the_definition():
    model = S1Quadratic(p=2, q=6, eps=0.1, coupling=0.0)
    with torch.no_grad():
        model.x.zero_()
        model.y.zero_()
    s = 0.5
    inf = influence(model, _loss, [0.0], method="resample", scale=s, draws=4000, seed=2)
    # at the minimum |F(theta + s Z e_j) - F| = (curvature / 2) s^2 Z^2: mean (curvature / 2) s^2
    expect = np.r_[np.full(2, 0.5 * s * s), np.full(6, 0.1 * 0.5 * s * s)]
    assert np.all(np.abs(inf.values - expect) <= 4 * inf.se)
    assert inf.split().n_strong == 2


def test_relaxation_times_of_the_groups():
    eps, lr = 0.05, 0.2
    model = S1Quadratic(eps=eps, coupling=0.0)
    before = [p.detach().clone() for p in model.parameters()]
    strong = np.r_[np.ones(4, bool), np.zeros(40, bool)]
    rel = relaxation_times(model, _loss, [0.0], {"strong": strong, "weak": ~strong}, lr=lr, steps=400)
    assert rel.time["strong"] == pytest.approx(-1 / math.log(1 - lr), rel=1e-6)
    assert rel.time["weak"] == pytest.approx(-1 / math.log(1 - lr * eps), rel=1e-6)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_relaxation_times_with_an_optimizer():
    """torch's SGD reproduces the plain steps; an optimizer's state (here SGD momentum) changes the
    relaxation exactly as its recursion says: on a quadratic every coordinate of a group (curvature
    lambda) follows c_{k+1} = c_k - lr v_{k+1}, v_{k+1} = m v_k + lambda c_k, v_0 = 0."""
    eps, lr, mom = 0.05, 0.2, 0.5
    model = S1Quadratic(eps=eps, coupling=0.0)
    strong = np.r_[np.ones(4, bool), np.zeros(40, bool)]
    groups = {"strong": strong, "weak": ~strong}
    plain = relaxation_times(model, _loss, [0.0], groups, lr=lr, steps=400)
    sgd = relaxation_times(model, _loss, [0.0], groups, steps=400, optimizer=lambda ps: torch.optim.SGD(ps, lr=lr))
    assert sgd.time == pytest.approx(plain.time, rel=1e-9)
    heavy = relaxation_times(model, _loss, [0.0], groups, steps=60,
                             optimizer=lambda ps: torch.optim.SGD(ps, lr=lr, momentum=mom))
    for k, lam in (("strong", 1.0), ("weak", eps)):
        c, v, expect = 1.0, 0.0, [1.0]
        for _ in range(60):
            v = mom * v + lam * c
            c -= lr * v
            expect.append(abs(c))
        d = heavy.distance[k]
        assert np.allclose(d / d[0], expect, rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="need lr > 0 \\(or an optimizer\\)"):
        relaxation_times(model, _loss, [0.0], groups, steps=10)


def test_on_networks_the_tests_build():
    from memdyn.diffusion import ResidualMLP, SmallUNet

    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 1, 8, 8, generator=g)
    t = torch.randint(0, 1000, (8,), generator=g)
    for net in (ResidualMLP((1, 8, 8), width=16, depth=1), SmallUNet((1, 8, 8), base=8)):
        def loss(m, batch):
            return (m(batch[0], batch[1]) - batch[0]).pow(2).mean()

        for method in ("hessian", "gradient"):
            inf = influence(net, loss, [(x, t)], method=method, probes=2)
            n = sum(p.numel() for p in net.parameters())
            assert inf.values.shape == (n,) and np.isfinite(inf.values).all() and (inf.values >= 0).all()
            sp = inf.split()
            assert 1 <= sp.n_strong < n and np.isfinite(sp.eps)
            assert set(inf.by_parameter()["parameter"]) == {k for k, _ in net.named_parameters()}


def test_bad_input():
    model = S1Quadratic()
    with pytest.raises(ValueError, match="method"):
        influence(model, _loss, [0.0], method="fisher")
    with pytest.raises(ValueError, match="batches is empty"):
        influence(model, _loss, [])
    with pytest.raises(ValueError, match="strong must be in"):
        influence(model, _loss, [0.0]).split(strong=0)
    with pytest.raises(ValueError, match="boolean mask over the 44"):
        relaxation_times(model, _loss, [0.0], {"a": np.ones(3, bool)}, lr=0.1, steps=5)
