"""GPU histogram kernels (stats/gpu.py) against the CPU kernels, on real activations.

Runs EfficientNet-Lite0 in ONNX Runtime on the CPU over a few photos (what collection reads:
derived Relu/Clip outputs left out, blocked layout), copies the activations to the GPU, and
times both kernels on the same arrays: the bit-pattern histogram with min/max, and TensorRT's
linear histogram (|x| and the derived Clip(0, 6) outputs). Checks that every count, min and
max is identical. Prints one JSON object (and writes it to --json).

    python benchmarks/gpu_kernels.py --images list.txt --model efficientnet_lite0.onnx
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np


def _best(fn, repeat: int = 5, sync=lambda: None) -> float:
    fn()
    sync()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--images", required=True, help="list file of photos")
    p.add_argument("--count", type=int, nargs="+", default=[4, 32], help="images per measurement")
    p.add_argument("--json")
    p.add_argument("--cpu-only", action="store_true", help="only the CPU rows (a machine without a GPU)")
    a = p.parse_args()

    from int8calib.batching import BatchLoader
    from int8calib.preprocess import Preprocess
    from int8calib.runner import ActivationRunner
    from int8calib.sources import resolve
    from int8calib.stats import gpu, kernels
    from int8calib.stats.trt_histogram import TrtHistogram

    runner = ActivationRunner(a.model, derive=True, any_layout=True)
    clip_of = {source: hi for source, hi in runner.derived.values()}
    images = [l.strip() for l in Path(a.images).read_text().splitlines() if l.strip()]
    report = {"cpu_cores": os.cpu_count(), "runs": []}
    if not a.cpu_only:
        import cupy

        report["gpu"] = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    for count in a.count:
        batch = next(iter(BatchLoader(resolve(images[:count]), runner.inputs, Preprocess.load("efficientnet-lite"), count)))
        arrays = list(runner.run(batch.feeds).items())
        values = sum(x.size for _, x in arrays)
        ranges = {name: TrtHistogram.starting_at(max(abs(float(x.min())), abs(float(x.max())))) for name, x in arrays}

        # CPU: what collection runs per tensor (bit pattern + min/max, TensorRT's |x| and Clip histograms)
        def cpu_one(item):  # kernels.accumulate_all: what collection runs for a full cache
            name, x = item
            signed = name in clip_of
            clip = (TrtHistogram.starting_at(min(ranges[name].range, clip_of[name])), clip_of[name]) if signed else None
            kernels.accumulate_all(x, np.zeros((512 if signed else 256) << 8, np.int64), 8, signed,
                                   TrtHistogram.starting_at(ranges[name].range), clip)

        cpu_1 = _best(lambda: [cpu_one(item) for item in arrays], 3)
        cpu_threads = {}
        for threads in sorted({2, os.cpu_count() or 1}):
            with ThreadPoolExecutor(threads) as pool:
                cpu_threads[threads] = _best(lambda: list(pool.map(cpu_one, arrays)), 3)
        row = {"images": count, "tensors": len(arrays), "values": values, "cpu_1_thread_gps": values / cpu_1 / 1e9,
               **{f"cpu_{k}_threads_gps": values / v / 1e9 for k, v in cpu_threads.items()}}
        if a.cpu_only:
            report["runs"].append(row)
            print(json.dumps(row), flush=True)
            continue

        device = [(name, cupy.asarray(x)) for name, x in arrays]
        bits = {name: cupy.zeros((512 if name in clip_of else 256) << 8, cupy.uint64) for name, _ in device}
        linear = {name: cupy.zeros(2049, cupy.uint64) for name, _ in device}
        clipped = {name: cupy.zeros(2049, cupy.uint64) for name in clip_of}

        def gpu_all():
            for name, x in device:
                gpu.accumulate_checked(x, bits[name], 8, name in clip_of)  # one host sync: min/max
                gpu.bin_linear(x, linear[name], ranges[name].width)
                if name in clip_of:
                    gpu.bin_linear(x, clipped[name], 6.0 / 2048, clip_of[name])

        gpu_s = _best(gpu_all, 10, cupy.cuda.Device().synchronize)

        def gpu_window():  # bit-pattern increments in a shared-memory window (min/max first)
            for name, x in device:
                gpu.accumulate_windowed(x, bits[name], 8, name in clip_of)
                gpu.bin_linear(x, linear[name], ranges[name].width)
                if name in clip_of:
                    gpu.bin_linear(x, clipped[name], 6.0 / 2048, clip_of[name])

        window_s = _best(gpu_window, 10, cupy.cuda.Device().synchronize)
        linear_s = _best(lambda: [gpu.bin_linear(x, linear[name], ranges[name].width) for name, x in device], 10,
                         cupy.cuda.Device().synchronize)
        # kernels alone, no host sync per tensor (what a collector that keeps min/max on the GPU would pay)
        lohi = cupy.zeros(2, cupy.int32)
        _, module = gpu._module()

        def kernels_only():
            for name, x in device:
                n = np.int64(x.size)
                module.get_function("bit_pattern")((gpu._blocks(x.size),), (256,), (x.view(cupy.int32).reshape(-1), n, bits[name], np.uint32(0x7FFFFFFF), np.uint32(15), lohi))
                module.get_function("linear")((gpu._blocks(x.size),), (256,), (x.reshape(-1), n, linear[name], np.float64(1 / ranges[name].width), np.float32(np.inf), np.int32(0)))

        kernels_s = _best(kernels_only, 10, cupy.cuda.Device().synchronize)

        # identical counts: fresh histograms on both sides
        mismatches = []
        for (name, x), (_, d) in zip(arrays, device):
            want = np.zeros(256 << 8, np.int64)
            lo, hi = kernels.accumulate(x, want, 8)
            got = cupy.zeros(256 << 8, cupy.uint64)
            glo, ghi, _ = gpu.accumulate_checked(d, got, 8, False)
            want_lin = np.zeros(2048, np.int64)
            edge = kernels.bin_linear(x, want_lin, ranges[name].width)
            got_lin = cupy.zeros(2049, cupy.uint64)
            gpu.bin_linear(d, got_lin, ranges[name].width)
            lin, gedge = gpu.linear_counts(got_lin)
            same = (got.get().astype(np.int64) == want).all() and (lo, hi) == (glo, ghi)
            same = same and (lin == want_lin).all() and edge == gedge
            if name in clip_of:
                want_c = np.zeros(2048, np.int64)
                kernels.bin_linear(x, want_c, 6.0 / 2048, clip_of[name])
                got_c = cupy.zeros(2049, cupy.uint64)
                gpu.bin_linear(d, got_c, 6.0 / 2048, clip_of[name])
                same = same and (gpu.linear_counts(got_c)[0] == want_c).all()
            if not same:
                mismatches.append(name)
        # DLPack: a torch CUDA tensor goes in without a copy
        dlpack = None
        try:
            import torch

            t = torch.from_dlpack(device[0][1])
            got = cupy.zeros(256 << 8, cupy.uint64)
            gpu.accumulate_checked(t, got, 8, False)
            dlpack = int(got.sum()) == device[0][1].size
        except ImportError:
            pass
        report["runs"].append({
            **row, "gpu_window_gps": values / window_s / 1e9, "gpu_linear_only_gps": values / linear_s / 1e9,
            "gpu_gps": values / gpu_s / 1e9, "gpu_kernels_only_gps": values / kernels_s / 1e9,
            "gpu_s": gpu_s, "cpu_2_threads_s": cpu_threads.get(2),
            "speedup_vs_cpu_2_threads": cpu_threads[2] / gpu_s if 2 in cpu_threads else None,
            "identical": not mismatches, "mismatches": mismatches[:5], "torch_dlpack_ok": dlpack,
        })
        print(json.dumps(report["runs"][-1]), flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
