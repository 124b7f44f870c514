"""The GPU path: the engine, the memorizing landscape and the monitor with device="cuda". Skipped
without a CUDA device (benchmarks/gpu.py measures throughput there)."""

import math

import numpy as np
import pytest
import torch

from memdyn import DoubleWell, Gaussian, MemorizationMonitor, Occupation, intervals, simulate
from memdyn.memorization import MemorizingLandscape

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def test_engine_on_gpu_agrees_with_cpu_in_law():
    well = DoubleWell(-1.0, 0.2, 1.0)
    out = {}
    for dev in ("cpu", "cuda"):
        sim = simulate(well, Gaussian(3.0), 0.02, 8000, 20000, init=[-1.0], seed=3, device=dev,
                       observers=[Occupation(intervals([-np.inf, 0.2, np.inf]), 2, start=2000, every=5)])
        f = sim["occupation"].fractions[:, 1]
        out[dev] = (f.mean(), f.std(ddof=1) / math.sqrt(f.size))
        assert sim.info["kernel"] == ("compiled" if dev == "cpu" else "torch")
    (a, sa), (b, sb) = out["cpu"], out["cuda"]
    assert abs(a - b) < 4 * math.hypot(sa, sb)


def test_fused_kernel_on_gpu_follows_the_cpu_streams():
    well = DoubleWell(-1.0, 0.2, 1.0)
    kw = dict(init=[0.0], seed=2, kernel="fused", dtype=torch.float64)
    cpu = simulate(well, Gaussian(1.5), 0.05, 200, 5000, device="cpu", **kw)
    gpu = simulate(well, Gaussian(1.5), 0.05, 200, 5000, device="cuda", **kw)
    assert gpu.info["kernel"] == "fused"
    np.testing.assert_allclose(gpu.final, cpu.final, rtol=0, atol=1e-9)  # same (seed, chain, iterate) normals


def test_gpu_chunking_is_bit_identical_and_divergence_is_located():
    well = DoubleWell(-1.0, 0.2, 1.0)
    a = simulate(well, Gaussian(1.0), 0.05, 300, 3000, init=[0.0], seed=1, device="cuda")
    b = simulate(well, Gaussian(1.0), 0.05, 300, 3000, init=[0.0], seed=1, device="cuda", chunk_size=1024)
    np.testing.assert_array_equal(a.final, b.final)
    from memdyn import DivergenceError

    with pytest.raises(DivergenceError):
        simulate(well, Gaussian(1.0), 5.0, 200, 50, init=[3.0], device="cuda")


def test_memorizing_landscape_and_monitor_on_gpu():
    rng = np.random.default_rng(0)
    land = MemorizingLandscape(rng.standard_normal((16, 4)), 0.3, 0.5)
    sim = simulate(land, Gaussian(0.5), 0.01, 200, 2048, init=land.train[0], device="cuda")
    assert np.isfinite(sim.final).all()
    train = torch.randn(32, 1, 8, 8, device="cuda")
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 64)).cuda()
    mon = MemorizationMonitor(train, lambda m, z: m(z).reshape_as(z), probes=16, every=1, seed=0)
    mon.update(0, model)
    assert len(mon.f_mem()) == 1
