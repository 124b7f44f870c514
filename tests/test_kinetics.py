"""One-dimensional kinetic models: the likelihood's gradient, recovery of a known chain, predictions at a
temperature never simulated (against the exact discrete chain), and a poor coordinate flagged."""

import importlib.util
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy.linalg import expm

from memdyn import ReactionCoordinateModel, implied_timescales
from memdyn.claims import Z_TOL
from memdyn.kinetics import _loglik, _mfpt, _rate_matrix


def test_the_likelihood_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    n = 9
    C = rng.integers(0, 60, (n, n)).astype(float)
    excess = C.sum(1) - C.sum(0)
    theta = np.concatenate([rng.normal(size=n), 0.3 * rng.normal(size=n - 1)])
    f, g = _loglik(theta, C, 0.7, 0.5, excess)
    eye = np.eye(theta.size)
    num = np.array([(_loglik(theta + 1e-6 * e, C, 0.7, 0.5, excess)[0]
                     - _loglik(theta - 1e-6 * e, C, 0.7, 0.5, excess)[0]) / 2e-6 for e in eye])
    np.testing.assert_allclose(g, num, rtol=1e-5, atol=1e-4 * np.abs(g).max())


def test_the_fit_recovers_a_known_smoluchowski_chain():
    """Trajectories of the bin chain itself (propagated exactly at the lag): the fitted model's mean first
    passage agrees with the true chain's within its bootstrap error."""
    n, h, tau = 12, 0.25, 0.2
    r = (np.arange(n) + 0.5) * h
    F = 3 * np.cos(2 * np.pi * r / (n * h)) ** 2          # two wells, at the ends, barrier 3 in the middle
    logD = np.log(0.2 + 0.1 * np.sin(np.arange(n - 1)))   # D varying along the coordinate
    P = expm(_rate_matrix(F, logD, h) * tau)
    rng = np.random.default_rng(5)
    traj, steps = 60, 3000
    s = np.empty((traj, steps), dtype=int)
    s[:, 0] = rng.integers(0, n, traj)
    cum = np.cumsum(P, axis=1)
    for k in range(1, steps):
        s[:, k] = np.minimum((rng.random(traj)[:, None] > cum[s[:, k - 1]]).sum(1), n - 1)
    traces = r[s]
    model = ReactionCoordinateModel.fit(traces, 1.0, bins=np.arange(n + 1) * h, lag=1, dt=tau, n_boot=30)
    exact = _mfpt(F - F.min(), logD, h, 0, r >= r[-1])
    value, se = model.mean_first_passage(r[0], r[-1], return_se=True)
    assert se > 0 and abs(value - exact) < Z_TOL * se, (value, se, exact)
    assert model.converged
    # the free energy of the barrier bins, and D in the middle, within their errors
    fb = model.boot[:, :n]
    np.testing.assert_array_less(np.abs(model.F - (F - F.min()))[3:9], Z_TOL * fb.std(0, ddof=1)[3:9])


def _example():
    """examples/kinetics_double_well.py: its Euler-Maruyama loop and exact references are the validation's."""
    path = Path(__file__).resolve().parent.parent / "examples" / "kinetics_double_well.py"
    spec = importlib.util.spec_from_file_location("kinetics_double_well", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_double_well_predicts_the_exit_time_at_a_temperature_it_never_saw():
    """Fit at T = 0.25, predict the mean passage from -1 to 0.95 at T = 0.18 (about 4.5 times longer): the
    prediction agrees with the exact discrete chain (the same Euler-Maruyama iteration, solved exactly) within
    its bootstrap error and the finite-step bias (the discrete chain minus its SDE limit, computed)."""
    ex = _example()
    T1, T2 = 0.25, 0.18
    model = ReactionCoordinateModel.fit(ex.simulate(T1, 200, 30000, seed=11), T1, bins=45, dt=ex.DT * ex.EVERY,
                                        n_boot=30, seed=1)
    assert model.converged, model.diagnosis
    for T in (T1, T2):
        exact, bias = ex.exact(T)                          # the discrete chain, and its distance to the SDE limit
        value, se = model.at_temperature(T).mean_first_passage(-1.0, 0.95, return_se=True)
        assert abs(value - exact) < Z_TOL * math.hypot(se, bias), (T, value, se, exact, bias)
    # U = T (F - ln D) is the landscape's barrier (1) up to the bins' averaging of the density
    V, V_se = model.barrier(-1.0, 0.0)
    assert abs(V - 1.0) < 0.1 and V_se > 0


def test_at_temperature_keeps_the_quasi_potential_and_scales_the_diffusion():
    ex = _example()
    m = ReactionCoordinateModel.fit(ex.simulate(0.3, 20, 6000, seed=2), 0.3, bins=20, dt=ex.DT * ex.EVERY, n_boot=3)
    m2 = m.at_temperature(0.15)
    np.testing.assert_allclose(m2.quasi_potential(), m.quasi_potential(), atol=1e-12)
    np.testing.assert_allclose(m2.diffusion(0.0), m.diffusion(0.0) / 2)
    assert m2.boot.shape == m.boot.shape
    U, U_se = m.quasi_potential(return_se=True)   # its pointwise bootstrap error, one per bin
    assert U_se.shape == U.shape and np.all(U_se >= 0) and np.allclose(U, m.quasi_potential())
    # colder: longer passages, and a higher free-energy barrier in units of the temperature
    assert m2.mean_first_passage(-1, 0.9) > m.mean_first_passage(-1, 0.9)
    assert m2.free_energy(0.0) - m2.free_energy(-1.0) > m.free_energy(0.0) - m.free_energy(-1.0)


def test_a_coordinate_that_hides_the_slow_variable_is_flagged():
    """x follows a slow double-well variable y only weakly (U = (y^2 - 1)^2 + 2 (x - 0.3 y)^2): binned x is
    not Markovian, its implied time scales keep rising with the lag, and the model says so."""
    rng = np.random.default_rng(0)
    T, dt, traj, steps = 0.25, 0.01, 60, 30000
    x, y = np.zeros(traj), -np.ones(traj)
    out = np.empty((traj, steps // 5))
    s = math.sqrt(2 * T * dt)
    for k in range(steps):
        gx = 4 * (x - 0.3 * y)
        gy = 4 * y * (y * y - 1) - 1.2 * (x - 0.3 * y)
        x, y = x - gx * dt + s * rng.standard_normal(traj), y - gy * dt + s * rng.standard_normal(traj)
        if (k + 1) % 5 == 0:
            out[:, k // 5] = x
    its = implied_timescales(out, [1, 4, 16, 64], bins=30, dt=0.05)
    assert np.all(np.diff(its.timescales[:, 0]) > 0) and its.leveled_lag() is None
    with pytest.warns(UserWarning, match="not Markovian"):
        m = ReactionCoordinateModel.fit(out, T, bins=30, dt=0.05, n_boot=0)
    assert not m.converged and "not Markovian" in m.diagnosis


def test_exit_time_is_the_slowest_decay_of_the_chain_absorbed_at_end():
    """exit_time is -1 / (largest eigenvalue of the generator restricted to start's side of end), checked
    against a dense eigen-solve; for a high barrier it is the mean first passage from the well's bottom
    within the time of relaxing inside the well."""
    ex = _example()
    m = ReactionCoordinateModel.fit(ex.simulate(0.25, 40, 8000, seed=3), 0.25, bins=30, dt=ex.DT * ex.EVERY,
                                    n_boot=4, seed=3)
    K = m.rate_matrix()
    inside = m.centers < 0.95
    dense = -1 / np.linalg.eigvals(K[np.ix_(inside, inside)]).real.max()
    t, se = m.exit_time(-1.0, 0.95, return_se=True)
    assert t == pytest.approx(dense, rel=1e-9) and se > 0
    cold = m.at_temperature(0.15)
    assert cold.exit_time(-1.0, 0.95) == pytest.approx(cold.mean_first_passage(-1.0, 0.95),
                                                       abs=3 * cold.relaxation_time() + 1e-9)
    # on the log scale: ln of the same time, its error from the replicates' ln (a wide spread is not symmetric)
    t1, se1 = m.mean_first_passage(-1.0, 0.95, return_se=True)
    lt, lse = m.mean_first_passage(-1.0, 0.95, return_se=True, log=True)
    assert lt == pytest.approx(math.log(t1)) and lse == pytest.approx(se1 / t1, rel=0.5)
    # from the other side: the well on the right, end to its left
    assert m.exit_time(1.0, -0.95) > 0
    with pytest.raises(ValueError, match="end"):
        m.exit_time(-1.0, 50.0)


def test_a_grouped_bootstrap_resamples_whole_groups():
    """Trajectories in groups (the probes of one training run) are resampled together: with two groups
    that are copies of each other, every replicate sees the same counts, so the bootstrap se is 0."""
    ex = _example()
    x = ex.simulate(0.3, 10, 4000, seed=4)
    twice = np.concatenate([x, x])
    m = ReactionCoordinateModel.fit(twice, 0.3, bins=15, dt=ex.DT * ex.EVERY, lag=1, n_boot=4,
                                    groups=np.repeat([0, 1], 10))
    stat, _ = m.error_parts(-1.0, 0.9)
    assert stat < 1e-6 * m.mean_first_passage(-1.0, 0.9)
    free = ReactionCoordinateModel.fit(twice, 0.3, bins=15, dt=ex.DT * ex.EVERY, lag=1, n_boot=4)
    assert free.error_parts(-1.0, 0.9)[0] > 0


def test_ln_d1_d2_on_the_memorization_model_is_flagged_as_a_poor_coordinate():
    """On the memorization model's landscape ln(d1/d2) does not see where along its level sets a chain
    stands (the barrier crossing is inward, the episode's end at d1/d2 = 0.6 all round): its implied
    time scales keep rising with the lag, and the model says so (examples/kinetics_memorization.py
    shows its predictions off by up to 7 errors)."""
    path = Path(__file__).resolve().parent.parent / "examples" / "kinetics_memorization.py"
    spec = importlib.util.spec_from_file_location("kinetics_memorization", path)
    ex = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ex)
    r = ex.coordinate(ex.A_FIT, 32, 12800, seed=140)
    with pytest.warns(UserWarning, match="not Markovian"):
        m = ReactionCoordinateModel.fit(r, ex.A_FIT, bins=40, range=(-4.5, 0.0), dt=ex.A_FIT, n_boot=0)
    assert not m.converged and np.all(np.diff(m.implied.timescales[:, 0]) > 0)


@pytest.mark.parametrize("kwargs, match", [
    ({"traces": np.zeros((3, 1))}, "traces"),
    ({"traces": np.full((2, 10), np.inf)}, "traces"),
    ({"temperature": 0.0}, "temperature"),
    ({"dt": -1.0}, "dt"),
    ({"bins": 2}, "bins"),
    ({"bins": [0.0, 1.0, 3.0, 4.0]}, "uniformly"),
    ({"lag": 500}, "lag"),
    ({"range": (1.0, 1.0)}, "range"),
    ({"groups": [0, 0]}, "groups"),
    ({"groups": [0, 1, 2]}, "groups"),
])
def test_bad_input_names_the_field(kwargs, match):
    args = {"traces": np.sin(np.arange(400) / 7.0)[None, :] + np.zeros((2, 1)), "temperature": 1.0, "bins": 8}
    args.update(kwargs)
    traces, temperature = args.pop("traces"), args.pop("temperature")
    with warnings.catch_warnings(), pytest.raises(ValueError, match=match):
        warnings.simplefilter("ignore")
        ReactionCoordinateModel.fit(traces, temperature, **args)


def test_an_empty_bin_inside_the_data_is_an_error():
    traces = np.concatenate([np.linspace(0, 1, 200), np.linspace(2, 3, 200)])[None, :]
    with pytest.raises(ValueError, match="no sample"):
        ReactionCoordinateModel.fit(traces, 1.0, bins=9, lag=1, n_boot=0)
