import math

import numpy as np
import pytest
import torch
from scipy.linalg import solve_discrete_lyapunov

from memdyn import (
    S1, DivergenceError, DoubleWell, ExitTime, FirstPassage, Gaussian, Group, LeastSquares, Minibatch, Moments,
    Occupation, Quadratic, StudentT, Trace, fast_ode, intervals, s1_noise, simulate, simulate_groups, slow_ode,
)
from memdyn.claims import Z_TOL
from memdyn.reference import stationary_1d
from memdyn.stats import mean_se


def run(land, noise, chains=3000, steps=64, chunk=None, seed=5, **kw):
    return simulate(land, noise, 0.05, steps, chains, init=np.full(land.dim, 0.5), seed=seed, chunk_size=chunk,
                    observers=[Trace(every=16, chains=[0, 1500, chains - 1]), Moments(start=10),
                               Occupation(intervals([-np.inf, 0.0, np.inf]), 2)], **kw)


CASES = [
    (Quadratic(np.array([[2.0, 0.3], [0.3, 1.0]])), Gaussian(1.0)),
    (DoubleWell(-1, 0.2, 1), Gaussian(2.0)),
    (S1.quadratic(1.0, 1.0, 0.5, 0.1), s1_noise(1.0, 1, 2, 0.1)),
    (LeastSquares(np.random.default_rng(0).standard_normal((30, 2)), np.ones(30)), None),
    (DoubleWell(-1, 0.2, 1), StudentT(1.0, 4.0)),
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_results_do_not_depend_on_chunking(case):
    land, noise = CASES[case]
    noise = noise or Minibatch(land, 4, replace=False)
    ref = run(land, noise)
    for chunk in (1024, 2048, 1):
        other = run(land, noise, chunk=chunk)
        np.testing.assert_array_equal(other.final, ref.final)
        np.testing.assert_array_equal(other["trace"].values, ref["trace"].values)
        np.testing.assert_array_equal(other["moments"].chain_second, ref["moments"].chain_second)
        np.testing.assert_array_equal(other["occupation"].counts, ref["occupation"].counts)


def test_chain_streams_do_not_depend_on_number_of_chains():
    land = DoubleWell(-1, 0.2, 1)
    small = simulate(land, Gaussian(1.0), 0.05, 100, 10, init=[0.0], seed=9)
    big = simulate(land, Gaussian(1.0), 0.05, 100, 2500, init=[0.0], seed=9)
    np.testing.assert_array_equal(small.final, big.final[:10])


def test_same_seed_same_result_other_seed_differs():
    land, noise = CASES[0]
    a, b, c = run(land, noise, seed=1), run(land, noise, seed=1), run(land, noise, seed=2)
    np.testing.assert_array_equal(a.final, b.final)
    assert not np.array_equal(a.final, c.final)


def test_float32_runs_and_is_close_to_float64():
    land, noise = CASES[1]
    r32 = run(land, noise, dtype=torch.float32, steps=16)
    r64 = run(land, noise, dtype=torch.float64, steps=16)
    assert r32.final.dtype == np.float32
    # the two precisions draw different normals: compare the laws, not the paths
    se = math.sqrt(r32.final.var() / r32.n_chains + r64.final.var() / r64.n_chains)
    assert abs(r32.final.mean() - r64.final.mean()) < Z_TOL * se


def test_divergence_reports_first_step_and_chain_exactly():
    # noiseless 1-D quadratic, a*lambda = 3: |x_k| = |x_0| 2^k; chains start at different sizes
    land = Quadratic([[1.0]])
    init = np.ones((2000, 1))
    init[1234] = 4.0  # first to exceed the bound
    k_exact = math.ceil(math.log2(1e8 / 4.0) + 1e-12)
    with pytest.raises(DivergenceError) as err:
        simulate(land, Gaussian(0.0), 3.0, 500, 2000, init=init, seed=0)
    assert (err.value.step, err.value.chain) == (k_exact, 1234)
    land2 = DoubleWell()
    with pytest.raises(DivergenceError, match="diverged at step"):
        simulate(land2, Gaussian(1.0), 5.0, 200, 50, init=[3.0], seed=0)


def test_bad_arguments():
    land = Quadratic([[1.0]])
    for kw, msg in [({"step": -1.0}, "step"), ({"step": float("nan")}, "step"), ({"n_chains": 0}, "n_chains"),
                    ({"seed": -3}, "seed")]:
        args = {"step": 0.1, "n_steps": 10, "n_chains": 5, "seed": 0} | kw
        with pytest.raises(ValueError, match=msg):
            simulate(land, Gaussian(1.0), args.pop("step"), args.pop("n_steps"), args.pop("n_chains"), init=[0.0],
                     **args)
    with pytest.raises(ValueError, match="init"):
        simulate(land, Gaussian(1.0), 0.1, 10, 5, init=np.zeros((3, 1)))


def test_noiseless_mean_decays_as_one_minus_a_lambda_power():
    lam, a = np.array([0.5, 3.0]), 0.2
    sim = simulate(Quadratic(np.diag(lam)), Gaussian(0.0), a, 30, 3, init=[1.0, 1.0], observers=[Trace()])
    k = sim["trace"].steps
    np.testing.assert_allclose(sim["trace"].values[:, 0, :], (1 - a * lam)[None, :] ** k[:, None], rtol=1e-12)


def test_discrete_lyapunov_closed_form_1d():
    for a, lam, sig in [(0.1, 2.0, 1.0), (0.5, 3.0, 0.3), (1e-3, 0.7, 4.0)]:
        S = solve_discrete_lyapunov(np.array([[1 - a * lam]]), np.array([[a * a * sig * sig]]))
        np.testing.assert_allclose(S[0, 0], a * sig**2 / (lam * (2 - a * lam)), rtol=1e-12)


def test_stationary_variance_matches_lyapunov_within_standard_error():
    a, sig = 0.2, 1.0
    H = np.array([[2.0, 0.5], [0.5, 1.0]])
    S = solve_discrete_lyapunov(np.eye(2) - a * H, a * a * sig**2 * np.eye(2))
    sim = simulate(Quadratic(H), Gaussian(sig), a, 1500, 2000, init=[0.0, 0.0], seed=11,
                   observers=[Moments(start=300)])
    for i, j in [(0, 0), (1, 1), (0, 1)]:
        m, se = mean_se(sim["moments"].chain_second[:, i, j])
        assert abs(m - S[i, j]) < Z_TOL * se


def test_fast_and_slow_odes_on_s1_quadratic():
    lx, ly, k, eps = 2.0, 1.0, 0.5, 0.05
    land = S1.quadratic(lx, ly, k, eps)
    t = np.linspace(0, 3, 7)
    x = fast_ode(land, [1.0], [0.4], t)[:, 0]
    lam_y = -eps * k * 0.4 / lx
    np.testing.assert_allclose(x, lam_y + (1 - lam_y) * np.exp(-lx * t), rtol=1e-6, atol=1e-8)
    tau = np.linspace(0, 2, 5)
    y, lam = slow_ode(land, [1.0], tau, x0=[0.0])
    rate = ly - eps * k * k / lx  # d/dtau y = -(ly y + k lambda(y)), lambda(y) = -eps k y / lx
    np.testing.assert_allclose(y[:, 0], np.exp(-rate * tau), rtol=1e-6)
    np.testing.assert_allclose(lam[:, 0], -eps * k * y[:, 0] / lx, rtol=1e-5, atol=1e-9)


def test_observers_first_passage_and_occupation():
    land = Quadratic([[1.0]])
    sim = simulate(land, Gaussian(0.0), 0.5, 10, 4, init=np.array([[8.0], [4.0], [2.0], [0.5]]),
                   observers=[FirstPassage(lambda th: th[:, 0] < 1.0),
                              Occupation(intervals([0.0, 1.0, np.inf]), 2, start=1)])
    fp = sim["first_passage"]
    np.testing.assert_array_equal(fp.times, [4, 3, 2, 0])  # x_k = x_0 / 2^k
    occ = sim["occupation"]
    assert occ.total == 10 and np.all(occ.counts.sum(1) == 10)
    np.testing.assert_array_equal(occ.counts[:, 1], [3, 2, 1, 0])


def test_stationary_1d_matches_gibbs_at_small_step():
    well = DoubleWell(-1, 0.2, 1)
    sigma, a = 1.0, 0.05
    x, p, tmix = stationary_1d(well, sigma, a, -2.5, 2.5, 4000)
    gibbs = np.exp(-2 * well.f(x) / (a * sigma**2))
    gibbs /= gibbs.sum()
    assert np.abs(p - gibbs).sum() < 0.05  # O(a) discretisation difference
    assert tmix > 1


def test_step_schedule_constant_equals_float_and_decay_follows_the_exact_variance_recursion():
    from memdyn import Gaussian, Quadratic, simulate
    F = Quadratic(np.array([[2.0]]))
    kw = dict(n_steps=300, n_chains=3000, init=[1.0], seed=11)
    a = simulate(F, Gaussian(1.5), 0.05, **kw).final
    b = simulate(F, Gaussian(1.5), lambda k: 0.05, **kw).final
    np.testing.assert_array_equal(a, b)
    sched = lambda k: 0.1 / (1 + k / 50)  # noqa: E731
    x = simulate(F, Gaussian(1.5), sched, **kw)
    assert x.info["schedule"] and x.step == pytest.approx(0.1)
    m, v = 1.0, 0.0
    for k in range(300):  # x' = (1 - a_k lambda) x - a_k sigma z, exactly
        g = 1 - sched(k) * 2.0
        m, v = g * m, g * g * v + (sched(k) * 1.5) ** 2
    se_m, se_v = math.sqrt(v / 3000), v * math.sqrt(2 / 3000)
    assert abs(x.final.mean() - m) < 4 * se_m and abs(x.final.var() - v) < 4 * se_v


def test_bad_schedule_value_and_divergence_under_a_schedule_are_reported():
    from memdyn import DivergenceError, Gaussian, Quadratic, simulate
    F = Quadratic(np.array([[2.0]]))
    with pytest.raises(ValueError, match=r"a_3 = -0.1"):
        simulate(F, Gaussian(1.0), lambda k: 0.1 if k < 3 else -0.1, 10, 4, init=[0.0])
    with pytest.raises(DivergenceError) as e:  # a_k lambda > 2 from step 40 on
        simulate(F, Gaussian(1.0), lambda k: 0.1 if k < 40 else 1.5, 400, 4, init=[0.1], bound=1e6)
    assert e.value.step > 40


# -- per-chain parameters, the compiled kernel, observers by tiles, the draw thread -------------------------------

GRID_CASES = [
    (DoubleWell(-1, 0.2, 1), Gaussian(1.5), "compiled"),
    (DoubleWell(-1, 0.2, 1), Gaussian(1.5), "torch"),
    (Quadratic(np.array([[2.0, 0.3], [0.3, 1.0]])), Gaussian(1.0), "torch"),
]


def _exit(dim):
    return ExitTime(lambda th: 0.3 - th[:, 0], 0.01)


@pytest.mark.parametrize("case", range(len(GRID_CASES)))
def test_step_grid_in_one_simulation_is_bit_identical_to_each_step_alone(case):
    land, noise, kernel = GRID_CASES[case]
    steps, n = (0.03, 0.05, 0.08), 700  # groups straddle the 1024-chain blocks
    a = np.repeat(steps, n)
    obs = lambda: [Occupation(intervals([-np.inf, 0.0, np.inf]), 2, start=7, every=3), _exit(land.dim),  # noqa: E731
                   FirstPassage(lambda th: th[:, 0] > 0.6), Trace(every=50, chains=[5, 800, 2000])]
    grid = simulate(land, noise, a, 300, a.size, init=np.full(land.dim, -0.5), seed=3, observers=obs(), kernel=kernel)
    assert grid.info["kernel"] == kernel
    for g, step in enumerate(steps):
        alone = simulate(land, noise, step, 300, a.size, init=np.full(land.dim, -0.5), seed=3, observers=obs(),
                         kernel=kernel)
        sl = slice(g * n, (g + 1) * n)
        np.testing.assert_array_equal(grid.final[sl], alone.final[sl])
        np.testing.assert_array_equal(grid["occupation"].counts[sl], alone["occupation"].counts[sl])
        np.testing.assert_array_equal(grid["exit_time"].bridge_time[sl], alone["exit_time"].bridge_time[sl])
        np.testing.assert_array_equal(grid["first_passage"].times[sl], alone["first_passage"].times[sl])
        cols = (grid["trace"].chains >= g * n) & (grid["trace"].chains < (g + 1) * n)
        np.testing.assert_array_equal(grid["trace"].values[:, cols], alone["trace"].values[:, cols])
    np.testing.assert_array_equal(grid.step, a)


def _uniform_init(gen, n, dim, dtype, device):
    return torch.rand((n, dim), generator=gen, dtype=dtype, device=device) - 0.5


@pytest.mark.parametrize("case", range(len(GRID_CASES)))
def test_groups_with_their_own_horizons_equal_each_group_alone(case):
    land, noise, kernel = GRID_CASES[case]
    # horizons end inside tiles and at a tile's end; groups straddle blocks; a callable init and a noise factor
    spec = [(700, 0.03, 301, None, _uniform_init), (900, 0.05, 128, 0.7, np.full(land.dim, -0.5)),
            (500, 0.08, 45, None, _uniform_init), (30, 0.05, 0, None, np.zeros(land.dim))]
    obs = lambda: [Occupation(intervals([-np.inf, 0.0, np.inf]), 2, start=7, every=3), _exit(land.dim),  # noqa: E731
                   FirstPassage(lambda th: th[:, 0] > 0.6), Trace(every=50, chains=[5, 20, 450])]
    groups = [Group(n, a, h, init, s, obs()) for n, a, h, s, init in spec]
    for first in (0, 1000):
        sims = simulate_groups(land, noise, groups, seed=3, kernel=kernel, first_chain=first)
        offset = first
        for (n, a, h, s, init), sim in zip(spec, sims):
            alone = simulate(land, noise, a, h, n, init=init, seed=3, noise_scale=s,
                             observers=obs(), kernel=kernel, first_chain=offset)
            assert sim.info["first_chain"] == offset and (sim.n_steps, sim.n_chains, sim.step) == (h, n, a)
            np.testing.assert_array_equal(sim.final, alone.final)
            assert sim["occupation"].total == alone["occupation"].total
            np.testing.assert_array_equal(sim["occupation"].counts, alone["occupation"].counts)
            np.testing.assert_array_equal(sim["exit_time"].bridge_time, alone["exit_time"].bridge_time)
            assert sim["exit_time"].horizon == alone["exit_time"].horizon == h
            np.testing.assert_array_equal(sim["first_passage"].times, alone["first_passage"].times)
            np.testing.assert_array_equal(sim["trace"].values, alone["trace"].values)
            offset += n
    if kernel == "compiled":  # with first_chain, a range split over runs is one run over all of it
        whole = simulate(land, noise, 0.05, 200, 3000, init=[0.1], seed=7)
        part = simulate(land, noise, 0.05, 200, 1500, init=[0.1], seed=7, first_chain=1200)
        np.testing.assert_array_equal(part.final, whole.final[1200:2700])


def test_groups_draw_only_for_running_chains_and_report_bad_input():
    class Counting(Gaussian):
        calls = 0

        def draw(self, gen, out):
            Counting.calls += 1
            super().draw(gen, out)

    land, T = DoubleWell(-1, 0.2, 1), 64
    sims = simulate_groups(land, Counting(1.0), [Group(1024, 0.05, 10 * T, [0.0]), Group(2048, 0.05, 2 * T, [0.0])],
                           kernel="torch")
    assert sims[0].info["tile"] == T
    assert Counting.calls == 10 + 2 * 2  # block 0 for 10 tiles, blocks 1-2 for their first 2
    with pytest.raises(ValueError, match="non-increasing n_steps.*group 1 has 20 > group 0's 10"):
        simulate_groups(land, Gaussian(1.0), [Group(4, 0.1, 10, [0.0]), Group(4, 0.1, 20, [0.0])])
    with pytest.raises(ValueError, match="group 1: step must be finite and > 0; chain 1"):
        simulate_groups(land, Gaussian(1.0), [Group(4, 0.1, 10, [0.0]), Group(2, [0.1, -1.0], 5, [0.0])])
    with pytest.raises(ValueError, match="at least one group"):
        simulate_groups(land, Gaussian(1.0), [])
    with pytest.raises(ValueError, match="first_chain must be an integer >= 0"):
        simulate(land, Gaussian(1.0), 0.1, 10, 4, init=[0.0], first_chain=-1)
    init = np.zeros((1500, 1))
    init[1111 - 1000] = 30.0  # global chain 1111 runs away; the group that holds it has the shorter horizon
    for kernel in ("compiled", "torch"):
        with pytest.raises(DivergenceError) as err:
            simulate_groups(land, Gaussian(0.0), [Group(1000, 0.01, 400, [0.0]), Group(1500, 0.1, 300, init)],
                            kernel=kernel)
        assert err.value.chain == 1111


def test_compiled_kernel_and_torch_follow_the_same_paths():
    from memdyn import ProfileGaussian, TanhStep, MultiWell

    cases = [(DoubleWell(-1, 0.2, 1, 1.5), Gaussian(1.5)),
             (MultiWell([-1.5, -0.7, 0.1, 0.8, 1.6]), ProfileGaussian(TanhStep(1.4, 0.8, 0.1, 0.3)))]
    for land, noise in cases:
        kw = dict(init=[0.0], seed=8, observers=[Moments(start=100)])
        c = simulate(land, noise, 0.02, 2000, 1500, kernel="compiled", **kw)
        t = simulate(land, noise, 0.02, 2000, 1500, kernel="torch", **kw)
        assert (c.info["kernel"], t.info["kernel"]) == ("compiled", "torch")
        np.testing.assert_allclose(c.final, t.final, rtol=0, atol=1e-9)
        np.testing.assert_allclose(c["moments"].chain_mean, t["moments"].chain_mean, rtol=0, atol=1e-9)
    auto = simulate(cases[0][0], cases[0][1], 0.02, 10, 4, init=[0.0])
    assert auto.info["kernel"] == "compiled"
    with pytest.raises(ValueError, match="kernel='compiled' needs"):
        simulate(Quadratic([[1.0]]), Gaussian(1.0), 0.1, 10, 4, init=[0.0], kernel="compiled")
    with pytest.raises(ValueError, match="kernel must be .auto., .compiled., .fused. or .torch."):
        simulate(Quadratic([[1.0]]), Gaussian(1.0), 0.1, 10, 4, init=[0.0], kernel="numba")


class _PerStep:
    """An observer's per-step path (update once per iterate), to compare with its tile path."""

    def __init__(self, inner):
        self.inner, self.name = inner, inner.name

    def start(self, *a):
        return self.inner.start(*a)

    def update(self, state, k, theta):
        self.inner.update(state, k, theta)

    def update_block(self, state, k, thetas):
        for t in range(thetas.shape[0]):
            self.inner.update(state, k + 1 + t, thetas[t])

    def finish(self, states):
        return self.inner.finish(states)


def test_observers_by_tiles_equal_observers_step_by_step():
    land = DoubleWell(-1, 0.2, 1)
    make = lambda: [Occupation(intervals([-np.inf, 0.2, np.inf]), 2, start=33, every=7), Moments(start=5, every=3),  # noqa: E731
                    FirstPassage(lambda th: th[:, 0] > 0.5, start=20), Trace(every=9, until=150), _exit(1)]
    kw = dict(init=[-1.0], seed=2, kernel="torch")
    tiles = simulate(land, Gaussian(2.0), 0.05, 205, 1100, observers=make(), **kw)
    steps = simulate(land, Gaussian(2.0), 0.05, 205, 1100, observers=[_PerStep(o) for o in make()], **kw)
    np.testing.assert_array_equal(tiles["occupation"].counts, steps["occupation"].counts)
    assert tiles["occupation"].total == steps["occupation"].total
    np.testing.assert_allclose(tiles["moments"].chain_second, steps["moments"].chain_second, rtol=1e-12)
    np.testing.assert_array_equal(tiles["first_passage"].times, steps["first_passage"].times)
    np.testing.assert_array_equal(tiles["trace"].steps, steps["trace"].steps)
    np.testing.assert_array_equal(tiles["trace"].values, steps["trace"].values)
    np.testing.assert_array_equal(tiles["exit_time"].grid_time, steps["exit_time"].grid_time)
    np.testing.assert_allclose(tiles["exit_time"].bridge_time, steps["exit_time"].bridge_time, rtol=1e-12)
    assert tiles["exit_time"].exited.any() and not tiles["exit_time"].exited.all()


def test_divergence_in_the_compiled_kernel_is_located_like_the_torch_path():
    land = DoubleWell()
    init = np.zeros((1500, 1))
    init[1111] = 30.0  # runs away first under a large step
    found = []
    for kernel in ("compiled", "torch"):
        with pytest.raises(DivergenceError) as err:
            simulate(land, Gaussian(0.0), 0.1, 300, 1500, init=init, kernel=kernel)
        found.append((err.value.step, err.value.chain))
    assert found[0] == found[1] and found[0][1] == 1111


def test_bad_per_chain_parameters_and_a_failing_draw_are_reported():
    land = DoubleWell()
    with pytest.raises(ValueError, match=r"step must be a number or an array of shape \(n_chains,\)"):
        simulate(land, Gaussian(1.0), np.ones(3) * 0.1, 10, 4, init=[0.0])
    with pytest.raises(ValueError, match="step must be finite and > 0; chain 2"):
        simulate(land, Gaussian(1.0), np.array([0.1, 0.1, -0.1, 0.1]), 10, 4, init=[0.0])
    with pytest.raises(ValueError, match="noise_scale must be finite and >= 0; chain 0"):
        simulate(land, Gaussian(1.0), 0.1, 10, 4, init=[0.0], noise_scale=[np.nan, 1, 1, 1])

    class Broken(Gaussian):
        calls = 0

        def draw(self, gen, out):
            Broken.calls += 1
            if Broken.calls == 3:
                raise RuntimeError("draw failed")
            super().draw(gen, out)

    threads = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="draw failed"):
        simulate(land, Broken(1.0), 0.1, 1000, 4, init=[0.0])
    assert torch.get_num_threads() == threads  # the core lent to the draw thread is given back


def test_compiled_tanh_is_accurate_to_1e_13():
    import numba

    from memdyn._step_kernel import tanh

    @numba.njit
    def each(u):
        out = np.empty_like(u)
        for i in range(u.size):
            out[i] = tanh(u[i])
        return out

    u = np.concatenate([np.linspace(-40, 40, 400_001), np.geomspace(1e-14, 2, 2001), -np.geomspace(1e-14, 2, 2001)])
    assert np.abs(each(u) - np.tanh(u)).max() < 1e-13


PHILOX_KAT = [  # Random123's known-answer vectors for Philox4x32-10: counter, key, output
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


def test_fused_kernel_counter_normals_are_philox_and_standard_normal():
    from scipy import stats

    from memdyn._fused import normals, philox4x32

    for ctr, key, out in PHILOX_KAT:
        got = philox4x32(*(torch.tensor(v) for v in ctr + key))
        assert [int(w) for w in got] == list(out)
    n, steps = 20000, 50
    chain = torch.arange(n)
    key = (torch.tensor(12345), torch.tensor(678))
    for dtype in (torch.float64, torch.float32):
        Z = torch.stack([normals(torch.tensor(k), chain, chain >> 32, *key, dtype) for k in range(steps)]).double().numpy()
        z, N = Z.ravel(), Z.size
        assert abs(z.mean()) < Z_TOL / math.sqrt(N) and abs(z.var() - 1) < Z_TOL * math.sqrt(2 / N)
        assert abs(stats.skew(z)) < Z_TOL * math.sqrt(6 / N) and abs(stats.kurtosis(z)) < Z_TOL * math.sqrt(24 / N)
        for a, b in ((Z[:-1], Z[1:]), (Z[:, :-1], Z[:, 1:])):  # neighbouring steps, neighbouring chains
            assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < Z_TOL / math.sqrt(a.size)


def test_fused_kernel_follows_the_law_of_the_compiled_one_and_its_own_streams():
    land = DoubleWell(-1.0, 0.2, 1.0)
    occ = lambda: [Occupation(intervals([-np.inf, 0.2, np.inf]), 2, start=2000, every=5)]  # noqa: E731
    runs = {}
    for kernel in ("fused", "compiled"):
        sim = simulate(land, Gaussian(3.0), 0.02, 6000, 12000, init=[-1.0], seed=3, kernel=kernel, observers=occ())
        assert sim.info["kernel"] == kernel
        f = sim["occupation"].fractions[:, 1]
        runs[kernel] = (f.mean(), f.std(ddof=1) / math.sqrt(f.size))
    (a, sa), (b, sb) = runs["fused"], runs["compiled"]
    assert abs(a - b) < Z_TOL * math.hypot(sa, sb)
    # its noise is a function of (seed, chain, iterate): chunks, groups and first_chain do not change a path
    groups = [Group(1500, 0.05, 120, [0.3]), Group(900, 0.08, 57, [-0.3], observers=[Trace(every=7)])]
    sims = simulate_groups(land, Gaussian(1.5), groups, seed=9, kernel="fused", chunk_size=1024)
    alone = simulate(land, Gaussian(1.5), 0.08, 57, 900, init=[-0.3], seed=9, kernel="fused", first_chain=1500,
                     observers=[Trace(every=7)])
    np.testing.assert_array_equal(sims[1].final, alone.final)
    np.testing.assert_array_equal(sims[1]["trace"].values, alone["trace"].values)
    init = np.zeros((1500, 1))
    init[1111] = 30.0
    with pytest.raises(DivergenceError) as err:
        simulate(land, Gaussian(0.0), 0.1, 300, 1500, init=init, kernel="fused")
    assert err.value.chain == 1111
    with pytest.raises(ValueError, match="kernel='fused' needs a 1-D polynomial landscape"):
        simulate(Quadratic([[1.0]]), Gaussian(1.0), 0.1, 10, 4, init=[0.0], kernel="fused")


@pytest.mark.parametrize("blocks", [[4], [1, 1, 1, 1], [2, 2], [3, 1]])
def test_passages_are_taken_in_order_whatever_the_blocks(blocks):
    """Passages: the second target counts only at or after the first passage; one step can complete
    both; the result does not depend on how the engine cuts the steps into blocks."""
    from memdyn.observers import Passages

    path = torch.tensor([[-1.5, 1.5, 0.0, -1.5],   # step 1
                         [0.0, -2.0, 0.0, 0.0],    # step 2
                         [1.2, 2.0, 0.0, 0.0],     # step 3
                         [0.0, 0.0, 0.0, 1.0]],    # step 4
                        dtype=torch.float64)[:, :, None]
    obs = Passages([lambda th: th[:, 0] <= -1, lambda th: th[:, 0] >= 1])
    both = Passages([lambda th: th[:, 0] <= -1, lambda th: th[:, 0] <= -1.2])
    states = [o.start(0, 4, 1, torch.float64, "cpu") for o in (obs, both)]
    k = 0
    for L in blocks:
        for o, st in zip((obs, both), states):
            o.update_block(st, k, path[k:k + L])
        k += L
    r = obs.finish([states[0]])
    assert r.times.tolist() == [[1, 2, -1, 1], [3, 3, -1, 4]] and r.horizon == 4
    assert r.hit.tolist() == [[True, True, False, True], [True, True, False, True]]
    assert both.finish([states[1]]).times.tolist() == [[1, 2, -1, 1], [1, 2, -1, 1]]
