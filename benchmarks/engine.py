"""Engine throughput: against the bare random-number generator (the engine's limit), with few
chains against many, and against torchsde's Euler scheme.

Reproduce with (from the repository root, after `make test` or `make run` built .venv):

    .venv/bin/python benchmarks/engine.py            # CPU, float32
    .venv/bin/python benchmarks/engine.py --device cuda

Cases:
  (a) 1-D asymmetric double well, 10^6 chains, isotropic Gaussian noise;
  (b) 1000-dimensional S1 quadratic (p = 10 fast, q = 990 slow coordinates, bilinear coupling),
      1000 chains;
  (c) the double well of (a) with 1,000 chains (few chains: per-step overhead, not arithmetic);
  (d) a step grid as experiments run it: 5 steps a, 256 chains each, horizons growing like
      exp(V/a) (2,000 to 20,000 steps), as one `simulate_groups` call against one `simulate` call
      per step, on the compiled 1-D kernel and on the torch path (a 2-D quadratic); wall times and
      their ratio (no goal: the grouped run costs the same chain-steps, it saves per-call and
      per-step overhead);
  (e) the double well of (a) by the fused kernel (`kernel="fused"`: normals computed inside a
      torch.compile'd step, no draws in memory; built for GPUs, see benchmarks/gpu.py), for
      comparison with (a).
For (a) and (b), chain-steps per second of `memdyn.simulate` beside normal numbers per second of
`torch.randn` filling a preallocated tensor of the same size (chains x dim) with the same kind of
generator on the same device, divided by dim so both are in chain-steps per second; the ratio is
engine / bare, goal >= 0.8. For (c), the ratio of its chain-steps per second to (a)'s, goal >= 0.5.
Last, the double well with 10^4 chains through torchsde's `sdeint` (method "euler", dt = a: the
same recursion, theta - a F'(theta) - a sigma z) and through memdyn, and memdyn's speed-up.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from memdyn import BilinearCoupling, DoubleWell, Gaussian, Group, Quadratic, S1, s1_noise, simulate, simulate_groups

STEP, SIGMA = 0.01, 1.0


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


def engine(landscape, noise, n: int, steps: int, dtype, device, kernel: str = "auto") -> float:
    init = np.zeros(landscape.dim)
    simulate(landscape, noise, STEP, 2, n, init=init, dtype=dtype, device=device, kernel=kernel)  # warm-up
    _sync(device)
    sim = simulate(landscape, noise, STEP, steps, n, init=init, dtype=dtype, device=device, kernel=kernel)
    _sync(device)
    return n * steps / sim.seconds


def torchsde_euler(well: DoubleWell, n: int, steps: int, dtype, device) -> float:
    """Chain-steps per second of torchsde.sdeint on dX = -F'(X) dt + sqrt(a) sigma dW, Euler, dt = a."""
    import torchsde

    class Well(torch.nn.Module):
        noise_type, sde_type = "diagonal", "ito"

        def f(self, t, y):
            return -well.grad(y)

        def g(self, t, y):
            return torch.full_like(y, SIGMA * STEP**0.5)

    y0 = torch.zeros((n, 1), dtype=dtype, device=device)
    ts = torch.tensor([0.0, STEP * steps], dtype=dtype, device=device)
    torchsde.sdeint(Well(), y0, ts[:1].repeat(2) + torch.tensor([0.0, 2 * STEP], dtype=dtype, device=device),
                    method="euler", dt=STEP)  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    torchsde.sdeint(Well(), y0, ts, method="euler", dt=STEP)
    _sync(device)
    return n * steps / (time.perf_counter() - t0)


def grid_times(landscape, noise, dtype, device, kernel: str) -> tuple[float, float]:
    """Wall seconds of case (d): (one simulate_groups call, one simulate call per step)."""
    steps = np.linspace(0.02, 0.04, 5)
    V = np.log(10.0) / (1 / steps[0] - 1 / steps[-1])  # horizons 2,000 .. 20,000
    H = [int(2000 * np.exp(V * (1 / a - 1 / steps[-1]))) for a in steps]
    init, kw = np.zeros(landscape.dim), dict(dtype=dtype, device=device, kernel=kernel)
    simulate(landscape, noise, 0.02, 2, 256, init=init, **kw)  # warm-up
    t0 = time.perf_counter()
    simulate_groups(landscape, noise, [Group(256, float(a), h, init) for a, h in zip(steps, H)], **kw)
    _sync(device)
    t1 = time.perf_counter()
    first = 0
    for a, h in zip(steps, H):
        simulate(landscape, noise, float(a), h, 256, init=init, first_chain=first, **kw)
        first += 256
    _sync(device)
    return t1 - t0, time.perf_counter() - t1


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def s1_case():
    p, q, eps = 10, 990, 0.05
    rng = np.random.default_rng(0)
    fast = Quadratic(np.diag(np.linspace(1.0, 2.0, p)))
    coupling = BilinearCoupling(np.linspace(0.5, 1.5, q), 0.1 * rng.standard_normal((p, q)) / np.sqrt(q))
    return S1(fast, coupling, eps), s1_noise(SIGMA, p, p + q, eps)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--repeats", type=int, default=3, help="best of this many timings")
    args = ap.parse_args()
    dtype = getattr(torch, args.dtype)
    dev = args.device
    best = lambda f: max(f() for _ in range(args.repeats))  # noqa: E731
    print(f"memdyn engine benchmark: device={dev} dtype={args.dtype} threads={torch.get_num_threads()}")
    print(f"{'case':36s} {'engine chain-steps/s':>22s} {'bare RNG chain-steps/s':>24s} {'ratio':>7s}")
    well = DoubleWell(-1.0, 0.2, 1.0)
    s1, s1_noise_ = s1_case()
    ok, rates = True, {}
    for key, name, land, noise, n, steps in (("a", "(a) double well 1-D, 10^6 chains", well, Gaussian(SIGMA), 10**6, 1024),
                                             ("b", "(b) S1 quadratic 1000-D, 1000 chains", s1, s1_noise_, 1000, 512)):
        e = rates[key] = best(lambda: engine(land, noise, n, steps, dtype, dev))
        r = best(lambda: bare_rng(n, land.dim, steps, dtype, dev))
        ok &= e / r >= 0.8
        print(f"{name:36s} {e:22.4g} {r:24.4g} {e / r:7.2f}")
    few = best(lambda: engine(well, Gaussian(SIGMA), 1000, 20000, dtype, dev))
    print(f"{'(c) double well 1-D, 1000 chains':36s} {few:22.4g} {'(vs (a))':>24s} {few / rates['a']:7.2f}")
    ok_few = few / rates["a"] >= 0.5
    print("goal (a), (b) ratio >= 0.8:", "met" if ok else "NOT met", "| goal (c) / (a) >= 0.5:",
          "met" if ok_few else "NOT met")
    fused = best(lambda: engine(well, Gaussian(SIGMA), 10**6, 1024, dtype, dev, kernel="fused"))
    print(f"{'(e) (a) by the fused kernel':36s} {fused:22.4g} {'(vs (a))':>24s} {fused / rates['a']:7.2f}")
    for name, land, kernel in (("compiled, double well 1-D", well, "auto"),
                               ("torch, quadratic 2-D", Quadratic(np.array([[2.0, 0.3], [0.3, 1.0]])), "torch")):
        if kernel == "auto" and torch.device(dev).type != "cpu":
            continue
        times = [grid_times(land, Gaussian(SIGMA), dtype, dev, kernel) for _ in range(args.repeats)]
        grouped, alone = min(t[0] for t in times), min(t[1] for t in times)
        print(f"(d) step grid, 5 x 256 chains, {name}: grouped {grouped:.2f} s, one run per step {alone:.2f} s, "
              f"x{alone / grouped:.2f}")
    try:
        sde = best(lambda: torchsde_euler(well, 10**4, 500, dtype, dev))
    except ImportError:
        print("torchsde not installed (pip install 'memdyn[sde]'): comparison skipped")
        return
    ours = best(lambda: engine(well, Gaussian(SIGMA), 10**4, 500, dtype, dev))
    print(f"double well 1-D, 10^4 chains, 500 steps: torchsde sdeint (euler) {sde:.4g} chain-steps/s, "
          f"memdyn {ours:.4g}: speed-up x{ours / sde:.1f}")


if __name__ == "__main__":
    main()
