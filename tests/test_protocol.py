"""The measurement protocol for episodes in real training, on processes with known answers."""

import math

import numpy as np
import pytest

from memdyn.claims import Z_TOL
from memdyn.episodes import core_sets, detect
from memdyn.protocol import MIN_RUNS, bootstrap_over_runs, mean_episode_length, resolution, stationarity

P_OUT, R_BACK, Q_FREE = 0.01, 0.5, 0.1


def core_labels(probes, steps, seed, u):
    """A probe's core label every step: a memorizing core (0), the band between cores (-1) and the free
    core (1). From the core it steps into the band with probability P_OUT; from the band back into the
    core with R_BACK or into the free core with Q_FREE; from the free core into the band with u.
    The mean memorizing core-set episode (entry into core 0 until entry into the free core) is exactly
    ((R_BACK + Q_FREE) / P_OUT + 1) / Q_FREE steps (first passage of a three-state chain)."""
    rng = np.random.default_rng(seed)
    s = np.full(probes, 2)  # 0 core, 1 band, 2 free
    out = np.empty((probes, steps), dtype=np.int64)
    for t in range(steps):
        v = rng.random(probes)
        s = np.where(s == 0, np.where(v < P_OUT, 1, 0),
                     np.where(s == 1, np.where(v < R_BACK, 0, np.where(v < R_BACK + Q_FREE, 2, 1)),
                              np.where(v < u, 1, 2)))
        out[:, t] = s
    return np.where(out == 0, 0, np.where(out == 2, 1, -1))


EXACT = ((R_BACK + Q_FREE) / P_OUT + 1) / Q_FREE  # 610 steps


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_resolution_converged_when_short_exits_are_rare_and_equal_to_the_exact_mean(seed):
    """Free stays of ~2000 steps: thinning to 4 steps misses almost none, the two finest spacings agree
    and the mean is the exact first-passage time within its error (bootstrap over 5 runs)."""
    runs = [core_labels(64, 20000, 10 * seed + r, u=0.0005) for r in range(MIN_RUNS)]
    res = resolution(runs, 1, free=1, seed=seed)
    assert res.converged and res.bias == 0 and res.value == res.mean[0]
    assert abs(res.value - EXACT) <= Z_TOL * res.value_se
    assert res.mean[0] == pytest.approx(mean_episode_length(runs, 1, free=1))
    assert np.all(np.diff(res.mean) > 0)  # coarser checkpoints merge episodes across missed free stays


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_resolution_flags_a_spacing_that_misses_exits_and_extrapolates_to_zero(seed):
    """Free stays of ~50 steps seen every 8, 32 and 128 steps: the mean grows with the spacing, the
    measurement is flagged as not converged, and the extrapolation to spacing 0 recovers the exact
    mean within its error and stated bias (the finest spacing alone is off by many errors)."""
    runs = [core_labels(64, 20000, 100 + 10 * seed + r, u=0.02)[:, ::8] for r in range(MIN_RUNS)]
    res = resolution(runs, 8, free=1, seed=seed)
    assert not res.converged and res.difference_z > Z_TOL
    assert abs(res.value - EXACT) <= Z_TOL * res.value_se + res.bias
    assert abs(res.mean[0] - EXACT) > Z_TOL * res.se[0]
    assert np.isnan(resolution(runs, 8, factors=(1, 4), free=1).bias)  # two spacings: no stated bias


def test_mean_episode_length_counts_stays_running_at_the_window_start():
    """Two kinds of probes in their stationary law, half leaving a memorized state at rate 1/2000 per
    step (as long as the window) and half at 1/50, all entering at 1/100: the stationary mean episode
    length is (pi_A + pi_B) / (pi_A p_A + pi_B p_B) = 179.9 steps. Counting the time and exits of the
    stays already running at the window's start recovers it; counting only stays that start inside
    the window selects the short-lived probes (about 100 steps)."""
    p = np.repeat([1 / 2000, 1 / 50], 32)
    q = 1 / 100
    pi = q / (q + p)
    exact = pi.sum() / (pi * p).sum()
    runs = []
    for r in range(MIN_RUNS):
        rng = np.random.default_rng(500 + r)
        s = rng.random(64) < pi  # memorized at the start, from the stationary law
        out = np.empty((64, 2000), dtype=np.int64)
        for t in range(2000):
            v = rng.random(64)
            s = np.where(s, v >= p, v < q)
            out[:, t] = np.where(s, 0, 1)
        runs.append(out)
    res = resolution(runs, 1, factors=(1, 2), free=1, seed=0)
    assert abs(res.value - exact) <= Z_TOL * res.value_se and res.value_se < 0.15 * exact
    started = [detect(core_sets(r)) for r in runs]
    inside = sum(e.length[(e.state == 0) & ~e.left_censored].sum() for e in started)
    ended = sum(((e.state == 0) & ~e.left_censored & ~e.right_censored).sum() for e in started)
    assert inside / ended < 0.7 * exact


def test_bootstrap_over_runs_carries_the_run_to_run_variance():
    """Runs with their own offsets (sd 1) and probes around them (sd 1): the two-level bootstrap's error
    of the grand mean is that of runs and probes together, sqrt(1/R + 1/(R P)) (times sqrt((R-1)/R), the
    bootstrap's own shrinkage), not the probes-only sqrt(2/(R P))."""
    rng = np.random.default_rng(0)
    R, P = 8, 20
    ses = []
    for rep in range(40):
        runs = [rng.normal(rng.normal(0, 1), 1, P) for _ in range(R)]
        ses.append(bootstrap_over_runs(runs, lambda rs: np.mean(np.concatenate(rs)), n_boot=200, seed=rep).std(ddof=1))
    expected = math.sqrt((R - 1) / R) * math.sqrt(1 / R + 1 / (R * P))
    assert abs(np.mean(ses) - expected) < 0.1 * expected
    assert np.mean(ses) > 2.5 * math.sqrt(2 / (R * P))
    two = bootstrap_over_runs(runs, lambda rs: [np.mean(rs[0]), len(rs)], n_boot=5)
    assert two.shape == (5, 2) and np.all(two[:, 1] == R)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stationarity_cuts_the_transient_and_flags_a_drift(seed):
    """f_mem relaxing as 0.5 - 0.4 exp(-t / 60) under AR(1) noise: the window starts after the transient
    (between 1 and 5 relaxation times) and the halves agree; a steady drift is flagged."""
    rng = np.random.default_rng(seed)
    n, t = 1000, np.arange(1000)
    e = np.zeros(n)
    for i in range(1, n):
        e[i] = 0.8 * e[i - 1] + 0.03 * rng.standard_normal()
    st = stationarity(0.5 - 0.4 * np.exp(-t / 60) + e)
    assert 60 <= st.start <= 300 and st.settled and abs(st.z) <= Z_TOL
    drift = stationarity(0.2 + 0.0005 * t + e)
    assert not drift.settled and drift.z > Z_TOL


def test_stationarity_over_runs_has_the_error_of_independent_repeats():
    """Memorized indicators of the three-state probe process (5 runs x 32 probes x 3000 steps, all
    starting free): the halves' bootstrap error over runs and probes matches the scatter of the
    halves' difference over 20 independent repeats (within the 25 % that 20 repeats resolve), so it
    counts the probes' autocorrelation; a slow fall of f_mem (probes forgetting at uniform times over
    twice the window) is flagged."""
    diffs, ses = [], []
    for rep in range(20):
        runs = [(core_labels(32, 3000, 1000 + 10 * rep + r, u=0.02) == 0).astype(float) for r in range(MIN_RUNS)]
        st = stationarity(np.mean([r.mean(0) for r in runs], axis=0), runs=runs, n_boot=200, seed=rep)
        diffs.append(st.halves[1] - st.halves[0])
        ses.append(st.se)
        assert st.settled
    assert np.mean(ses) == pytest.approx(np.std(diffs, ddof=1), rel=0.25)
    fall = [r * (np.arange(3000)[None, :] < np.random.default_rng(i).uniform(0, 6000, (32, 1)))
            for i, r in enumerate(runs)]
    st = stationarity(np.mean([r.mean(0) for r in fall], axis=0), runs=fall, seed=0)
    assert not st.settled and st.z < -Z_TOL


def test_protocol_bad_input():
    runs = [core_labels(4, 200, 0, u=0.02)]
    with pytest.raises(ValueError, match="factors must start at 1"):
        resolution(runs, 1, factors=(2, 4))
    with pytest.raises(ValueError, match="spacing must be > 0"):
        resolution(runs, 0)
    with pytest.raises(ValueError, match="no completed memorizing episode"):
        resolution([np.full((4, 50), 1)], 1, free=1)
    with pytest.raises(ValueError, match="at least 32 checkpoints"):
        stationarity(np.ones(20))
    with pytest.raises(ValueError, match="runs must be"):
        stationarity(np.ones(40), runs=[np.ones((3, 39))])
    with pytest.raises(ValueError, match="need at least one run"):
        bootstrap_over_runs([], np.mean)
