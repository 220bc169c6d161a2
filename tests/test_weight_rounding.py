"""passes.weight_rounding (issue 23): int8 weights chosen for each layer's output error, written by build_qdq."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from int8calib.batching import Batch
from int8calib.passes import measure_shifts
from int8calib.passes.weight_rounding import _conv_patches, gram_matrices, round_layer, round_weights
from int8calib.runner import ActivationRunner
from int8calib.writers.qdq import build_qdq, quantize_per_channel


def _conv_model(w: np.ndarray, group: int, strides=(2, 1), pads=(1, 0, 2, 1), dilations=(1, 2)) -> onnx.ModelProto:
    cin = w.shape[1] * group
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", cin, 9, 10])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    conv = helper.make_node("Conv", ["x", "w"], ["y"], "conv", group=group, strides=list(strides), pads=list(pads),
                            dilations=list(dilations))
    graph = helper.make_graph([conv], "g", [x], [y], [numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("group", [1, 2, 4])
def test_patches_times_weights_is_the_convolution_onnx_runtime_computes(group):
    rng = np.random.default_rng(group)
    w = rng.standard_normal((4, 4 // group, 3, 2)).astype(np.float32)
    model = _conv_model(w, group)
    x = rng.standard_normal((2, 4, 9, 10)).astype(np.float32)
    y = ActivationRunner(model, None, ["y"]).run({"x": x})["y"]  # [2, 4, ho, wo]
    p = _conv_patches(x.astype(np.float64), model.graph.node[0], w)  # [groups, 2 * ho * wo, D]
    rows = w.reshape(group, 4 // group, -1).astype(np.float64)
    ours = np.einsum("gpd,gcd->gcp", p, rows).reshape(4, 2, *y.shape[2:]).transpose(1, 0, 2, 3)
    np.testing.assert_allclose(ours, y, rtol=1e-5, atol=1e-5)


def _gemm_model(w: np.ndarray) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", w.shape[0]])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], "mm")], "g", [x], [y],
                              [numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_rounded_weights_cut_the_layer_output_error_and_are_written_as_int8():
    # correlated inputs (a few directions dominate), as activations are: there rounding to nearest is far from best
    rng = np.random.default_rng(0)
    mix = rng.standard_normal((32, 32)) * np.logspace(0, -2, 32)
    x = (rng.standard_normal((256, 32)) @ mix.T).astype(np.float32)
    w = rng.standard_normal((32, 16)).astype(np.float32)
    model = _gemm_model(w)
    batches = [Batch({"x": x[i:i + 64]}, 64, []) for i in range(0, 256, 64)]
    weights = round_weights(model, batches, max_samples=None)
    q, s = weights["w"]
    nearest, scale = quantize_per_channel(w, 1)
    np.testing.assert_array_equal(s, scale)  # the scales are round-to-nearest's
    assert q.dtype == np.int8 and q.shape == w.shape and np.abs(q.astype(int)).max() <= 127
    assert np.abs(q.astype(int) - nearest).max() >= 1  # some weights rounded the other way

    def error(qw):
        return float(np.sum((x @ (qw.astype(np.float64) * s) - x @ w.astype(np.float64)) ** 2))

    assert error(q) < 0.5 * error(nearest)  # measured: 0.17 of round-to-nearest's (0.34 without act order)
    # build_qdq writes exactly these int8 values
    qdq, _ = build_qdq(model, {"x": float(np.abs(x).max())}, weights=weights)
    written = [numpy_helper.to_array(i) for i in qdq.graph.initializer if i.data_type == TensorProto.INT8 and i.dims]
    assert any(np.array_equal(v, q) for v in written)
    # bias correction measures the shift of these weights, not of round-to-nearest's
    shifts = measure_shifts(model, batches, weights=weights, max_samples=None)
    expected = (x.astype(np.float64) @ (q.astype(np.float64) * s - w)).mean(axis=0)
    np.testing.assert_allclose(shifts.shifts["mm"], expected, rtol=1e-4, atol=1e-6)


def test_gram_matrix_of_a_depthwise_conv_is_per_channel():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((4, 1, 3, 3)).astype(np.float32)
    model = _conv_model(w, 4, strides=(1, 1), pads=(1, 1, 1, 1), dilations=(1, 1))
    x = rng.standard_normal((3, 4, 9, 10)).astype(np.float32)
    grams = gram_matrices(model, [Batch({"x": x}, 3, [])], list(model.graph.node))
    assert grams["conv"].shape == (4, 9, 9)
    # channel 2's centre tap sees every value of channel 2 once: its diagonal entry is their sum of squares
    assert grams["conv"][2, 4, 4] == pytest.approx(float(np.sum(x[:, 2].astype(np.float64) ** 2)))
    q, s = round_layer(w, model.graph.node[0], grams["conv"])
    assert q.shape == w.shape and s.shape == (4,)


def test_calibrate_writes_the_rounded_weights_and_says_so(tmp_path):
    from int8calib.api import calibrate
    from int8calib.errors import Int8CalibError
    from int8calib.writers.provenance import model_record
    from tinymodels import residual_cnn

    residual_cnn(tmp_path / "m.onnx")
    x = np.random.default_rng(4).standard_normal((40, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    written = {}
    for rounding in (False, True):
        path = tmp_path / f"q{int(rounding)}.onnx"
        calibrate(tmp_path / "m.onnx", str(tmp_path / "x.npy"), method="mse", qdq=path, weight_rounding=rounding)
        model = onnx.load(str(path))
        written[rounding] = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer if i.data_type == TensorProto.INT8 and i.dims}
        record = model_record(model)
        assert (record.get("weight_rounding") or {}).get("layers", 0) == (4 if rounding else 0)
    assert written[False].keys() == written[True].keys()
    changed = [k for k in written[False] if not np.array_equal(written[False][k], written[True][k])]
    assert changed  # the rounded int8 values replaced round-to-nearest's
    with pytest.raises(Int8CalibError, match="needs --qdq"):
        calibrate(tmp_path / "m.onnx", str(tmp_path / "x.npy"), method="mse", qdq=tmp_path / "r.onnx",
                  bias_correction=False, weight_rounding=True)
