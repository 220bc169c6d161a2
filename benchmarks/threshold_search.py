"""Threshold-search speed: the KL search per 2048-bin histogram, and every method over a statistics file.

    PYTHONPATH=src python benchmarks/threshold_search.py [stats.npz]

Targets (issue 3): entropy over 2048 bins <= 5 ms per tensor; all methods for all tensors of
EfficientNet-Lite0 < 2 s.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from int8calib.methods import compute_all
from int8calib.methods.entropy import kl_divergences
from int8calib.stats import load


def best_of(fn, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    rng = np.random.default_rng(0)
    h = rng.exponential(size=2048) * np.exp(-np.arange(2048) / 300)
    kl_divergences(h)  # build the cached level table once
    per = best_of(lambda: [kl_divergences(h) for _ in range(20)]) / 20
    print(f"KL search, 2048 bins: {per * 1e3:.2f} ms per tensor (1921 candidates)")
    if len(sys.argv) > 1:
        stats = load(sys.argv[1])
        compute_all(stats)  # warm-up
        runs = [compute_all(stats)[1] for _ in range(3)]
        best = {m: min(r[m] for r in runs) for m in runs[0]}
        for m, s in best.items():
            print(f"{m:<10} {s * 1e3:8.1f} ms for {len(stats)} tensors ({s / len(stats) * 1e3:.2f} ms/tensor)")
        print(f"all methods: {sum(best.values()):.2f} s")


if __name__ == "__main__":
    main()
