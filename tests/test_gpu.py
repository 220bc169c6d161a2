"""GPU statistics (stats/gpu.py, CuPy) equal the CPU kernels' bit for bit; the onnxruntime-gpu
path (CUDA provider, I/O binding) gives the CPU run's cache. Run where a GPU is; skipped elsewhere."""

from __future__ import annotations

import numpy as np
import pytest

from int8calib.stats import gpu, kernels
from int8calib.stats.collector import StatsCollector

pytestmark = pytest.mark.skipif(not gpu.available(), reason="needs CuPy and an NVIDIA GPU")


def _values(rng, n):
    x = (rng.standard_normal(n) * rng.uniform(0.01, 100)).astype(np.float32)
    x[rng.integers(0, n, n // 3)] = 0.0  # Relu-like runs of zeros
    special = np.array([0.0, -0.0, 1e-45, -1e-45, 6.0, -6.0, 3e38, -3e38, 1e-30, -2e-20], np.float32)
    x[: min(n, special.size)] = special[:n]
    return x


@pytest.mark.parametrize("signed", [False, True])
def test_gpu_kernels_equal_the_cpu_kernels(signed):
    import cupy

    rng = np.random.default_rng(0)
    for n in (1, 31, 1000, 300_001):
        x = _values(rng, n)
        want = np.zeros((512 if signed else 256) << 8, np.int64)
        got = cupy.zeros(want.size, cupy.uint64)
        assert gpu.accumulate_checked(cupy.asarray(x), got, 8, signed) == kernels.accumulate_checked(x, want, 8, signed)
        np.testing.assert_array_equal(got.get().astype(np.int64), want)
        got[:] = 0
        assert gpu.accumulate_windowed(cupy.asarray(x), got, 8, signed) == kernels.accumulate_checked(x, want * 0, 8, signed)
        np.testing.assert_array_equal(got.get().astype(np.int64), want)
        for clip in (None, 6.0):
            width = float(np.float32(np.abs(x).max() / 2048)) if clip is None else 6.0 / 2048
            want_lin = np.zeros(2048, np.int64)
            edge = kernels.bin_linear(x, want_lin, width, clip)
            got_lin = cupy.zeros(2049, cupy.uint64)
            gpu.bin_linear(cupy.asarray(x), got_lin, width, clip)
            counts, got_edge = gpu.linear_counts(got_lin)
            np.testing.assert_array_equal(counts, want_lin)
            assert got_edge == edge
    bad = cupy.asarray(np.array([1.0, np.nan], np.float32))
    assert gpu.accumulate_checked(bad, cupy.zeros(256 << 8, cupy.uint64), 8, False)[2] is False


def test_gpu_collector_equals_the_cpu_collector():
    import cupy

    from int8calib.stats.gpu_collector import GpuStatsCollector

    rng = np.random.default_rng(1)
    batches = [{"conv": _values(rng, 5000).reshape(5, -1), "out": _values(rng, 500)} for _ in range(4)]
    results = []
    for cls, to in ((StatsCollector, np.asarray), (GpuStatsCollector, cupy.asarray)):
        c = cls(signed={"conv"}, derived={"clip": ("conv", 6.0)})
        for step, batch in enumerate(batches):  # two steps per batch
            c.collect({k: to(v) for k, v in batch.items()}, samples=1, new_batch=step % 2 == 0)
        results.append(c.result())
    cpu, dev = results
    assert list(cpu.tensors) == list(dev.tensors) == ["conv", "out", "clip"]
    for name in cpu.tensors:
        a, b = cpu[name], dev[name]
        np.testing.assert_array_equal(a.counts, b.counts)
        assert (a.min, a.max) == (b.min, b.max)
        np.testing.assert_array_equal(a.trt.counts, b.trt.counts)
        assert a.trt.range == b.trt.range


def test_onnxruntime_gpu_path_gives_the_cpu_cache(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("needs onnxruntime-gpu")
    import onnx

    from int8calib.api import calibrate
    from int8calib.runner import ActivationRunner
    from tinymodels import residual_cnn

    model = tmp_path / "m.onnx"
    onnx.save(residual_cnn(), str(model))
    data = tmp_path / "data.npy"
    np.save(data, np.random.default_rng(2).standard_normal((24, 3, 8, 8)).astype(np.float32))
    assert ActivationRunner(model, ["CUDAExecutionProvider"]).on_device
    for method in ("minmax", "entropy2"):
        cpu = calibrate(model, str(data), method=method, cache=tmp_path / "cpu.cache", providers=["CPUExecutionProvider"])
        cuda = calibrate(model, str(data), method=method, cache=tmp_path / "cuda.cache", providers=["CUDAExecutionProvider"])
        assert cuda.amax.keys() == cpu.amax.keys()
        # the GPU's convolutions may round differently from the CPU's: max |x| within 1e-4,
        # entropy2's threshold within 1 % (a few of its 2048 bins)
        for name, amax in cpu.amax.items():
            assert cuda.amax[name] == pytest.approx(amax, rel=1e-4 if method == "minmax" else 1e-2, abs=1e-6), name
