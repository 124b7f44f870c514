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
    noise.sample_gradient(g, raw[0], theta, torch.ones((20000, 1), dtype=torch.float64))
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


def test_modulated_landscape_moves_c_on_the_slow_path_and_leaves_x_gradient_unchanged():
    from memdyn.memorization import ModulatedMemorizingLandscape
    base = MemorizingLandscape(S, 0.1, 0.2)
    mod = ModulatedMemorizingLandscape(base, 0.05, 0.2, 0.1, 1.25)
    th = torch.tensor([[0.9, 0.1, 0.4], [0.2, -0.3, 0.0]], dtype=torch.float64)
    g = mod.grad(th)
    for i, y in enumerate((0.4, 0.0)):
        ref = base.at(float(mod.c_of(y))).grad(th[i:i + 1, :2])
        torch.testing.assert_close(g[i, :2], ref[0])
        assert float(g[i, 2]) == pytest.approx(0.1 * (y - 1.25))
    # no noise on y: the engine follows y_k = y_t + (y_0 - y_t)(1 - a eps)^k exactly
    sim = simulate(mod, Gaussian(20.0, scales=[1, 1, 0]), 1e-3, 500, 8, init=[1.0, 0.0, 0.0], seed=0)
    np.testing.assert_allclose(sim.final[:, 2], mod.slow_path(0.0, 1e-3, 500), rtol=1e-12)


def test_gap_sign_change_agrees_with_fw_energies_from_minimum_action_paths():
    from memdyn.memorization.theory import energy_gap, gap_sign_change
    base = MemorizingLandscape(S, 0.1, 0.2)
    cs = gap_sign_change(base, 28.0, 0.05, 0.2)
    assert 0.05 < cs < 0.2 and abs(energy_gap(base.at(cs), 28.0)) < 1e-12
    for c in (cs - 0.01, cs + 0.01):
        th = memorization_theory(base.at(c), 28.0)
        gap = th.energies.E[:8].min() - th.energies.E[8]
        assert gap == pytest.approx(energy_gap(base.at(c), 28.0), rel=2e-3, abs=2e-3 * th.exit_barrier[0])
    with pytest.raises(ValueError, match="does not change sign"):
        gap_sign_change(base, 28.0, 0.12, 0.2)


def test_time_scale_recovers_a_known_stretch_and_survival_is_exp_of_summed_rates():
    from memdyn.memorization.sweeps import survival, time_scale
    rng = np.random.default_rng(0)
    steps = np.arange(0, 2000, 10.0)
    f = lambda k: 0.2 + 0.6 / (1 + np.exp(-(k - 800) / 150))  # noqa: E731
    hist = rng.random((800, steps.size)) < f(steps / 1.2)  # the truth is stretched by 1.2
    ts = time_scale(hist, steps, f, n_boot=50)
    assert abs(ts.s - 1.2) < 4 * ts.se and ts.se < 0.03
    c = np.linspace(0.1, 0.2, 5)
    s, bias = survival(c, np.log(0.001 + 0 * c), np.full(300, 0.15))
    assert s == pytest.approx(math.exp(-0.3)) and bias < 1e-12


def test_probe_observer_history_matches_memorized_counts():
    F = MemorizingLandscape(S, 0.1, 0.2)
    sim = simulate(F, Gaussian(30.0), 1e-3, 200, 300, init=S[np.arange(300) % 8], seed=4,
                   observers=[ProbeObserver(S, every=2, history_every=4)])
    r = sim["probes"]
    assert r.history.shape == (300, 51)
    np.testing.assert_array_equal(r.history.sum(axis=0), r.memorized_count[::2])
    assert r.steps[-1] == 200 and r.memorized_steps.sum() == r.memorized_count.sum()
    with pytest.raises(ValueError, match="history_every"):
        ProbeObserver(S, every=2, history_every=3)


def test_survival_2d_matches_simulation_of_a_well_whose_centre_moves():
    from memdyn.reference import survival_2d
    a, sigma, K = 0.02, 4.0, 150
    lands = [Quadratic(np.diag([4.0, 4.0]), center=[0.0, 0.0]), Quadratic(np.diag([4.0, 4.0]), center=[0.2, 0.0])]
    t = np.linspace(0.0, 1.0, K)
    W = np.stack([1 - t, t], 1)  # the well's centre slides toward the disc's edge: the operator interpolates it
    inside = lambda P: np.hypot(P[:, 0], P[:, 1]) < 0.35  # noqa: E731
    ext = survival_2d(lands, sigma, a, inside, ((-0.5, 0.5), (-0.5, 0.5)), [0.0, 0.0], W)
    # the same chain simulated: the drift at step k is the interpolated one (linear in the centre)
    rng = np.random.default_rng(0)
    x = np.zeros((20000, 2))
    alive = np.ones(20000, dtype=bool)
    for k in range(K):
        centre = np.array([0.2 * t[k], 0.0])
        x = x - a * 4.0 * (x - centre) - a * sigma * rng.standard_normal(x.shape)
        alive &= np.hypot(x[:, 0], x[:, 1]) < 0.35
    p = alive.mean()
    assert abs(p - ext.value) < 4 * math.sqrt(p * (1 - p) / 20000) + ext.bias


def test_quasi_stationary_exit_with_no_own_steps_is_the_gaussian_chain():
    F = Quadratic(np.diag([4.0, 4.0]))
    inside = lambda P: np.hypot(P[:, 0], P[:, 1]) < 0.35  # noqa: E731
    box = ((-0.5, 0.5), (-0.5, 0.5))
    plain = quasi_stationary_exit_2d(F, 4.0, 0.02, inside, box)
    mixed = quasi_stationary_exit_2d(F, 4.0, 0.02, inside, box, deterministic=(0.0, lambda P: P))
    assert mixed.rate.value == pytest.approx(plain.rate.value, rel=1e-10)
    # own steps that pull to the centre only slow the exits
    pulled = quasi_stationary_exit_2d(F, 4.0, 0.02, inside, box, deterministic=(0.3, lambda P: 4.0 * P))
    assert pulled.rate.value < 0.8 * plain.rate.value
