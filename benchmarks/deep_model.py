"""Per-tensor overhead of collection on a generated deep model (> 1,000 activation tensors).

    python benchmarks/deep_model.py [--layers 150] [--hidden 64] [--tokens 32] [--batch 8] [--batches 10]

The model is a stack of pre-norm MLP blocks of a transformer encoder
(LayerNormalization, MatMul, Add, Relu, MatMul, Add, residual Add: 7 activations per
block), so tensors are many and small and any per-tensor Python cost shows. The
script reports, per batch: plain ONNX Runtime, ONNX Runtime with every activation
exposed, histogramming on one thread and on a thread pool, and the whole
``collect_statistics`` loop; then the cost per tensor per batch beyond the kernel's
own work on the values.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from int8calib.calibrator import Calibrator  # noqa: E402
from int8calib.collection import collect_statistics  # noqa: E402
from int8calib.runner import ActivationRunner  # noqa: E402
from int8calib.stats import StatsCollector  # noqa: E402


def deep_model(layers: int, hidden: int) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits, nodes = [], []

    def weight(name, shape, scale):
        inits.append(numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name))
        return name

    x = "input"
    ones, zeros = "ln_scale", "ln_bias"
    inits += [numpy_helper.from_array(np.ones(hidden, np.float32), ones), numpy_helper.from_array(np.zeros(hidden, np.float32), zeros)]
    for i in range(layers):
        w1 = weight(f"w1_{i}", [hidden, 2 * hidden], hidden**-0.5)
        b1 = weight(f"b1_{i}", [2 * hidden], 0.1)
        w2 = weight(f"w2_{i}", [2 * hidden, hidden], (2 * hidden) ** -0.5 * 0.5)
        b2 = weight(f"b2_{i}", [hidden], 0.1)
        t = [f"l{i}_{k}" for k in ("norm", "fc1", "bias1", "relu", "fc2", "bias2", "out")]
        nodes += [
            helper.make_node("LayerNormalization", [x, ones, zeros], [t[0]], axis=-1),
            helper.make_node("MatMul", [t[0], w1], [t[1]]),
            helper.make_node("Add", [t[1], b1], [t[2]]),
            helper.make_node("Relu", [t[2]], [t[3]]),
            helper.make_node("MatMul", [t[3], w2], [t[4]]),
            helper.make_node("Add", [t[4], b2], [t[5]]),
            helper.make_node("Add", [x, t[5]], [t[6]]),
        ]
        x = t[6]
    graph = helper.make_graph(
        nodes, "deep", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", "T", hidden])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["N", "T", hidden])], inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def timed(fn, repeat: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=150)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--batches", type=int, default=10)
    a = p.parse_args()
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "deep.onnx"
        onnx.save(deep_model(a.layers, a.hidden), str(path))
        data = Path(tmp) / "data.npy"
        x = np.random.default_rng(1).standard_normal((a.batch * a.batches, a.tokens, a.hidden)).astype(np.float32)
        np.save(data, x)
        feeds = {"input": x[: a.batch]}

        t = time.perf_counter()
        runner = ActivationRunner(path)
        setup = time.perf_counter() - t
        tensors = len(runner.tensors)
        plain = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        t_plain = timed(lambda: plain.run(None, feeds), 5)
        t_exposed = timed(lambda: runner.run(feeds), 5)
        acts = runner.run(feeds)
        values = sum(v.size for v in acts.values())

        # Warm collectors: histograms are allocated (512 KB each) on the first batch only.
        warm = StatsCollector()
        warm.collect(acts)
        t_one = timed(lambda: warm.collect(acts), 5)
        with ThreadPoolExecutor(os.cpu_count()) as pool:
            def threaded():
                warm.submit(acts, pool)
                warm.wait()

            t_pool = timed(threaded, 5)
        # The kernel's own cost on these values: the same values as one big tensor.
        big = np.concatenate([v.reshape(-1) for v in acts.values()])
        one = StatsCollector()
        t_kernel = timed(lambda: one.collect({"all": big}), 5)

        calibrator = Calibrator(str(data), runner.inputs, None, a.batch)
        t = time.perf_counter()
        stats = collect_statistics(calibrator.loader, runner)
        t_collect = (time.perf_counter() - t) / a.batches

    per_tensor_us = (t_one - t_kernel) / tensors * 1e6
    print(f"deep model: {a.layers} blocks, {tensors} activation tensors, {values / tensors:.0f} values each "
          f"(batch {a.batch} x {a.tokens} tokens x hidden {a.hidden}); runner setup {setup:.1f} s")
    print("| per batch | ms |\n|---|---:|")
    print(f"| ONNX Runtime, plain model | {t_plain * 1e3:.1f} |")
    print(f"| ONNX Runtime, {tensors} activations exposed (runner.run) | {t_exposed * 1e3:.1f} |")
    print(f"| histograms, 1 thread (StatsCollector.collect) | {t_one * 1e3:.1f} |")
    print(f"| histograms, {os.cpu_count()} threads (StatsCollector.submit) | {t_pool * 1e3:.1f} |")
    print(f"| kernel alone on the same values as one array | {t_kernel * 1e3:.1f} |")
    print(f"| collect_statistics, whole loop | {t_collect * 1e3:.1f} |")
    print(f"Python overhead per tensor per batch: {per_tensor_us:.0f} us "
          f"(histogram of 256<<8 int64 = 512 KB per tensor: {tensors * 0.5:.0f} MB in all); "
          f"{len(stats)} tensors collected.")


if __name__ == "__main__":
    main()
