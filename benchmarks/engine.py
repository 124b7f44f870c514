"""Engine throughput vs the bare random-number generator (the engine's limit).

Reproduce with (from the repository root, after `make test` or `make run` built .venv):

    .venv/bin/python benchmarks/engine.py            # CPU, float32
    .venv/bin/python benchmarks/engine.py --device cuda

Cases (issue 2):
  (a) 1-D asymmetric double well, 10^6 chains, isotropic Gaussian noise;
  (b) 1000-dimensional S1 quadratic (p = 10 fast, q = 990 slow coordinates, bilinear coupling),
      1000 chains.
For each, chain-steps per second of `memdyn.simulate` beside normal numbers per second of
`torch.randn` filling a preallocated tensor of the same size (chains x dim) with the same kind of
generator on the same device, divided by dim so both are in chain-steps per second. The ratio is
engine / bare; the goal is >= 0.5.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from memdyn import BilinearCoupling, DoubleWell, Gaussian, Quadratic, S1, s1_noise, simulate


def bare_rng(n: int, dim: int, steps: int, dtype, device) -> float:
    gen = torch.Generator(device=device).manual_seed(0)
    out = torch.empty((n, dim), dtype=dtype, device=device)
    torch.randn((n, dim), generator=gen, out=out)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        torch.randn((n, dim), generator=gen, out=out)
    _sync(device)
    return n * steps / (time.perf_counter() - t0)


def engine(landscape, noise, n: int, steps: int, dtype, device) -> float:
    init = np.zeros(landscape.dim)
    simulate(landscape, noise, 0.01, 2, n, init=init, dtype=dtype, device=device)  # warm-up
    _sync(device)
    sim = simulate(landscape, noise, 0.01, steps, n, init=init, dtype=dtype, device=device)
    _sync(device)
    return n * steps / sim.seconds


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def cases():
    well = DoubleWell(-1.0, 0.2, 1.0)
    yield "double well 1-D, 10^6 chains", well, Gaussian(1.0), 10**6, 256
    p, q, eps = 10, 990, 0.05
    rng = np.random.default_rng(0)
    fast = Quadratic(np.diag(np.linspace(1.0, 2.0, p)))
    coupling = BilinearCoupling(np.linspace(0.5, 1.5, q), 0.1 * rng.standard_normal((p, q)) / np.sqrt(q))
    land = S1(fast, coupling, eps)
    yield "S1 quadratic 1000-D, 1000 chains", land, s1_noise(1.0, p, p + q, eps), 1000, 512


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--repeats", type=int, default=3, help="best of this many timings")
    args = ap.parse_args()
    dtype = getattr(torch, args.dtype)
    print(f"memdyn engine benchmark: device={args.device} dtype={args.dtype} threads={torch.get_num_threads()}")
    print(f"{'case':36s} {'engine chain-steps/s':>22s} {'bare RNG chain-steps/s':>24s} {'ratio':>7s}")
    ok = True
    for name, land, noise, n, steps in cases():
        e = max(engine(land, noise, n, steps, dtype, args.device) for _ in range(args.repeats))
        r = max(bare_rng(n, land.dim, steps, dtype, args.device) for _ in range(args.repeats))
        ratio = e / r
        ok &= ratio >= 0.5
        print(f"{name:36s} {e:22.4g} {r:24.4g} {ratio:7.2f}")
    print("goal ratio >= 0.5:", "met" if ok else "NOT met")


if __name__ == "__main__":
    main()
