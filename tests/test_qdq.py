"""The Q/DQ writer: placement, per-channel scales, zero points, checker, ONNX Runtime."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import qdq_graphs as g
from int8calib.errors import Int8CalibError
from int8calib.evaluate.metrics import PowerSum
from int8calib.writers.qdq import build_qdq, check, insert_qdq, quantize_per_channel, write_model


def _inits(model):
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def _producers(model):
    return {o: n for n in model.graph.node for o in n.output}


def _node(model, name):
    return next(n for n in model.graph.node if n.name == name)


def _weight_dq(model, node):
    """(int8 weights, scales, zero points, axis) behind ``node``'s input 1."""
    dq = _producers(model)[node.input[1]]
    assert dq.op_type == "DequantizeLinear"
    inits = _inits(model)
    axis = next((a.i for a in dq.attribute if a.name == "axis"), None)
    return inits[dq.input[0]], inits[dq.input[1]], inits[dq.input[2]], axis


def _act_scale(model, node, index):
    """Scale of the Q/DQ pair feeding ``node``'s input ``index``, checking it is a Q -> DQ of the named tensor."""
    prod = _producers(model)
    dq = prod[node.input[index]]
    q = prod[dq.input[0]]
    assert (dq.op_type, q.op_type) == ("DequantizeLinear", "QuantizeLinear")
    inits = _inits(model)
    assert inits[q.input[2]].dtype == np.int8 and inits[q.input[2]] == 0
    return q.input[0], float(inits[q.input[1]])


def _sqnr(ref, test):
    p = PowerSum()
    p.add(ref, test)
    return p.sqnr_db


def test_per_channel_scales_match_numpy_abs_max(rng):
    w = rng.standard_normal((3, 2, 2)).astype(np.float32)
    w[1] = 0.0
    q, s = quantize_per_channel(w, 0)
    expected = np.abs(w).reshape(3, -1).max(axis=1) / 127
    assert s[0] == pytest.approx(expected[0]) and s[2] == pytest.approx(expected[2])
    assert s[1] == 1.0 and not q[1].any()  # an all-zero channel still gets a positive scale
    assert q.dtype == np.int8 and np.abs(q).max() == 127
    np.testing.assert_allclose(q * s[:, None, None], w, atol=float(s.max()) / 2 + 1e-7)


def test_conv_relu(rng):
    model = g.conv_relu(rng)
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    amax = g.amax_of(model, {"x": x})
    qdq, summary = build_qdq(model, amax)
    check(qdq)
    conv = _node(qdq, "conv")
    assert _act_scale(qdq, conv, 0) == ("x", pytest.approx(amax["x"] / 127))
    q, s, zp, axis = _weight_dq(qdq, conv)
    w = _inits(model)["w"]
    assert axis == 0 and q.dtype == np.int8 and zp.dtype == np.int8 and not zp.any() and zp.shape == (4,)
    np.testing.assert_allclose(s, np.abs(w).reshape(4, -1).max(axis=1) / 127, rtol=1e-6)
    assert conv.input[2] == "b" and _inits(qdq)["b"].dtype == np.float32  # bias stays float
    # Nothing after the Conv: Relu reads the Conv output directly.
    assert _node(qdq, "relu").input[0] == "c"
    assert [i.name for i in qdq.graph.input] == ["x"] and [o.name for o in qdq.graph.output] == ["y"]
    assert summary.quantized_nodes == {"conv": "Conv"} and summary.activations == ["x"]
    assert "w" not in _inits(qdq)  # the float weight is replaced by its int8 copy
    (ref,), (out,) = g.run(model, {"x": x}), g.run(qdq, {"x": x})
    assert _sqnr(ref, out) > 30


def test_residual_add_quantizes_the_residual_input_only(rng):
    model = g.conv_clip_add(rng)
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    amax = g.amax_of(model, {"x": x})
    qdq, summary = build_qdq(model, amax)
    check(qdq)
    prod = _producers(qdq)
    add = _node(qdq, "add")
    assert add.input[0] == "p" and prod["p"].name == "conv3"  # the fusable Conv output stays float
    assert _act_scale(qdq, add, 1) == ("r", pytest.approx(amax["r"] / 127))
    # 'r' also feeds dwconv: both consumers share one Q/DQ pair.
    assert _node(qdq, "dwconv").input[0] == add.input[1]
    assert summary.residual_adds == ["add"]
    # No Q/DQ on any Conv output, and Clip reads the Conv output directly.
    quantized = [prod[n.input[0]].input[0] for n in qdq.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in prod]
    assert sorted(quantized) == ["h", "r", "x"]
    assert _node(qdq, "clip1").input[0] == "c1" and _node(qdq, "clip2").input[0] == "c2"
    _, s, _, axis = _weight_dq(qdq, _node(qdq, "dwconv"))
    assert axis == 0 and s.shape == (4,)
    (ref,), (out,) = g.run(model, {"x": x}), g.run(qdq, {"x": x})
    assert _sqnr(ref, out) > 25


@pytest.mark.parametrize("trans_b, axis", [(0, 1), (1, 0)])
def test_gemm_weight_axis_follows_trans_b(rng, trans_b, axis):
    model = g.gemm(rng, trans_b)
    x = rng.standard_normal((2, 5)).astype(np.float32)
    qdq, _ = build_qdq(model, g.amax_of(model, {"x": x}))
    check(qdq)
    q, s, zp, got_axis = _weight_dq(qdq, _node(qdq, "fc"))
    w = _inits(model)["w"]
    assert got_axis == axis and s.shape == (3,) and not zp.any()
    np.testing.assert_allclose(s, np.abs(w).max(axis=1 - axis) / 127, rtol=1e-6)
    (ref,), (out,) = g.run(model, {"x": x}), g.run(qdq, {"x": x})
    np.testing.assert_allclose(out, ref, atol=0.1)


def test_matmul_activation_by_activation_quantizes_both_inputs(rng):
    model = g.matmul_act_act()
    feeds = {"a": rng.standard_normal((2, 4, 5)).astype(np.float32), "b": rng.standard_normal((2, 5, 3)).astype(np.float32)}
    amax = g.amax_of(model, feeds)
    qdq, summary = build_qdq(model, amax)
    check(qdq)
    mm = _node(qdq, "attn")
    assert _act_scale(qdq, mm, 0)[0] == "a" and _act_scale(qdq, mm, 1)[0] == "b"
    assert summary.weights == {}
    (ref,), (out,) = g.run(model, feeds), g.run(qdq, feeds)
    assert _sqnr(ref, out) > 25


def test_matmul_constant_weight_per_output_column(rng):
    model = g.matmul_weight(rng)
    x = rng.standard_normal((2, 5)).astype(np.float32)
    qdq, _ = build_qdq(model, g.amax_of(model, {"x": x}))
    _, s, _, axis = _weight_dq(qdq, _node(qdq, "mm"))
    assert axis == 1
    np.testing.assert_allclose(s, np.abs(_inits(model)["w"]).max(axis=0) / 127, rtol=1e-6)


def test_conv_transpose_weight_axis_1(rng):
    model = g.conv_transpose(rng)
    x = rng.standard_normal((1, 4, 5, 5)).astype(np.float32)
    qdq, _ = build_qdq(model, g.amax_of(model, {"x": x}))
    check(qdq)
    _, s, zp, axis = _weight_dq(qdq, _node(qdq, "deconv"))
    assert axis == 1 and s.shape == (2,) and zp.shape == (2,)
    np.testing.assert_allclose(s, np.abs(_inits(model)["w"]).max(axis=(0, 2, 3)) / 127, rtol=1e-6)
    (ref,), (out,) = g.run(model, {"x": x}), g.run(qdq, {"x": x})
    assert _sqnr(ref, out) > 25


def test_exclusions_keep_nodes_float_and_say_why(rng):
    model = g.conv_clip_add(rng)
    amax = g.amax_of(model, {"x": rng.standard_normal((2, 3, 6, 6)).astype(np.float32)})
    qdq, summary = build_qdq(model, amax, exclude_nodes="^dw", keep_float=["conv3"])
    assert _node(qdq, "dwconv").input[1] == "w2" and _node(qdq, "conv3").input[0] == "h"
    assert "--exclude-nodes" in summary.excluded["dwconv"] and "accuracy" in summary.excluded["conv3"]
    assert summary.residual_adds == []  # conv3 is float, so the Add has nothing to fuse with
    _, summary = build_qdq(model, amax, exclude_op_types=["Conv"])
    assert summary.quantized_nodes == {} and len(summary.excluded) == 3
    _, summary = build_qdq(model, {k: v for k, v in amax.items() if k != "h"})
    assert "no range for tensor 'h'" in summary.excluded["conv3"]
    with pytest.raises(Int8CalibError, match="regular expression"):
        build_qdq(model, amax, exclude_nodes="(")


def test_precision_modes(rng, tmp_path):
    model = g.conv_relu(rng)
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    fp16 = insert_qdq(model, {}, precision="fp16")
    assert fp16.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # float32 I/O kept
    assert {i.data_type for i in fp16.graph.initializer} == {onnx.TensorProto.FLOAT16}
    write_model(tmp_path / "m16.onnx", fp16)
    (ref,), (out,) = g.run(model, {"x": x}), g.run(onnx.load(tmp_path / "m16.onnx"), {"x": x})
    assert out.dtype == np.float32 and _sqnr(ref, out) > 40
    assert insert_qdq(model, {}, precision="fp32") is model
    with pytest.raises(Int8CalibError, match="--precision"):
        insert_qdq(model, {}, precision="int4")


def test_old_opset_is_upgraded(rng):
    model = g.conv_relu(rng)
    model.opset_import[0].version = 11
    qdq, _ = build_qdq(model, g.amax_of(model, {"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)}))
    assert qdq.opset_import[0].version >= 13
    check(qdq)


def test_bad_amax_is_a_user_error(rng):
    model = g.conv_relu(rng)
    with pytest.raises(Int8CalibError, match="tensor 'x'"):
        build_qdq(model, {"x": float("nan")})


def test_calibrate_cli_writes_qdq_also_from_histograms(rng, tmp_path):
    from int8calib.cli import main

    model = g.conv_clip_add(rng)
    onnx.save(model, tmp_path / "m.onnx")
    x = rng.standard_normal((6, 3, 6, 6)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    stats, direct, again = tmp_path / "s.npz", tmp_path / "direct.onnx", tmp_path / "again.onnx"
    assert main(["calibrate", str(tmp_path / "m.onnx"), "--data", str(tmp_path / "x.npy"), "--method", "minmax",
                 "--histograms", str(stats), "--qdq", str(direct), "--exclude-nodes", "conv3", "-q"]) == 0
    # without --data the statistics alone give the model, its biases uncorrected (nothing to measure on) ...
    assert main(["calibrate", "--from-histograms", str(stats), "--method", "minmax", "--qdq", str(again),
                 "--exclude-nodes", "conv3", "-q"]) == 0
    plain = tmp_path / "plain.onnx"
    assert main(["calibrate", str(tmp_path / "m.onnx"), "--data", str(tmp_path / "x.npy"), "--method", "minmax",
                 "--qdq", str(plain), "--exclude-nodes", "conv3", "--no-bias-correction", "-q"]) == 0
    assert onnx.load(plain).SerializeToString() == onnx.load(again).SerializeToString()
    # ... and with --data, the same corrected model as the direct run
    assert main(["calibrate", "--from-histograms", str(stats), "--method", "minmax", "--qdq", str(again),
                 "--data", str(tmp_path / "x.npy"), "--exclude-nodes", "conv3", "-q"]) == 0
    a, b = onnx.load(direct), onnx.load(again)
    check(a)
    assert a.SerializeToString() == b.SerializeToString()
    assert json.loads(a.metadata_props[0].value)["bias_correction"] == {"layers": 2, "samples": 6}
    assert _node(a, "conv3").input[1] == "w3" and _node(a, "conv1").input[1] != "w1"
    # minmax on the same six samples: x's scale is max |x| / 127, rounded to float16 (the default --high-precision)
    assert _act_scale(a, _node(a, "conv1"), 0)[1] == np.float16(float(np.abs(x).max()) / 127)
    (ref,), (out,) = g.run(model, {"x": x[:2]}), g.run(a, {"x": x[:2]})
    assert _sqnr(ref, out) > 25


def test_calibrate_cli_accuracy_budget_zero_keeps_what_it_must(rng, tmp_path):
    """A budget of 0 on a tiny classifier: the result must agree 100 % on the held-out samples."""
    from int8calib.api import calibrate

    model = g.gemm(rng, 1)
    # A batch axis the loader can use: rebuild the input as [N, 5].
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "N"
    onnx.save(model, tmp_path / "fc.onnx")
    np.save(tmp_path / "x.npy", rng.standard_normal((20, 5)).astype(np.float32))
    result = calibrate(tmp_path / "fc.onnx", str(tmp_path / "x.npy"), method="minmax", qdq=tmp_path / "q.onnx",
                       accuracy_budget=0.0, batch_size=4)
    mixed = result.quantization
    assert result.samples == 16 and mixed.samples == 4 and mixed.agreement == 100.0
    assert mixed.layer_precisions == ("fc:fp32" if mixed.kept == ["fc"] else "")


def test_qdq_only_collects_just_the_qdq_inputs_and_writes_the_same_model(rng, tmp_path):
    from int8calib.api import calibrate
    from int8calib.runner import calibratable_tensors
    from int8calib.writers.qdq import activation_tensors

    model = g.conv_clip_add(rng)
    onnx.save(model, tmp_path / "m.onnx")
    np.save(tmp_path / "x.npy", rng.standard_normal((6, 3, 6, 6)).astype(np.float32))
    only = calibrate(tmp_path / "m.onnx", str(tmp_path / "x.npy"), method="minmax", qdq=tmp_path / "only.onnx")
    full = calibrate(tmp_path / "m.onnx", str(tmp_path / "x.npy"), method="minmax", qdq=tmp_path / "full.onnx",
                     ranges=tmp_path / "r.json")
    wanted = activation_tensors(model)
    assert list(only.statistics.tensors) == [t for t in calibratable_tensors(model) if t in wanted]
    assert set(full.statistics.tensors) > set(only.statistics.tensors)
    a, b = onnx.load(tmp_path / "only.onnx"), onnx.load(tmp_path / "full.onnx")
    assert a.graph.SerializeToString() == b.graph.SerializeToString()
