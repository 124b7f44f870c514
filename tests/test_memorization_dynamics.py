"""The memorization model in motion: generated-data gradients, the probe observer, saddles and
barriers from the landscape, the exact quasi-stationary exit rate."""

import math

import numpy as np
import pytest
import torch

from memdyn.dynamics import simulate
from memdyn.episodes import detect
from memdyn.landscapes import Quadratic
from memdyn.ldp.string import minimum_energy_path
from memdyn.memorization import GeneratedData, MemorizingLandscape, ProbeObserver, probe_states
from memdyn.memorization.theory import memorization_theory
from memdyn.noise import Gaussian
from memdyn.reference import quasi_stationary_exit_2d


def ring(n, r=1.0):
    ang = 2 * np.pi * np.arange(n) / n
    return r * np.stack([np.cos(ang), np.sin(ang)], 1)


S = ring(8)


def test_generated_data_alpha_one_is_gaussian_noise_and_alpha_zero_collapses():
    F = MemorizingLandscape(S, 0.1, 0.2)
    x0 = np.array([0.6, 0.1])
    g = simulate(F, Gaussian(20.0), 1e-3, 200, 64, init=x0, seed=5).final
    # same normals in the first D raw columns, the uniform column unused at alpha = 1
    h = simulate(F, GeneratedData(S, 0.1, 20.0, 1.0), 1e-3, 200, 64, init=x0, seed=5).final
    assert g.shape == h.shape and np.all(np.isfinite(h))
    # alpha = 0: pure self-consumption pulls every chain onto its nearest training point, for good
    z = simulate(F, GeneratedData(S, 0.1, 20.0, 0.0), 1e-3, 3000, 64, init=x0, seed=5).final
    np.testing.assert_allclose(z, np.broadcast_to(S[0], z.shape), atol=1e-6)


def test_generated_data_mean_gradient_mixes_fresh_and_own():
    noise = GeneratedData(S, 0.1, 1.0, 0.3)
    theta = torch.tensor([[0.8, 0.05]] * 20000, dtype=torch.float64)
    F = MemorizingLandscape(S, 0.1, 0.2)
    grad = F.grad(theta)
    raw = torch.empty((1, 20000, 3), dtype=torch.float64)
    noise.draw(torch.Generator().manual_seed(0), raw)
    g = grad.clone()
    noise.add_to(g, raw[0], theta)
    own = (theta[0] - torch.as_tensor(S[0])) / 0.01
    expect = 0.3 * grad[0] + 0.7 * own
    se = g.std(0) / math.sqrt(20000)
    assert torch.all((g.mean(0) - expect).abs() < 5 * se + 1e-9)


@pytest.mark.parametrize("alpha", [-0.1, 1.5])
def test_generated_data_rejects_alpha_outside_unit_interval(alpha):
    with pytest.raises(ValueError, match="alpha"):
        GeneratedData(S, 0.1, 1.0, alpha)


def test_probe_observer_equals_offline_detection_and_chunking():
    F = MemorizingLandscape(S, 0.1, 0.2)
    kw = dict(init=S[np.arange(2100) % 8], seed=2)
    from memdyn.observers import Trace
    sim = simulate(F, Gaussian(30.0), 1e-3, 300, 2100, observers=[ProbeObserver(S, raster_probes=5), Trace(chains=range(40))],
                   **kw)
    rec = sim["probes"]
    tr = sim["trace"]
    labels = np.stack([probe_states(tr.values[t], S).label for t in range(tr.values.shape[0])], 1)
    from memdyn.episodes import core_sets
    off = detect(core_sets(labels))
    sel = rec.episodes.chain < 40
    np.testing.assert_array_equal(rec.episodes.length[sel], off.length)
    np.testing.assert_array_equal(rec.episodes.state[sel], off.state)
    np.testing.assert_array_equal(rec.raster, core_sets(labels)[:5])
    again = simulate(F, Gaussian(30.0), 1e-3, 300, 2100, observers=[ProbeObserver(S)], chunk_size=1024, **kw)["probes"]
    np.testing.assert_array_equal(again.episodes.length, rec.episodes.length)
    np.testing.assert_array_equal(again.memorized_steps, rec.memorized_steps)


def test_string_method_finds_the_saddle_of_a_known_landscape():
    from memdyn.landscapes import DoubleWell
    from memdyn.landscapes import BentDoubleWell
    land = BentDoubleWell(DoubleWell(-1.0, 0.2, 1.0), 2.0, 0.25)
    crit = land.critical_points()
    p = minimum_energy_path(land, crit[0].location, crit[2].location)
    np.testing.assert_allclose(p.saddle, crit[1].location, atol=1e-8)
    assert p.barrier == pytest.approx(float(land.value(torch.as_tensor(crit[1].location[None]))[0]
                                            - land.value(torch.as_tensor(crit[0].location[None]))[0]), rel=1e-9)


def test_theory_barriers_match_the_gradient_closed_form_and_symmetry():
    for n, h, c, sigma in ((8, 0.1, 0.2, 28.0), (6, 0.12, 0.15, 20.0)):
        th = memorization_theory(MemorizingLandscape(ring(n), h, c), sigma)
        assert th.minima.shape == (n + 1, 2)
        np.testing.assert_allclose(th.exit_barrier, th.gradient_barrier, rtol=1e-3)  # gMAM accuracy
        assert np.ptp(th.exit_barrier[:n]) < 1e-3 * th.exit_barrier[0]  # the ring's symmetry
        assert th.energies.E[-1] > 0  # memorizing states are the long-run favourites here


def test_theory_refuses_merged_wells():
    with pytest.raises(ValueError, match="no memorizing minimum"):
        memorization_theory(MemorizingLandscape(ring(8), 0.4, 0.2), 10.0)


def test_quasi_stationary_exit_of_a_disc_in_a_quadratic_well_against_simulation():
    F = Quadratic(np.diag([4.0, 4.0]))
    a, sigma = 0.02, 4.0
    inside = lambda P: np.hypot(P[:, 0], P[:, 1]) < 0.35  # noqa: E731
    q = quasi_stationary_exit_2d(F, sigma, a, inside, ((-0.5, 0.5), (-0.5, 0.5)))
    assert q.rate.bias < 0.02 * q.rate.value and 0 < q.mixing < 1
    # simulate: residual lives beyond k0 are geometric with mean 1/kappa
    from memdyn.observers import Trace
    sim = simulate(F, Gaussian(sigma), a, 4000, 2000, init=[0.0, 0.0], seed=3,
                   observers=[Trace(every=1)])
    r = np.hypot(sim["trace"].values[..., 0], sim["trace"].values[..., 1])
    out = (r >= 0.35).argmax(axis=0)
    exited = (r >= 0.35).any(axis=0)
    k0 = int(math.ceil(math.log(1e-3) / math.log(q.mixing)))
    keep = out > k0
    events = int(np.sum(exited & keep))
    exposure = float(np.sum(np.where(exited, out, 4000)[keep | ~exited] - k0))
    mean, se = exposure / events, exposure / events / math.sqrt(events)
    assert abs(mean - q.mean) < 4 * se + q.rate.bias / q.rate.value * q.mean
