"""memdyn.kinetics on the memorization model: is ln(d1/d2), the coordinate the monitor sees in real
training, a good reaction coordinate for memorization episodes?

    python examples/kinetics_memorization.py [SEEDS] [FIRST]   # default 5 seeds from 540; ~40 s per seed

The memorization experiment's default landscape (8 training points on the unit circle, h = 0.1,
c = 0.2, sigma = 28; barrier V = 0.00306 in FW units) under constant-step SGD at a = 1e-3: 64 chains
of 20,000 steps from the training points, each reduced to r = ln(d1/d2) (d1, d2: distances to the
nearest and second-nearest training point) at every step. ReactionCoordinateModel (40 bins on
[-4.5, 0], lag from the implied time scales, 20 bootstrap replicates; temperature a, time in a x steps)
predicts the mean residual episode length (its exit_time from the bins below ln 0.6, the free
core's edge) at a = 1e-3, 8.4e-4 and 7e-4, beside the exact discrete chain's quasi-stationary exit
time (the memorization experiment's reference). Prints, per seed, the lag choice, the implied time
scales, the barrier of U against V, and each prediction with its z; also the same fitted at lag 1.
"""

import math
import sys

import numpy as np

from memdyn import ReactionCoordinateModel, simulate
from memdyn.experiments.memorization import MemorizationConfig, _reference, _ring, _theory
from memdyn.memorization import MemorizingLandscape
from memdyn.noise import Gaussian
from memdyn.observers import Trace

A_FIT, STEPS, CHAINS = 1e-3, (1e-3, 8.4e-4, 7e-4), 64
END = math.log(0.6)                                # an episode ends when d1/d2 first exceeds 0.6


def coordinate(a: float, chains: int, steps: int, seed: int) -> np.ndarray:
    """r = ln(d1/d2) of every chain at every step, shape (chains, steps + 1)."""
    cfg = MemorizationConfig()
    S = _ring(cfg.n_train, cfg.radius)
    rng = np.random.default_rng(seed)
    init = S[rng.integers(0, len(S), chains)] + 0.05 * rng.standard_normal((chains, 2))
    sim = simulate(MemorizingLandscape(S, cfg.bandwidth, cfg.c), Gaussian(cfg.sigma), a, steps, chains, init=init,
                   seed=seed, observers=[Trace()], progress=False)
    x = sim.observed["trace"].values
    d = np.sort(np.sqrt(((x[:, :, None, :] - S[None, None]) ** 2).sum(-1)), axis=-1)
    return np.log(d[..., 0] / d[..., 1]).T


def fit(r: np.ndarray, seed: int, lag: int | None = None) -> ReactionCoordinateModel:
    return ReactionCoordinateModel.fit(r, A_FIT, bins=40, range=(-4.5, 0.0), dt=A_FIT, n_boot=20, seed=seed, lag=lag)


def main(seeds: int = 5, first: int = 540) -> None:
    cfg = MemorizationConfig()
    th = _theory(cfg.n_train, cfg.radius, cfg.bandwidth, cfg.c, cfg.sigma)
    V = float(th.exit_barrier[:-1].min())
    exact = {a: _reference(cfg, a)["mean"] for a in STEPS}
    print(f"barrier V = {V:.5f}; exact mean residual episode (steps): "
          + ", ".join(f"a={a:g}: {exact[a]:.0f}" for a in STEPS))
    for seed in range(first, first + seeds):
        r = coordinate(A_FIT, CHAINS, 20000, seed)
        for lag in (None, 1):
            m = fit(r, seed, lag)
            well = float(m.centers[np.argmin(m.quasi_potential())])
            U, U_se = m.barrier(well, END)
            line = [f"{seed:4d} lag {m.lag:3d} {'converged' if m.converged else 'NOT CONVERGED'}; "
                    f"barrier {U:.5f} ± {U_se:.5f} (V {V:.5f})"]
            for a in STEPS:
                t, se = m.at_temperature(a).exit_time(well, END, return_se=True)
                line.append(f"a={a:g}: {t / a:6.0f} ± {se / a:5.0f} vs {exact[a]:5.0f} (z {(t / a - exact[a]) / (se / a):+.1f})")
            print("; ".join(line))
            if lag is None:
                its = m.implied
                print("     slowest implied time scale (steps) at lags "
                      + ", ".join(f"{L}: {t / A_FIT:.0f}" for L, t in zip(its.lags, its.timescales[:, 0])))


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
