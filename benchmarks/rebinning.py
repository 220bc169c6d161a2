"""Choosing DEFAULT_MANTISSA_BITS: re-binned bit-pattern histograms vs exact histograms.

On real EfficientNet-Lite0 activations (first N even-class shared images), for each
resolution: amax of entropy2 / percentile / mse from the bit-pattern statistics vs the
same from exact data (entropy2: numpy.histogram with 2048 bins over [0, max|x|];
percentile: numpy.percentile of |x|; mse: the exact quantization error of the raw values,
minimised over a 0.1 % grid around the optimum), histogram speed, re-binning speed,
memory per tensor and statistics-file size.

    PYTHONPATH=src python benchmarks/rebinning.py [--images 16] [--bits 4 6 8 10 12]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from int8calib.methods import compute_amax
from int8calib.methods.entropy import kl_threshold
from int8calib.preprocess import Preprocess
from int8calib.runner import ActivationRunner
from int8calib.stats import StatsCollector, save

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
if not SHARED.is_dir():
    SHARED = Path("/work/shared")


def even_images(n: int) -> list[Path]:
    folder = SHARED / "data" / "imagenet-sample"
    rows = [r.split("\t") for r in (folder / "labels.tsv").read_text().splitlines()[1:]]
    return [folder / r[0] for r in rows if int(r[2]) % 2 == 0][:n]


def exact_mse_amax(x: np.ndarray, around: float) -> float:
    """argmin over t in [0.8, 1.2] x around (0.1 % steps) of the quantization error of x."""
    best, best_t = np.inf, around
    for t in around * np.arange(0.8, 1.2, 0.001):
        s = t / 127
        err = float(np.sum((np.minimum(np.round(x / s), 127) * s - x) ** 2))
        if err < best:
            best, best_t = err, t
    return best_t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--bits", type=int, nargs="+", default=[4, 6, 8, 10, 12])
    ap.add_argument("--mse-tensors", type=int, default=12, help="tensors to check mse on (brute force is slow)")
    args = ap.parse_args()

    runner = ActivationRunner(SHARED / "models" / "efficientnet_lite0.onnx")
    pre = Preprocess.load("efficientnet-lite")
    collectors = {b: StatsCollector(b) for b in args.bits}
    hist_seconds = dict.fromkeys(args.bits, 0.0)
    raw: dict[str, list[np.ndarray]] = {}
    images = even_images(args.images)
    for start in range(0, len(images), 8):
        batch = np.stack([pre(p) for p in images[start : start + 8]])
        acts = runner.run({runner.inputs[0].name: batch})
        for b, c in collectors.items():
            t0 = time.perf_counter()
            c.collect(acts, samples=len(batch))
            hist_seconds[b] += time.perf_counter() - t0
        for name, a in acts.items():
            raw.setdefault(name, []).append(np.abs(a.astype(np.float32)).ravel())
    values = {k: np.concatenate(v).astype(np.float64) for k, v in raw.items()}
    n_values = sum(v.size for v in values.values())
    print(f"{len(images)} images, {len(values)} tensors, {n_values / 1e6:.1f} M values")

    exact = {}
    for name, x in values.items():
        top = float(x.max())
        if top <= 0:
            continue
        counts, _ = np.histogram(x, bins=2048, range=(0.0, top))
        exact[name] = {"entropy2": kl_threshold(counts.astype(np.float64), top / 2048), "percentile": float(np.percentile(x, 99.99))}
    mse_names = sorted(exact, key=lambda n: values[n].size)[: args.mse_tensors]  # the smaller tensors
    for name in mse_names:
        exact[name]["mse"] = exact_mse_amax(values[name], compute_amax("mse", collectors[max(args.bits)].result()[name]))

    print("bits  method       median |rel diff|   p90 |rel diff|   max |rel diff|  tensors > 1 %")
    for b in args.bits:
        stats = collectors[b].result()
        for method in ("entropy2", "percentile", "mse"):
            diffs = [abs(compute_amax(method, stats[n]) / e[method] - 1) for n, e in exact.items() if method in e]
            big = sum(d > 0.01 for d in diffs)
            print(f"{b:>4}  {method:<10} {np.median(diffs):>18.5f} {np.percentile(diffs, 90):>16.5f} "
                  f"{np.max(diffs):>16.5f}  {big:>5} of {len(diffs)}")
    print("\nbits  hist G values/s  linear(2048) ms/tensor  KB/tensor in memory  file KB")
    for b in args.bits:
        stats = collectors[b].result()
        t0 = time.perf_counter()  # (the first resolution's hist figure includes numba's start-up)
        for h in stats.tensors.values():
            h.linear(2048)
        rebin_ms = (time.perf_counter() - t0) / len(stats) * 1e3
        save(stats, Path("/tmp/_rebinning_stats.npz"))
        size = Path("/tmp/_rebinning_stats.npz").stat().st_size / 1024
        print(f"{b:>4}  {n_values / hist_seconds[b] / 1e9:>15.2f}  {rebin_ms:>22.3f}  {(256 << b) * 8 / 1024:>19.0f}  {size:>7.0f}")


if __name__ == "__main__":
    main()
