"""The engine, the memorizing landscape and the monitor on a GPU: throughput, and agreement with
the CPU on the gibbs occupations.

Reproduce with (from the repository root, after `make test` or `make run` built .venv, on a machine
with a CUDA GPU):

    .venv/bin/python benchmarks/gpu.py

Prints chain-steps per second of `memdyn.simulate(device="cuda")` on the 1-D double well (10^7
chains, float32) with the torch kernel (normals drawn by torch generators, one batch of tensor
operations per step) and with the fused kernel (`kernel="fused"`: 4 steps per compiled Triton
kernel, normals computed in the kernel; the target is 10^11 on a large GPU), the fused kernel's
paths on the GPU against the CPU's (float64: the same streams, equal to rounding), the memorizing
landscape (n = 64
training points in D = 16, 10^5 chains), the monitor's cost per update with a model on the GPU, and
the right-basin occupation of the gibbs double well at one step measured on the CPU and on the GPU
with its z score (the two devices draw different normals: they must agree in law, |z| < 4). Without
a GPU it says so and exits 0.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from memdyn import DoubleWell, Gaussian, MemorizationMonitor, Occupation, intervals, simulate
from memdyn.memorization import MemorizingLandscape


def rate(land, noise, n, steps, device, dtype=torch.float32, init=None, kernel="auto"):
    init = np.zeros(land.dim) if init is None else init
    simulate(land, noise, 0.01, 8, n, init=init, dtype=dtype, device=device, kernel=kernel)  # warm-up, compile
    torch.cuda.synchronize()
    sim = simulate(land, noise, 0.01, steps, n, init=init, dtype=dtype, device=device, kernel=kernel)
    torch.cuda.synchronize()
    return n * steps / sim.seconds


def occupation(device, chains=100_000):
    well, a, sigma = DoubleWell(-1.0, 0.2, 1.0), 0.02, 3.0
    sim = simulate(well, Gaussian(sigma), a, 20_000, chains, init=[-1.0], seed=11, device=device,
                   observers=[Occupation(intervals([-np.inf, 0.2, np.inf]), 2, start=5_000, every=10)])
    f = sim["occupation"].fractions[:, 1]
    return f.mean(), f.std(ddof=1) / math.sqrt(f.size)


def monitor_cost(device):
    train = torch.randn(512, 1, 28, 28, device=device)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 784)).to(device)
    mon = MemorizationMonitor(train, lambda m, z: m(z).reshape_as(z), probes=256, every=1, seed=0)
    mon.update(0, model)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for k in range(1, 21):
        mon.update(k, model)
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / 20


def main():
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to measure (the GPU tests skip too)")
        return
    print(f"memdyn GPU benchmark: {torch.cuda.get_device_name()}")
    well = DoubleWell(-1.0, 0.2, 1.0)
    r = rate(well, Gaussian(1.0), 10**7, 512, "cuda")
    print(f"double well 1-D, 10^7 chains, float32, torch kernel: {r:.3g} chain-steps/s")
    r = rate(well, Gaussian(1.0), 10**7, 2048, "cuda", kernel="fused")
    print(f"double well 1-D, 10^7 chains, float32, fused kernel: {r:.3g} chain-steps/s "
          f"(target 1e11: {'met' if r >= 1e11 else 'not met'})")
    paths = [simulate(well, Gaussian(1.5), 0.05, 200, 5000, init=[0.0], seed=2, device=d, kernel="fused").final
             for d in ("cpu", "cuda")]
    print(f"fused kernel, float64, 5000 chains x 200 steps: max |GPU - CPU| = {np.abs(paths[0] - paths[1]).max():.2e}")
    rng = np.random.default_rng(0)
    land = MemorizingLandscape(rng.standard_normal((64, 16)), 0.3, 0.5)
    r = rate(land, Gaussian(1.0), 10**5, 256, "cuda", dtype=torch.float64, init=land.train[0])
    print(f"memorizing landscape n=64, D=16, 10^5 chains, float64: {r:.3g} chain-steps/s")
    print(f"monitor update (256 probes, 512 training images, model on the GPU): {1e3 * monitor_cost('cuda'):.2f} ms")
    (pc, sc), (pg, sg) = occupation("cpu"), occupation("cuda")
    z = (pg - pc) / math.hypot(sc, sg)
    print(f"gibbs right-basin occupation at a=0.02, sigma=3: CPU {pc:.5f} +- {sc:.5f}, GPU {pg:.5f} +- {sg:.5f}, "
          f"z = {z:+.2f} ({'agree' if abs(z) < 4 else 'DISAGREE'})")


if __name__ == "__main__":
    main()
