"""Bias correction (#15 point 2): weight-rounding output shifts, measured and subtracted.

The shifts are checked against numpy computations that share nothing with int8calib but the
definition: per-channel int8 weights (scale = max |w| / 127, round half to even) and the mean
over every sample and position of the layer applied to W_q - W.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from hypothesis import given, settings, strategies as st
from onnx import TensorProto, helper, numpy_helper

from int8calib.batching import Batch
from int8calib.cli import main
from int8calib.passes import BiasShifts, correct_biases, measure_shifts
from int8calib.writers.qdq import build_qdq, check

from tinymodels import reference_activations, residual_cnn


def _rounding_error(w: np.ndarray, axis: int) -> np.ndarray:
    """W_q - W in float64, per channel along ``axis`` (independent of writers.qdq)."""
    moved = np.moveaxis(w.astype(np.float64), axis, 0)
    out = np.empty_like(moved)
    for c in range(moved.shape[0]):
        scale = np.float32(np.abs(moved[c]).max()) / np.float32(127)
        scale = np.float64(scale) if scale > 0 else 1.0
        q = np.clip(np.round(moved[c].astype(np.float32) / np.float32(scale)), -127, 127)
        out[c] = q * scale - moved[c]
    return np.moveaxis(out, 0, axis)


def _batches(x: np.ndarray, size: int, name: str = "input") -> list[Batch]:
    return [Batch({name: x[i:i + size]}, len(x[i:i + size]), []) for i in range(0, len(x), size)]


def test_shifts_of_conv_gemm_and_matmul_match_numpy(tmp_path):
    model = residual_cnn()
    x = np.random.default_rng(3).standard_normal((10, 3, 8, 8)).astype(np.float32) + 0.5
    a = reference_activations(model, x)
    w = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    shifts = measure_shifts(model, _batches(x, 4), max_samples=None)
    assert shifts.samples == 10 and set(shifts.shifts) == {"conv1", "conv2", "gemm", "matmul"}
    d1 = _rounding_error(w["w1"], 0)[:, :, 0, 0]
    d2 = _rounding_error(w["w2"], 0)[:, :, 0, 0]
    expected = {
        "conv1": np.einsum("nchw,kc->k", a["input"], d1) / (10 * 64),
        "conv2": np.einsum("nchw,kc->k", a["relu1"], d2) / (10 * 64),
        "gemm": (a["flat"] @ _rounding_error(w["wg"], 0).T).mean(axis=0),  # transB: output channels on axis 0
        "matmul": (a["gemm"] @ _rounding_error(w["wm"], 1)).mean(axis=0),
    }
    for name, value in expected.items():
        np.testing.assert_allclose(shifts.shifts[name], value, rtol=1e-4, atol=1e-7)
        assert np.abs(value).max() > 1e-5  # a real shift, not zeros compared with zeros


def test_max_samples_takes_the_first_samples_and_batches_weigh_by_rows():
    model = residual_cnn()
    x = np.random.default_rng(4).standard_normal((9, 3, 8, 8)).astype(np.float32)
    six = measure_shifts(model, _batches(x, 4), max_samples=6)
    alone = measure_shifts(model, _batches(x[:6], 6), max_samples=None)
    assert six.samples == 6
    for name in alone.shifts:
        np.testing.assert_allclose(six.shifts[name], alone.shifts[name], rtol=1e-5, atol=1e-8)


def _depthwise(rng, pads, strides, group: int) -> onnx.ModelProto:
    w = rng.normal(0, 1, (4, 4 // group, 3, 3)).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="dw", pads=pads, strides=strides, group=group)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 7, 7])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _conv_numpy(x, w, pads, strides, group):
    """Direct convolution, float64 (the definition, loop by loop)."""
    x = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    n, c, h, wd = x.shape
    k = w.shape[0]
    oh, ow = (h - 3) // strides[0] + 1, (wd - 3) // strides[1] + 1
    out = np.zeros((n, k, oh, ow))
    per = c // group
    for o in range(k):
        g = o // (k // group)
        for i in range(oh):
            for j in range(ow):
                patch = x[:, g * per:(g + 1) * per, i * strides[0]:i * strides[0] + 3, j * strides[1]:j * strides[1] + 3]
                out[:, o, i, j] = (patch * w[o]).sum(axis=(1, 2, 3))
    return out


@pytest.mark.parametrize("pads,strides,group", [([1, 1, 1, 1], [2, 2], 4), ([0, 1, 2, 0], [1, 2], 2), ([1, 1, 1, 1], [1, 1], 1)])
def test_shifts_are_exact_at_borders_strides_and_groups(pads, strides, group):
    """Padding makes border positions see fewer inputs: a shift from input means alone would be wrong there."""
    rng = np.random.default_rng(5)
    model = _depthwise(rng, pads, strides, group)
    x = (rng.standard_normal((5, 4, 7, 7)) + 2.0).astype(np.float32)  # a large mean: borders matter
    w = numpy_helper.to_array(model.graph.initializer[0])
    expected = _conv_numpy(x, _rounding_error(w, 0), pads, strides, group).mean(axis=(0, 2, 3))
    got = measure_shifts(model, _batches(x, 2, "x"), max_samples=None).shifts["dw"]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-7)


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 6), st.integers(1, 6), st.integers(1, 5), st.booleans(), st.sampled_from([1.0, 0.5, 3.0]),
       st.integers(0, 2**16))
def test_gemm_shift_property(k_in, k_out, rows, trans_b, alpha, seed):
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 1, (k_out, k_in) if trans_b else (k_in, k_out)).astype(np.float32)
    node = helper.make_node("Gemm", ["x", "w"], ["y"], name="fc", transB=int(trans_b), alpha=alpha)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", k_in])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    x = rng.normal(1, 1, (rows, k_in)).astype(np.float32)
    dw = _rounding_error(w, 0 if trans_b else 1)
    expected = alpha * (x.astype(np.float64) @ (dw.T if trans_b else dw)).mean(axis=0)
    got = measure_shifts(model, _batches(x, 2, "x"), max_samples=None).shifts["fc"]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


def _mean_error(model, qdq, x, name="x"):
    import onnxruntime as ort

    def out(m):
        return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {name: x})[0]

    return float(np.abs((out(qdq).astype(np.float64) - out(model)).mean(axis=(0, 2, 3))).max())


def test_correction_restores_the_output_mean():
    rng = np.random.default_rng(6)
    model = _depthwise(rng, [1, 1, 1, 1], [1, 1], 1)  # a Conv without bias
    w = numpy_helper.to_array(model.graph.initializer[0]).copy()
    w[:, 0, 0, 0] = 9.0  # one large weight per channel: the others round coarsely
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(w, "w"))
    x = (rng.standard_normal((40, 4, 7, 7)) + 1.5).astype(np.float32)
    qdq, _ = build_qdq(model, {"x": float(np.abs(x).max())})
    before = _mean_error(model, qdq, x)
    shifts = measure_shifts(model, _batches(x, 8, "x"), max_samples=None)
    assert correct_biases(qdq, shifts) == ["dw"]
    after = _mean_error(model, qdq, x)
    assert before > 1e-2 and after < before / 10, (before, after)
    conv = next(n for n in qdq.graph.node if n.name == "dw")  # a bias was added: minus the shift
    added = next(numpy_helper.to_array(i) for i in qdq.graph.initializer if i.name == conv.input[2])
    np.testing.assert_array_equal(added, -shifts.shifts["dw"])


def test_a_bias_held_in_a_constant_node_is_corrected():
    """PaddlePaddle exports (PP-OCR) keep weights and biases in Constant nodes, not initializers."""
    rng = np.random.default_rng(11)
    model = _depthwise(rng, [1, 1, 1, 1], [1, 1], 1)
    bias = rng.normal(0, 1, 4).astype(np.float32)
    model.graph.node.insert(0, helper.make_node("Constant", [], ["b"], value=numpy_helper.from_array(bias, "b")))
    model.graph.node[1].input.append("b")
    x = (rng.standard_normal((6, 4, 7, 7)) + 1.0).astype(np.float32)
    qdq, _ = build_qdq(model, {"x": float(np.abs(x).max())})
    shifts = measure_shifts(model, _batches(x, 3, "x"), max_samples=None)
    assert correct_biases(qdq, shifts) == ["dw"]
    conv = next(n for n in qdq.graph.node if n.name == "dw")
    corrected = next(numpy_helper.to_array(i) for i in qdq.graph.initializer if i.name == conv.input[2])
    np.testing.assert_array_equal(corrected, bias - shifts.shifts["dw"])
    assert not any(n.op_type == "Constant" and n.output[0] == "b" for n in qdq.graph.node)  # the old one is gone


def test_every_weighted_layer_is_corrected_and_a_biasless_matmul_gets_an_add():
    model = residual_cnn()
    x = np.random.default_rng(6).standard_normal((12, 3, 8, 8)).astype(np.float32)
    amax = {k: float(np.abs(v).max()) for k, v in reference_activations(model, x).items()}
    qdq, summary = build_qdq(model, amax)
    shifts = measure_shifts(model, _batches(x, 8), max_samples=None)
    assert sorted(correct_biases(qdq, shifts)) == sorted(summary.quantized_nodes) == ["conv1", "conv2", "gemm", "matmul"]
    check(qdq)
    # the MatMul had no bias: an Add after it now produces 'logits', the graph output keeps its name
    adds = [n for n in qdq.graph.node if n.op_type == "Add" and n.output[0] == "logits"]
    assert len(adds) == 1 and qdq.graph.output[0].name == "logits"
    # only biases changed: the corrected copies differ from the float ones by exactly the shifts
    inits = {i.name: numpy_helper.to_array(i) for i in qdq.graph.initializer}
    conv1 = next(n for n in qdq.graph.node if n.name == "conv1")
    b1 = next(numpy_helper.to_array(i) for i in model.graph.initializer if i.name == "b1")
    np.testing.assert_array_equal(inits[conv1.input[2]], b1 - shifts.shifts["conv1"])


def test_layers_kept_in_float_are_not_corrected():
    model = residual_cnn()
    x = np.random.default_rng(7).standard_normal((8, 3, 8, 8)).astype(np.float32)
    amax = {k: float(np.abs(v).max()) for k, v in reference_activations(model, x).items()}
    qdq, _ = build_qdq(model, amax, keep_float=["conv2", "gemm"])
    shifts = measure_shifts(model, _batches(x, 8), max_samples=None)
    assert sorted(correct_biases(qdq, shifts)) == ["conv1", "matmul"]
    conv2 = next(n for n in qdq.graph.node if n.name == "conv2")
    assert conv2.input[2] == "b2"
    # a float model is corrected only for the layers named (a route that quantizes them later)
    assert correct_biases(onnx.ModelProto.FromString(model.SerializeToString()), shifts) == []
    assert correct_biases(model, shifts, nodes=["conv1"]) == ["conv1"]


def test_matmul_bias_add_is_folded_not_duplicated():
    rng = np.random.default_rng(8)
    w, b = rng.normal(0, 1, (4, 3)).astype(np.float32), rng.normal(0, 1, 3).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["mm"], name="proj"), helper.make_node("Add", ["mm", "b"], ["y"], name="bias")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.normal(0, 1, (6, 5, 4)).astype(np.float32)
    qdq, _ = build_qdq(model, {"x": float(np.abs(x).max())})
    shifts = measure_shifts(model, _batches(x, 3, "x"), max_samples=None)
    expected = (x.reshape(-1, 4).astype(np.float64) @ _rounding_error(w, 1)).mean(axis=0)
    np.testing.assert_allclose(shifts.shifts["proj"], expected, rtol=1e-4, atol=1e-7)
    assert correct_biases(qdq, shifts) == ["proj"]
    assert sum(n.op_type == "Add" for n in qdq.graph.node) == 1
    add = next(n for n in qdq.graph.node if n.op_type == "Add")
    folded = next(numpy_helper.to_array(i) for i in qdq.graph.initializer if i.name == add.input[1])
    np.testing.assert_allclose(folded, b - shifts.shifts["proj"], rtol=0, atol=1e-7)


def test_cli_default_corrects_and_records_it(tmp_path, capsys):
    residual_cnn(tmp_path / "m.onnx")
    np.save(tmp_path / "x.npy", np.random.default_rng(9).standard_normal((12, 3, 8, 8)).astype(np.float32))
    common = ["calibrate", str(tmp_path / "m.onnx"), "--data", str(tmp_path / "x.npy"), "--method", "minmax", "-q"]
    assert main(common + ["--qdq", str(tmp_path / "c.onnx")]) == 0
    assert main(common + ["--qdq", str(tmp_path / "p.onnx"), "--no-bias-correction"]) == 0
    record = json.loads(onnx.load(tmp_path / "c.onnx").metadata_props[0].value)
    assert record["bias_correction"] == {"layers": 4, "samples": 12} and record["method"] == "minmax"
    assert json.loads(onnx.load(tmp_path / "p.onnx").metadata_props[0].value)["bias_correction"] is None
    capsys.readouterr()
    assert main(["inspect", str(tmp_path / "c.onnx")]) == 0
    assert "biases corrected: yes, 4 layer(s), shifts measured on 12 sample(s)" in capsys.readouterr().out
    assert main(["inspect", str(tmp_path / "p.onnx")]) == 0
    assert "biases corrected: no" in capsys.readouterr().out
    assert main(["evaluate", "--fp32", str(tmp_path / "m.onnx"), "--int8", str(tmp_path / "c.onnx"),
                 "--data", str(tmp_path / "x.npy"), "-q"]) == 0
    assert "calibration        minmax, biases corrected (4 layers)" in capsys.readouterr().out


@pytest.mark.parametrize("extra,message", [
    ([], "--bias-correction corrects the int8 Q/DQ model's biases: it needs --qdq"),
    (["--qdq", "OUT", "--precision", "fp16"], "it needs --qdq (with --precision int8)"),
])
def test_cli_bias_correction_without_an_int8_model_exits_2(tmp_path, capsys, extra, message):
    residual_cnn(tmp_path / "m.onnx")
    np.save(tmp_path / "x.npy", np.zeros((5, 3, 8, 8), np.float32))
    extra = [str(tmp_path / "q.onnx") if e == "OUT" else e for e in extra]
    code = main(["calibrate", str(tmp_path / "m.onnx"), "--data", str(tmp_path / "x.npy"), "--bias-correction"] + extra)
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err and not (tmp_path / "q.onnx").exists()


def test_largest_ranks_layers_by_their_biggest_shift():
    shifts = BiasShifts({"a": np.array([0.1, -0.5], np.float32), "b": np.array([0.3], np.float32)}, 4)
    assert [name for name, _ in shifts.largest()] == ["a", "b"]
    assert shifts.largest(1)[0][1] == pytest.approx(0.5)
