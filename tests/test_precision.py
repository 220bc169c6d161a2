"""INT8 + FP16 / BF16 Q/DQ models (writers/precision.py): types, kept-FP32 rules, casts, scales, CLI."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import qdq_graphs as g
from int8calib.cachefiles.read import read_range_file
from int8calib.cli import main
from int8calib.errors import Int8CalibError
from int8calib.passes import quantized_model
from int8calib.runner import ActivationRunner
from int8calib.writers.precision import (
    FP16_MIN_NORMAL, PrecisionOptions, float32_compute_nodes, lower_precision, model_precision,
)
from int8calib.writers.qdq import check, quantize_per_channel

F16 = TensorProto.FLOAT16


def _model(nodes, inputs, outputs, inits, opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def detector_head(rng, boost: float = 1.0) -> onnx.ModelProto:
    """x [N,3,8,8] -> Conv -> SiLU (Sigmoid * x) -> Mul(boost) -> Resize x2 (scales input) -> Concat with
    a Conv of the upsampled map -> Softmax over channels -> y: SiLU, Resize, Concat, Softmax as detectors have."""
    f = np.float32
    inits = {"w1": (rng.standard_normal((4, 3, 3, 3)) * 0.5).astype(f), "b1": rng.standard_normal(4).astype(f),
             "w2": (rng.standard_normal((4, 4, 1, 1)) * 0.5).astype(f), "b2": np.zeros(4, f),
             "boost": np.array(boost, f), "roi": np.zeros(0, f), "scales": np.array([1, 1, 2, 2], f)}
    mk = helper.make_node
    nodes = [
        mk("Conv", ["x", "w1", "b1"], ["c1"], "conv1", pads=[1, 1, 1, 1]),
        mk("Sigmoid", ["c1"], ["s1"], "silu_sigmoid"), mk("Mul", ["c1", "s1"], ["a1"], "silu_mul"),
        mk("Mul", ["a1", "boost"], ["big"], "boost"),
        mk("Resize", ["big", "roi", "scales"], ["up"], "upsample", mode="nearest"),
        mk("Conv", ["up", "w2", "b2"], ["c2"], "conv2"),
        mk("Concat", ["up", "c2"], ["cat"], "concat", axis=1),
        mk("Softmax", ["cat"], ["y"], "softmax", axis=1),
    ]
    return _model(nodes, [g._vi("x", ["N", 3, 8, 8])], [g._vi("y", ["N", 8, 16, 16])], inits)


def _types(model) -> dict[str, int]:
    from int8calib.runner.model import infer_types

    return infer_types(model)


def _sqnr(ref, test) -> float:
    ref, test = np.asarray(ref, np.float64), np.asarray(test, np.float64)
    return 10 * np.log10((ref ** 2).sum() / max(((ref - test) ** 2).sum(), 1e-300))


def _run(model, x) -> np.ndarray:
    return ActivationRunner(model, None, ["y"]).run({"x": x})["y"]


@pytest.fixture
def head(rng):
    model = detector_head(rng)
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    return model, x, g.amax_of(model, {"x": x})


def test_fp16_model_computes_everything_outside_qdq_in_fp16(head):
    model, x, amax = head
    built = quantized_model(model, amax, precision=PrecisionOptions("fp16", ranges=amax))
    out = built.model
    check(out)
    types = _types(out)
    # no float32 computation left: the input is cast once, on entry, the output once, on exit
    assert float32_compute_nodes(out) == []
    assert [n.op_type for n in out.graph.node if n.input and n.input[0] == "x"] == ["Cast"]
    assert [n.op_type for n in out.graph.node if n.output[0] == "y"] == ["Cast"]
    assert types["x"] == TensorProto.FLOAT and types["y"] == TensorProto.FLOAT
    # every Q/DQ scale is float16, so every DequantizeLinear outputs float16
    inits = {i.name: i for i in out.graph.initializer}
    for node in out.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            assert inits[node.input[1]].data_type == F16
        if node.op_type == "DequantizeLinear":
            assert types[node.output[0]] == F16
    # Resize's scales input is float32 by its schema and stays so; its data and output are float16
    resize = next(n for n in out.graph.node if n.op_type == "Resize")
    assert types[resize.input[2]] == TensorProto.FLOAT and types[resize.output[0]] == F16
    assert built.precision.fp32_nodes == {} and built.precision.casts == 2
    assert [o.version for o in out.opset_import if o.domain == ""] == [19]


def test_fp16_output_is_the_fp32_rest_model_rounded(head):
    """INT8 + FP16 against INT8 + FP32 with the same ranges: only FP16's rounding differs (> 35 dB apart),
    both far closer to each other than to the float model."""
    model, x, amax = head
    fp32 = quantized_model(model, amax, precision=PrecisionOptions("fp32")).model
    fp16 = quantized_model(model, amax, precision=PrecisionOptions("fp16", ranges=amax)).model
    ref, a, b = _run(model, x), _run(fp32, x), _run(fp16, x)
    assert b.dtype == np.float32 and np.isfinite(b).all()
    assert _sqnr(a, b) > 35
    assert abs(_sqnr(ref, a) - _sqnr(ref, b)) < 0.3


def test_a_tensor_beyond_fp16s_range_keeps_its_node_fp32_and_outputs_stay_finite(rng):
    model = detector_head(rng, boost=30000.0)  # the boosted SiLU output reaches ~1e5: beyond 65504
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    amax = g.amax_of(model, {"x": x})
    assert amax["big"] > 65504
    built = quantized_model(model, amax, precision=PrecisionOptions("fp16", ranges=amax))
    kept = built.precision.fp32_nodes
    # the Mul producing it, and every reader of the tensor (Resize, then Concat and Softmax downstream)
    assert {"boost", "upsample", "concat", "softmax"} <= set(kept)
    assert "'big' observed up to" in kept["boost"]
    assert "silu_mul" not in kept and "conv1" not in kept
    y, ref = _run(built.model, x), _run(model, x)
    assert np.isfinite(y).all()
    fp32 = _run(quantized_model(model, amax, precision=PrecisionOptions("fp32")).model, x)
    assert abs(_sqnr(ref, y) - _sqnr(ref, fp32)) < 0.3  # as good as INT8 + FP32
    # forced to FP16 against the rule, the same model overflows: the rule is what keeps it finite
    forced = quantized_model(model, amax, precision=PrecisionOptions("fp16", ranges=amax, low_nodes="."))
    assert not forced.precision.fp32_nodes
    assert _sqnr(ref, _run(forced.model, x)) < _sqnr(ref, y) - 6


def test_constants_fp16_cannot_hold_keep_their_node_fp32(rng):
    f = np.float32
    mk = helper.make_node
    nodes = [mk("Mul", ["x", "neg_inf_ish"], ["m"], "mask_scale"), mk("Add", ["m", "x"], ["a"], "add"),
             mk("ReduceL2", ["a"], ["n"], "norm", axes=[1], keepdims=1),
             mk("Clip", ["n", "eps"], ["nc"], "clamp"), mk("Div", ["a", "nc"], ["y"], "normalize")]
    model = _model(nodes, [g._vi("x", [2, 4])], [g._vi("y", [2, 4])],
                   {"neg_inf_ish": np.array(np.finfo(f).min, f), "eps": np.array(1e-9, f)})
    low, summary = lower_precision(model, PrecisionOptions("fp16"))
    assert summary.fp32_nodes == {"mask_scale": "constant with |value| up to 3.4e+38, beyond FP16's 65504",
                                  "clamp": "constant 1e-09 would be 0 in FP16"}
    check(low)


def test_weight_scales_are_rounded_before_the_weights(rng):
    w = rng.standard_normal((6, 3, 3, 3)).astype(np.float32)
    w[1] *= 1e-4  # a channel whose scale FP16 could only hold as a subnormal
    w[2] = 0
    q, s = quantize_per_channel(w, 0, "fp16")
    assert np.array_equal(s, s.astype(np.float16).astype(np.float32))  # exactly representable in FP16
    assert s[1] == np.float32(FP16_MIN_NORMAL)  # kept at FP16's smallest normal number
    # each weight is rounded with the scale that is written: within half a step of it
    err = np.abs(q.astype(np.float32) * s[:, None, None, None] - w)
    assert (err <= s[:, None, None, None] / 2 * (1 + 1e-6)).all()
    q32, s32 = quantize_per_channel(w, 0)
    assert s32[1] < FP16_MIN_NORMAL and not np.array_equal(s32, s)


def test_bf16_and_low_precision_io(head):
    model, x, amax = head
    bf16 = quantized_model(model, amax, precision=PrecisionOptions("bf16")).model
    check(bf16)
    inits = {i.name: i for i in bf16.graph.initializer}
    scales = [inits[n.input[1]] for n in bf16.graph.node if n.op_type == "QuantizeLinear"]
    assert scales and all(s.data_type == TensorProto.BFLOAT16 for s in scales)
    io16 = quantized_model(model, amax, precision=PrecisionOptions("fp16", ranges=amax, keep_io_types=False)).model
    check(io16)
    assert io16.graph.input[0].type.tensor_type.elem_type == F16 == io16.graph.output[0].type.tensor_type.elem_type
    assert float32_compute_nodes(io16) == []
    y = ActivationRunner(io16, None, ["y"]).run({"x": x.astype(np.float16)})["y"]
    assert y.dtype == np.float16 and _sqnr(_run(model, x), y) > 15


def test_forcing_nodes_and_op_types(head):
    model, _, amax = head
    built = quantized_model(model, amax, precision=PrecisionOptions("fp16", ranges=amax, fp32_nodes="^silu", fp32_op_types=("Softmax",)))
    assert built.precision.fp32_nodes == {
        "silu_sigmoid": "name matches --fp32-nodes '^silu'", "silu_mul": "name matches --fp32-nodes '^silu'",
        "softmax": "op type Softmax forced to FP32"}
    check(built.model)
    with pytest.raises(Int8CalibError, match="--high-precision must be one of"):
        PrecisionOptions("fp8")


def test_fp32_leaves_the_model_as_it_was(head):
    model, _, amax = head
    built = quantized_model(model, amax, precision=PrecisionOptions("fp32"))
    assert float32_compute_nodes(built.model)  # all of it
    assert model_precision(built.model).precision == "fp32"


def test_calibrate_cli_default_writes_int8_fp16_and_reports_kept_nodes(rng, tmp_path, capsys):
    model = detector_head(rng, boost=30000.0)
    onnx.save(model, tmp_path / "m.onnx")
    np.save(tmp_path / "x.npy", rng.standard_normal((12, 3, 8, 8)).astype(np.float32))
    out = tmp_path / "m.qdq.onnx"
    assert main(["calibrate", str(tmp_path / "m.onnx"), "--data", str(tmp_path / "x.npy"), "--method", "minmax",
                 "--qdq", str(out)]) == 0
    written = onnx.load(out)
    record = json.loads(written.metadata_props[0].value)["precision"]
    assert record["high_precision"] == "fp16" and "boost" in record["fp32_nodes"]
    assert "kept FP32: boost ('big' observed up to" in capsys.readouterr().err
    assert main(["inspect", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "INT8 + FP16; FP32 kept: 6 node(s): boost ('big' observed up to" in shown
    assert "up_QuantizeLinear_1 ('up' quantized over +-" in shown  # the Q/DQ pair too: it outputs up to its amax
    assert "\n  up " in shown  # quantized tensors by their own names, not their Casts'
    assert set(read_range_file(out).scales) == {"x", "up"}  # also when the model is read as a range file

    fp32 = tmp_path / "m.fp32.onnx"
    assert main(["calibrate", str(tmp_path / "m.onnx"), "--data", str(tmp_path / "x.npy"), "--method", "minmax",
                 "--qdq", str(fp32), "--high-precision", "fp32", "-q"]) == 0
    assert model_precision(onnx.load(fp32)).precision == "fp32"
    with pytest.raises(SystemExit, match="2"):
        main(["calibrate", str(tmp_path / "m.onnx"), "--data", str(tmp_path / "x.npy"), "--qdq", str(fp32),
              "--high-precision", "fp8", "-q"])
