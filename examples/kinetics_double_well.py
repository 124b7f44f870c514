"""Validation of memdyn.kinetics on a system with a known answer: a 1-D double well simulated at one
temperature, its kinetic model predicting the mean passage time at temperatures it never saw.

    python examples/kinetics_double_well.py [SEEDS] [FIRST]   # default 10 seeds from 500; ~20 s per seed

dx = -U'(x) dt + sqrt(2 T) dW with U = x^4 - 2 x^2 (barrier 1 between x = -1 and x = 1), by an
Euler-Maruyama loop (dt = 0.01, 200 trajectories of 30,000 steps from x = -1, every 5th step kept),
at T = 0.25. ReactionCoordinateModel (45 bins, lag from the implied time scales, 30 bootstrap
replicates) predicts the mean time from -1 to 0.95 at T = 0.15 .. 0.35; the exact value is that of the
same Euler-Maruyama iteration, solved as a discrete chain (memdyn.reference.exit_time_1d). Error
budget per prediction: the bootstrap se and the finite-step bias (the discrete chain minus its SDE
limit), in quadrature. Prints one line per seed and temperature, and z per temperature over seeds; writes
docs/figures/kinetics-double-well.png (the first seed's model).
"""

import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from memdyn import DoubleWell, ReactionCoordinateModel  # noqa: E402
from memdyn.reference import exit_time_1d, sde_exit_time_1d  # noqa: E402
from memdyn.stats import z_summary  # noqa: E402

DT, EVERY, T_FIT = 0.01, 5, 0.25
TEMPERATURES = (0.15, 0.18, 0.21, 0.25, 0.30, 0.35)
WELL = DoubleWell(-1, 0, 1, scale=4.0)          # F = x^4 - 2 x^2


def simulate(T: float, traj: int, steps: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.full(traj, -1.0)
    out = np.empty((traj, steps // EVERY))
    for k in range(steps):
        x = x - 4 * x * (x * x - 1) * DT + math.sqrt(2 * T * DT) * rng.standard_normal(traj)
        if (k + 1) % EVERY == 0:
            out[:, k // EVERY] = x
    return out


def exact(T: float) -> tuple[float, float]:
    sigma = math.sqrt(2 * T / DT)
    chain = exit_time_1d(WELL, sigma, DT, -1.0, 0.95) * DT
    return chain, abs(chain - sde_exit_time_1d(WELL, sigma, DT, -1.0, 0.95) * DT)


def main(seeds: int = 10, first: int = 500) -> None:
    ref = {T: exact(T) for T in TEMPERATURES}
    zs, first_model = {T: [] for T in TEMPERATURES}, None
    print("seed   T     predicted        exact    z")
    for seed in range(first, first + seeds):
        model = ReactionCoordinateModel.fit(simulate(T_FIT, 200, 30000, seed), T_FIT, bins=45, dt=DT * EVERY,
                                            n_boot=30, seed=seed)
        first_model = first_model or model
        for T in TEMPERATURES:
            v, se = model.at_temperature(T).mean_first_passage(-1.0, 0.95, return_se=True)
            z = (v - ref[T][0]) / math.hypot(se, ref[T][1])
            zs[T].append(z)
            print(f"{seed:4d} {T:.2f} {v:9.1f} ± {se:6.1f} {ref[T][0]:9.1f} {z:+5.2f}   lag {model.lag}"
                  f"{'' if model.converged else ' NOT CONVERGED'}")
    print("z per temperature over seeds (one seed's predictions share its model, so compare across seeds):")
    for T in TEMPERATURES if seeds > 1 else ():
        s = z_summary(zs[T])
        print(f"  T = {T:.2f}: mean {s.mean:+.2f}, sd {s.sd:.2f}, max |z| {s.max_abs:.2f} ({s.n} seeds)")
    _figure(first_model, ref)


def _figure(model: ReactionCoordinateModel, ref: dict) -> None:
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.8))
    its = model.implied
    ax[0].plot(its.lags * its.dt, its.timescales[:, 0], "o-")
    ax[0].axvline(model.lag * model.dt, color="grey", ls=":", label=f"lag chosen ({model.lag} samples)")
    ax[0].set(xscale="log", xlabel="lag (time)", ylabel="slowest implied time scale", title="lag choice")
    ax[0].legend()
    r = model.centers
    U, band = model.quasi_potential(return_se=True)
    ax[1].fill_between(r, U - 2 * band, U + 2 * band, alpha=0.3, label="fitted U = T (F - ln D), ±2 bootstrap se")
    true = r**4 - 2 * r**2
    ax[1].plot(r, true - true.min(), "k--", label="U(x) = x^4 - 2x^2")
    ax[1].set(xlabel="x", ylabel="U", title=f"quasi-potential, fitted at T = {model.temperature:g}", ylim=(-0.2, 3))
    ax[1].legend(fontsize=8)
    Ts = np.array(TEMPERATURES)
    pred = [model.at_temperature(T).mean_first_passage(-1.0, 0.95, return_se=True) for T in Ts]
    ax[2].errorbar(1 / Ts, [p[0] for p in pred], [2 * p[1] for p in pred], fmt="o", label="kinetic model (±2 se)")
    ax[2].plot(1 / Ts, [ref[T][0] for T in Ts], "s", mfc="none", ms=9, label="exact discrete chain")
    ax[2].axvline(1 / model.temperature, color="grey", ls=":", label="fitted here")
    ax[2].set(yscale="log", xlabel="1 / T", ylabel="mean time from -1 to 0.95", title="predicted at unseen T")
    ax[2].legend(fontsize=8)
    fig.tight_layout()
    out = Path(__file__).resolve().parent.parent / "docs" / "figures" / "kinetics-double-well.png"
    fig.savefig(out, dpi=110)
    print(f"figure: {out}")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
