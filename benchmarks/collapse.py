"""Exact-fit collapse throughput vs bare multinomial sampling (the limit).

Reproduce with (from the repository root, after `make test` built .venv):

    .venv/bin/python benchmarks/collapse.py

Case (issue 4): N = 10^4 training points and data-set size N = 10^4, 1000 generations, 128
replicates, alpha = 0 (collapse). "Resampled atoms" counts N points per replicate and
generation. The limit is numpy's multinomial sampling of the same size: one
``Generator.multinomial(N, p)`` for 128 replicates over the 10^4 points with the first
generation's (uniform) weights, timed per generation. Later generations of the collapsing process
are cheaper than that because lost points are dropped from the sampling (a collapsed population
over k points costs O(k)), which is why the ratio exceeds 1.
"""

from __future__ import annotations

import time

import numpy as np

from memdyn.collapse import exact_fit


def main():
    N, G, R = 10_000, 1000, 128
    t0 = time.perf_counter()
    exact_fit(np.ones(N), N, G, R, seed=0)
    engine = N * G * R / (time.perf_counter() - t0)
    rng = np.random.default_rng(0)
    p = np.full((R, N), 1.0 / N)
    reps = 5
    t0 = time.perf_counter()
    for _ in range(reps):
        rng.multinomial(N, p)
    bare = N * R * reps / (time.perf_counter() - t0)
    print(f"exact-fit collapse, N = {N} points, {G} generations, {R} replicates")
    print(f"{'engine resampled atoms/s':>28s} {'bare multinomial atoms/s':>26s} {'ratio':>7s}")
    print(f"{engine:28.4g} {bare:26.4g} {engine / bare:7.2f}")
    print("goal ratio >= 0.5:", "met" if engine / bare >= 0.5 else "NOT met")


if __name__ == "__main__":
    main()
