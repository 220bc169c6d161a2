"""Constant lines: which constants TensorRT turns into calibrated layers, and their statistics."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from int8calib.stats import merge
from int8calib.stats.constants import constant_operands, constant_statistics


def mixed_model():
    """Each kind of constant once: those TensorRT's parser makes Constant layers of, and those it takes as weights."""
    rng = np.random.default_rng(0)
    init = {
        "conv.w": rng.standard_normal((2, 2, 1, 1)), "conv.b": rng.standard_normal(2),  # convolution weights
        "ln.scale": rng.standard_normal(2), "ln.bias": rng.standard_normal(2),  # normalisation weights
        "table": rng.standard_normal((4, 2)),  # a Gather table
        "W": rng.standard_normal((2, 3)), "gemm.B": rng.standard_normal((3, 3)), "gemm.C": rng.standard_normal(3),
        "shape": np.array([-1, 3], np.int64),  # not float: never calibrated
    }
    inits = [numpy_helper.from_array(v.astype(np.float32) if v.dtype.kind == "f" else v, k) for k, v in init.items()]
    inits.append(numpy_helper.from_array(np.array([2.0], np.float16), "two_fp16"))
    nodes = [
        helper.make_node("Conv", ["x", "conv.w", "conv.b"], ["c"]),
        helper.make_node("Transpose", ["c"], ["t"], perm=[0, 2, 3, 1]),
        helper.make_node("LayerNormalization", ["t", "ln.scale", "ln.bias"], ["n"]),
        helper.make_node("MatMul", ["n", "W"], ["m"]),
        helper.make_node("Reshape", ["m", "shape"], ["r"]),
        helper.make_node("Gemm", ["r", "gemm.B", "gemm.C"], ["g"]),
        helper.make_node("Constant", [], ["half"], value=numpy_helper.from_array(np.array(-0.5, np.float32))),
        helper.make_node("Mul", ["g", "half"], ["h"]),
        helper.make_node("Mul", ["half", "h"], ["h2"]),  # the same constant again: one line
        helper.make_node("Cast", ["h2"], ["h16"], to=TensorProto.FLOAT16),
        helper.make_node("Pow", ["h16", "two_fp16"], ["p"]),
        helper.make_node("Gather", ["table", "idx"], ["e"]),
    ]
    graph = helper.make_graph(
        nodes, "mixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 2, 2]), helper.make_tensor_value_info("idx", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT16, None), helper.make_tensor_value_info("e", TensorProto.FLOAT, None)],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), init


def test_constant_operands_are_those_of_matmul_gemm_and_elementwise_layers():
    model, init = mixed_model()
    values = dict(constant_operands(model))
    assert list(values) == ["W_output", "gemm.B_output", "gemm.C_output", "half_output", "two_fp16_output"]
    np.testing.assert_array_equal(values["W_output"], init["W"].astype(np.float32).reshape(-1))
    assert values["half_output"].tolist() == [-0.5] and values["two_fp16_output"].dtype == np.float32


def test_constant_statistics_hold_each_constant_once_and_merge_keeps_one_copy():
    model, init = mixed_model()
    stats = constant_statistics(model)
    assert stats.meta["constants"] == list(stats.tensors)
    gemm_b = stats["gemm.B_output"]
    assert gemm_b.total == 9 and gemm_b.amax == float(np.abs(init["gemm.B"].astype(np.float32)).max())
    assert gemm_b.trt is not None and gemm_b.trt.total == 9 and gemm_b.trt.first_max == gemm_b.amax
    merged = merge(stats, constant_statistics(model))  # two shards of one calibration: the weights did not change
    assert merged["gemm.B_output"].total == 9 and merged["gemm.B_output"].trt.total == 9


def test_constants_of_an_external_data_model_are_read_where_they_lie(tmp_path):
    from onnx.external_data_helper import convert_model_to_external_data

    from int8calib.runner.model import load_model, tensor_array

    model, _ = mixed_model()
    inside = constant_statistics(model)
    convert_model_to_external_data(model, all_tensors_to_one_file=True, location="w.data", size_threshold=0)
    onnx.save(model, str(tmp_path / "m.onnx"))
    outside = constant_statistics(load_model(tmp_path / "m.onnx", load_external_data=False), tensor_array)
    assert list(outside.tensors) == list(inside.tensors)
    assert all(np.array_equal(outside[n].counts, inside[n].counts) and outside[n].amax == inside[n].amax for n in inside)


@pytest.mark.parametrize("copies", [2, 10, 64])
def test_entropy2_of_a_constant_does_not_depend_on_how_many_batches_saw_it(copies):
    """TensorRT histograms a constant once per calibration batch, int8calib once: only entropy2's
    smoothing (epsilon in counts) could tell the difference, and it does not here."""
    from int8calib.methods import compute_amax
    from int8calib.stats import StatsCollector
    from trt_cookbook import COOKBOOK_8_6_CONSTANTS, cookbook_8_6_weights

    rng = np.random.default_rng(copies)
    weights = [cookbook_8_6_weights()[:n] for _, n, _ in COOKBOOK_8_6_CONSTANTS[1:]]
    weights += [rng.standard_normal(1000).astype(np.float32), rng.laplace(size=20000).astype(np.float32) * np.float32(0.02)]
    for values in weights:
        once, many = StatsCollector(), StatsCollector()
        once.collect({"c": values})
        for _ in range(copies):
            many.collect({"c": values})
        assert compute_amax("entropy2", once.result()["c"]) == compute_amax("entropy2", many.result()["c"])
