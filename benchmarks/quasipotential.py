"""Speed and accuracy of the quasi-potential solvers (issue 3 targets: gMAM with 100 points on a
2-D system under 2 s; the grid solver on a 512 x 512 mesh under 60 s).

Reproduce with (from the repository root, after `make test` built .venv):

    .venv/bin/python benchmarks/quasipotential.py

Cases:
* ``min_action_path`` on Maier-Stein b = (x - x^3 - beta x y^2, -(1 + x^2) y) from (-1, 0) to the
  saddle (0, 0), 100 points: beta = 1 (exact V = 1/2) and beta = 10 (the path leaves the axis;
  reference: the 800-point gMAM value), with the drift written in torch (autograd derivatives) and
  in numpy only (finite differences). Median of 5 runs, after one warm-up.
* ``min_action_path`` on tightly spiralling linear systems b = A x (|Im/Re| = 5.5 and 10 at the
  attractor, D = I, exact V from the Lyapunov equation), 100, 200 (the default) and 400 points.
* ``quasipotential_grid`` on the Maier-Stein system, box [-2, 0.5] x [-1.25, 1.25], meshes 128^2 to
  512^2, default update radius; the first call also compiles the numba kernel (cached on disk
  afterwards), timed separately. Error of V at the saddle against the exact/reference value.
* ``quasipotential_grid`` on rotating linear drifts (|Im/Re| = 3 and 10) against V = |x|^2: error
  against the update radius at n = 201, and against the mesh at the default radius.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch

from memdyn.ldp import min_action_path, quasipotential_grid


def maier_stein(beta, lib):
    def b(x):
        return lib.stack([x[:, 0] - x[:, 0] ** 3 - beta * x[:, 0] * x[:, 1] ** 2, -(1 + x[:, 0] ** 2) * x[:, 1]], 1)
    return b


def timed(f, repeat=5):
    f()
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = f()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main():
    init = [[-0.5, 0.4]]
    ref10 = min_action_path(maier_stein(10.0, torch), [-1, 0], [0, 0], init=init, n_points=800).action
    exact = {1.0: 0.5, 10.0: ref10}
    print("min_action_path, Maier-Stein, 100 points (target < 2 s)")
    print(f"{'beta':>5} {'drift':>6} {'seconds':>8} {'iters':>6} {'action':>10} {'rel. error':>10}")
    for beta in (1.0, 10.0):
        for name, lib in (("torch", torch), ("numpy", np)):
            t, res = timed(lambda: min_action_path(maier_stein(beta, lib), [-1, 0], [0, 0], init=init, n_points=100))
            print(f"{beta:5g} {name:>6} {t:8.3f} {res.iterations:6d} {res.action:10.6f} "
                  f"{abs(res.action / exact[beta] - 1):10.2e}")
    print(f"(beta = 10 reference: 800-point gMAM, V = {ref10:.6f})")

    from scipy.linalg import solve_continuous_lyapunov

    P = np.array([[1.0, 0.4], [0.2, 1.0]])
    x = np.array([0.5, 0.3])
    print("\nmin_action_path, spirals b = A x, A = P [[-mu, w], [-w, -mu]] P^-1, D = I, end (0.5, 0.3)")
    print(f"{'w/mu':>5} {'points':>6} {'seconds':>8} {'iters':>6} {'action':>10} {'rel. error':>10}")
    for mu, w in ((0.3, 1.648), (0.2, 2.0)):
        A = P @ np.array([[-mu, w], [-w, -mu]]) @ np.linalg.inv(P)
        V = 0.5 * x @ np.linalg.solve(solve_continuous_lyapunov(A, -np.eye(2)), x)
        for n in (100, 200, 400):
            t, res = timed(lambda: min_action_path(lambda z: z @ A.T, [0, 0], x, n_points=n), repeat=3)
            print(f"{w / mu:5.1f} {n:6d} {t:8.3f} {res.iterations:6d} {res.action:10.6f} {abs(res.action / V - 1):10.2e}")

    print("\nquasipotential_grid, Maier-Stein, box [-2, 0.5] x [-1.25, 1.25] (target: 512^2 < 60 s)")
    t0 = time.perf_counter()
    quasipotential_grid(maier_stein(1.0, torch), [-1, 0], [(-2, 0.5), (-1.25, 1.25)], 16)
    print(f"first call (numba compile or cache load): {time.perf_counter() - t0:.2f} s")
    print(f"{'beta':>5} {'mesh':>9} {'radius':>6} {'seconds':>8} {'V(saddle)':>10} {'rel. error':>10}")
    for beta in (1.0, 10.0):
        for n in (128, 256, 512):
            t0 = time.perf_counter()
            qp = quasipotential_grid(maier_stein(beta, torch), [-1, 0], [(-2, 0.5), (-1.25, 1.25)], n)
            t = time.perf_counter() - t0
            v = float(qp([[0.0, 0.0]])[0])
            print(f"{beta:5g} {n:>4}x{n:<4} {qp.radius:6d} {t:8.2f} {v:10.6f} {abs(v / exact[beta] - 1):10.2e}")

    print("\nquasipotential_grid, rotating b = A x, A = [[-1, -r], [r, -1]], D = I (V = |x|^2), box [-1, 1]^2;")
    print("error = max |V - V_exact| / max V over V <= 0.9 (target at n = 201, r up to 10: 1%)")
    print(f"{'r':>4} {'mesh':>5} {'radius':>12} {'seconds':>8} {'error':>9}")
    for r in (3.0, 10.0):
        A = np.array([[-1.0, -r], [r, -1.0]])
        for n in (101, 201, 401):
            for radius in ((6, 8, 12, 16, None) if n == 201 else (None,)):
                t0 = time.perf_counter()
                qp = quasipotential_grid(lambda z: z @ A.T, [0, 0], [(-1, 1), (-1, 1)], n, radius=radius)
                t = time.perf_counter() - t0
                X, Y = np.meshgrid(qp.x, qp.y, indexing="ij")
                Vex = X**2 + Y**2
                inside = Vex <= 0.9
                err = np.abs(qp.V - Vex)[inside].max() / Vex[inside].max()
                label = f"{qp.radius}" + (" (default)" if radius is None else "")
                print(f"{r:4g} {n:5d} {label:>12} {t:8.2f} {err:9.2e}")


if __name__ == "__main__":
    main()
