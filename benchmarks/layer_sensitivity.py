"""Which layers cost a Q/DQ model its accuracy: one layer quantized at a time (docs/qdq.md, "Equalization").

    PYTHONPATH=src:tests:benchmarks python benchmarks/layer_sensitivity.py [--model ppocr-det] [--scored 8]
        [--method percentile:99.99] [--layers p2o.Conv.1 p2o.Conv.3 ...]

For each quantized layer of the model (or of --layers): output SQNR against the float model on the
first --scored held-out samples of benchmarks/accuracy_table.py's split with only that layer's Q/DQ
(input and weights), with only its weights rounded to int8 (per output channel), with only its input
quantized (per tensor), and its input's per-channel max |x| on 8 calibration samples beside the one
range the method gives it. Rows sorted by the first column, worst first.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from int8calib.auto import auto_candidate
from int8calib.methods import compute_ranges
from int8calib.passes.equalization import channel_ranges
from int8calib.writers.qdq import _constants, build_qdq, node_id, quantize_per_channel, weight_axis
from accuracy_table import Scorer, cases, loader
from equalization import statistics


def with_constant(model: onnx.ModelProto, name: str, value: np.ndarray) -> onnx.ModelProto:
    """A copy of ``model`` whose initializer or Constant node ``name`` holds ``value``."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    tensor = numpy_helper.from_array(value.astype(np.float32), name)
    for init in out.graph.initializer:
        if init.name == name:
            init.CopyFrom(tensor)
    for node in out.graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            node.attribute[0].t.CopyFrom(tensor)
    return out


def input_only(model: onnx.ModelProto, node_name: str, amax: float) -> onnx.ModelProto:
    """A copy of ``model`` with a per-tensor Q/DQ on the input of ``node_name`` only."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes = list(out.graph.node)
    k = next(i for i, n in enumerate(nodes) if node_id(n) == node_name)
    x = nodes[k].input[0]
    out.graph.initializer.extend([numpy_helper.from_array(np.array(amax / 127, np.float32), "sens_scale"),
                                  numpy_helper.from_array(np.array(0, np.int8), "sens_zero")])
    pair = [helper.make_node("QuantizeLinear", [x, "sens_scale", "sens_zero"], ["sens_q"]),
            helper.make_node("DequantizeLinear", ["sens_q", "sens_scale", "sens_zero"], ["sens_dq"])]
    nodes[k].input[0] = "sens_dq"
    del out.graph.node[:]
    out.graph.node.extend(nodes[:k] + pair + nodes[k:])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default=str(Path(__file__).resolve().parents[1].parent / "shared"))
    parser.add_argument("--model", default="ppocr-det")
    parser.add_argument("--scored", type=int, default=8)
    parser.add_argument("--method", default="percentile:99.99")
    parser.add_argument("--layers", nargs="*")
    parser.add_argument("--cache", default="/tmp/int8calib-equalization")
    args = parser.parse_args()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        case = next(cases(Path(args.shared), Path(tmp), [args.model]))
        case.held = case.held[:args.scored]
        model = onnx.load(str(case.path))
        stats = statistics(case, case.path, model, cache / f"{case.name}-no.npz")
        method, params = auto_candidate(args.method)
        amax = compute_ranges(method, stats, **params)
        scorer = Scorer(case, model)
        score = lambda m: scorer.score(m)["sqnr_db"]  # noqa: E731
        full, summary = build_qdq(model, amax)
        print(f"\n{case.name}: every layer quantized: {score(full):.2f} dB on {len(case.held)} samples\n")
        layers = args.layers or list(summary.quantized_nodes)
        nodes = {node_id(n): n for n in model.graph.node}
        constants = _constants(model.graph)
        inputs = sorted({nodes[name].input[0] for name in layers})
        channels, _ = channel_ranges(model, loader(case, model, case.calib[:8]), inputs, max_samples=8)
        rows = []
        for name in layers:
            node = nodes[name]
            alone, _ = build_qdq(model, amax, keep_float=[n for n in summary.quantized_nodes if n != name])
            w = constants[node.input[1]]
            axis = weight_axis(node, 1, w.ndim)
            q, s = quantize_per_channel(w, axis)
            shape = [1] * w.ndim
            shape[axis] = -1
            weights = score(with_constant(model, node.input[1], q * s.reshape(shape)))
            x = node.input[0]
            r = channels[x].max
            rows.append((score(alone), name, node.op_type, int(next((a.i for a in node.attribute if a.name == "group"), 1)),
                         x, weights, score(input_only(model, name, amax[x])), r, amax[x]))
        print("| layer | group | input | Q/DQ on input and weights | weights only | input only | input channels' max: min / median / max (amax) |")
        print("| --- | ---: | --- | ---: | ---: | ---: | --- |")
        for both, name, op, group, x, weights, act, r, a in sorted(rows):
            print(f"| {name} ({op}) | {group} | {x} | {both:.2f} dB | {weights:.2f} dB | {act:.2f} dB | "
                  f"{r.min():.2f} / {np.median(r):.2f} / {r.max():.2f} ({a:.2f}) |", flush=True)


if __name__ == "__main__":
    main()
