"""Tiny ONNX graphs built with onnx.helper for the Q/DQ and evaluation tests."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def _model(nodes, inputs, outputs, inits) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def _vi(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def conv_relu(rng) -> onnx.ModelProto:
    """x [N,3,8,8] -> Conv(4 out, bias) -> Relu -> y."""
    inits = {"w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32) * np.array([1, 0.1, 3, 0.5], np.float32)[:, None, None, None],
             "b": rng.standard_normal(4).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], "conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"], "relu")]
    return _model(nodes, [_vi("x", ["N", 3, 8, 8])], [_vi("y", ["N", 4, 8, 8])], inits)


def conv_clip_add(rng) -> onnx.ModelProto:
    """x -> Conv1 -> Clip(0,6) = r; r -> Conv2 -> Clip -> Conv3 = p; Add(p, r) -> y (a residual block)."""
    inits = {
        "w1": rng.standard_normal((4, 3, 1, 1)).astype(np.float32), "b1": np.zeros(4, np.float32),
        "w2": rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "b2": np.zeros(4, np.float32),
        "w3": rng.standard_normal((4, 4, 1, 1)).astype(np.float32), "b3": np.zeros(4, np.float32),
        "lo": np.array(0, np.float32), "hi": np.array(6, np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], "conv1"),
        helper.make_node("Clip", ["c1", "lo", "hi"], ["r"], "clip1"),
        helper.make_node("Conv", ["r", "w2", "b2"], ["c2"], "dwconv", group=4, pads=[1, 1, 1, 1]),
        helper.make_node("Clip", ["c2", "lo", "hi"], ["h"], "clip2"),
        helper.make_node("Conv", ["h", "w3", "b3"], ["p"], "conv3"),
        helper.make_node("Add", ["p", "r"], ["y"], "add"),
    ]
    return _model(nodes, [_vi("x", [2, 3, 6, 6])], [_vi("y", [2, 4, 6, 6])], inits)


def gemm(rng, trans_b: int) -> onnx.ModelProto:
    """x [2,5] -> Gemm(W, bias, transB) -> y [2,3]."""
    w = rng.standard_normal((3, 5) if trans_b else (5, 3)).astype(np.float32)
    inits = {"w": w, "b": rng.standard_normal(3).astype(np.float32)}
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["y"], "fc", transB=trans_b)]
    return _model(nodes, [_vi("x", [2, 5])], [_vi("y", [2, 3])], inits)


def matmul_act_act() -> onnx.ModelProto:
    """a [2,4,5] @ b [2,5,3] -> y: both inputs are activations."""
    nodes = [helper.make_node("MatMul", ["a", "b"], ["y"], "attn")]
    return _model(nodes, [_vi("a", [2, 4, 5]), _vi("b", [2, 5, 3])], [_vi("y", [2, 4, 3])], {})


def matmul_weight(rng) -> onnx.ModelProto:
    """x [2,5] @ W [5,3] -> y."""
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], "mm")]
    return _model(nodes, [_vi("x", [2, 5])], [_vi("y", [2, 3])], {"w": rng.standard_normal((5, 3)).astype(np.float32)})


def conv_transpose(rng) -> onnx.ModelProto:
    """x [1,4,5,5] -> ConvTranspose(W [4 in, 2 out, 3, 3]) -> y."""
    inits = {"w": rng.standard_normal((4, 2, 3, 3)).astype(np.float32), "b": np.ones(2, np.float32)}
    nodes = [helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], "deconv")]
    return _model(nodes, [_vi("x", [1, 4, 5, 5])], [_vi("y", [1, 2, 7, 7])], inits)


def run(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def amax_of(model: onnx.ModelProto, feeds: dict) -> dict[str, float]:
    """max |x| of every float tensor on ``feeds`` (a minmax calibration on one batch)."""
    from int8calib.runner import ActivationRunner

    acts = ActivationRunner(model).run(feeds)
    return {k: float(np.abs(v).max()) for k, v in acts.items()}
