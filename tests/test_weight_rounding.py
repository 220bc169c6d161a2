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


@pytest.mark.parametrize("block", [1, 5, 64])
def test_blocked_updates_round_as_column_by_column(monkeypatch, block):
    # GPTQ's lazy batch updates: the block's errors reach the later columns in one product instead of one
    # column at a time; the sums are the same, so every int8 value is (checked against block = all columns)
    from int8calib.passes import weight_rounding

    rng = np.random.default_rng(block)
    x = rng.standard_normal((300, 70)) @ (rng.standard_normal((70, 70)) * np.logspace(0, -2, 70))
    w = rng.standard_normal((70, 24)).astype(np.float32)
    node = _gemm_model(w).graph.node[0]
    gram = (x.T @ x)[None]
    monkeypatch.setattr(weight_rounding, "SOLVE_BLOCK", 10_000)
    whole, scale = round_layer(w, node, gram)
    monkeypatch.setattr(weight_rounding, "SOLVE_BLOCK", block)
    blocked, same_scale = round_layer(w, node, gram)
    np.testing.assert_array_equal(blocked, whole)
    np.testing.assert_array_equal(same_scale, scale)
    assert np.abs(whole.astype(int) - quantize_per_channel(w, 1)[0]).max() >= 1  # not round-to-nearest


def test_gram_samples_are_spread_over_the_data(tmp_path):
    # data is often sorted by class: the Gram matrices take samples from all over it, not its first ones
    from int8calib.batching import BatchLoader
    from int8calib.passes.weight_rounding import spread_batches
    from int8calib.runner import model_inputs
    from int8calib.sources import resolve

    batches = [Batch({"x": np.full((4, 2), i, np.float32)}, 4, []) for i in range(10)]
    assert [int(b.feeds["x"][0, 0]) for b in spread_batches(batches, 12)] == [0, 3, 6]  # 3 batches of 4
    assert spread_batches(batches, 100) == batches
    model = _gemm_model(np.ones((2, 3), np.float32))
    inputs = model_inputs(model)
    for i in range(20):
        np.save(tmp_path / f"s{i:02d}.npy", np.full((1, 2), i, np.float32))
    loader = BatchLoader(resolve(tmp_path, {i.name: i.layout for i in inputs}), inputs, None, 4)
    picked = spread_batches(loader, 5)
    assert isinstance(picked, BatchLoader) and picked.batch_size == 4
    assert [float(v) for b in picked for v in b.feeds["x"][:b.n, 0]] == [0, 4, 8, 12, 16]


def test_gram_positions_of_a_large_map_are_an_even_grid():
    rng = np.random.default_rng(5)
    w = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    node = _conv_model(w, 2, strides=(1, 1), pads=(1, 1, 1, 1), dilations=(1, 1)).graph.node[0]
    x = rng.standard_normal((1, 4, 9, 10)).astype(np.float32)
    full = _conv_patches(x, node, w)  # [2, 90, 18]: 9 x 10 output positions
    grid = _conv_patches(x, node, w, max_positions=30)  # every 2nd row and column: 5 x 5 = 25 <= 30
    np.testing.assert_array_equal(grid, full.reshape(2, 9, 10, 18)[:, ::2, ::2].reshape(2, 25, 18))
    np.testing.assert_array_equal(_conv_patches(x, node, w, max_positions=90), full)


@pytest.mark.parametrize("strides", [(1, 1), (2, 2)])
def test_gram_of_a_1x1_conv_is_that_of_its_patches(strides):
    from int8calib.passes.weight_rounding import _sample_gram

    rng = np.random.default_rng(6)
    w = rng.standard_normal((5, 4, 1, 1)).astype(np.float32)
    node = _conv_model(w, 1, strides=strides, pads=(0, 0, 0, 0), dilations=(1, 1)).graph.node[0]
    x = rng.standard_normal((1, 4, 9, 10)).astype(np.float32)
    p = _conv_patches(x.astype(np.float64), node, w)
    np.testing.assert_allclose(_sample_gram(x, node, w), np.matmul(p.transpose(0, 2, 1), p), rtol=1e-5)
