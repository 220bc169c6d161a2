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


def attention_block(rng, d: int = 8) -> onnx.ModelProto:
    """One BERT encoder layer on x [2, 5, d] (one head), as exporters write it:

    LayerNormalization (op) -> h; q, k, v = MatMul(h, W) + b; Transpose(k) -> kt; MatMul(q, kt) / sqrt(d)
    + mask -> Softmax -> p; MatMul(p, v) -> ctx; MatMul(ctx, Wo) + bo + h (residual) -> LayerNorm decomposed
    (ReduceMean, Sub, Pow, ReduceMean, Add eps, Sqrt, Div, Mul gamma, Add beta) -> h1; MatMul(h1, W1) + b1
    -> GELU (Div sqrt 2, Erf, Add 1, Mul, Mul 0.5) -> g; MatMul(g, W2) + b2 + h1 (residual) -> y.
    """
    f = np.float32
    inits = {name: (rng.standard_normal(shape) * 0.5).astype(f) for name, shape in [
        ("wq", (d, d)), ("wk", (d, d)), ("wv", (d, d)), ("wo", (d, d)), ("w1", (d, 2 * d)), ("w2", (2 * d, d)),
        ("bq", (d,)), ("bk", (d,)), ("bv", (d,)), ("bo", (d,)), ("b1", (2 * d,)), ("b2", (d,))]}
    inits.update({"ln0_g": np.ones(d, f), "ln0_b": np.zeros(d, f), "gamma": np.full(d, 1.1, f), "beta": np.full(d, 0.1, f),
                  "scale": np.array(np.sqrt(d), f), "eps": np.array(1e-5, f), "two": np.array(2, f),
                  "sqrt2": np.array(np.sqrt(2), f), "one": np.array(1, f), "half": np.array(0.5, f)})
    mk = helper.make_node
    nodes = [
        mk("LayerNormalization", ["x", "ln0_g", "ln0_b"], ["h"], "ln0", axis=-1, epsilon=1e-5),
        mk("MatMul", ["h", "wq"], ["qm"], "q_proj"), mk("Add", ["bq", "qm"], ["q"], "q_bias"),
        mk("MatMul", ["h", "wk"], ["km"], "k_proj"), mk("Add", ["bk", "km"], ["k"], "k_bias"),
        mk("MatMul", ["h", "wv"], ["vm"], "v_proj"), mk("Add", ["bv", "vm"], ["v"], "v_bias"),
        mk("Transpose", ["k"], ["kt"], "k_transpose", perm=[0, 2, 1]),
        mk("MatMul", ["q", "kt"], ["s"], "qk"), mk("Div", ["s", "scale"], ["sd"], "qk_scale"),
        mk("Add", ["sd", "mask"], ["sm"], "mask_add"),
        mk("Softmax", ["sm"], ["p"], "softmax", axis=-1),
        mk("MatMul", ["p", "v"], ["ctx"], "pv"),
        mk("MatMul", ["ctx", "wo"], ["om"], "o_proj"), mk("Add", ["bo", "om"], ["o"], "o_bias"),
        mk("Add", ["o", "h"], ["r"], "residual1"),
        mk("ReduceMean", ["r"], ["mu"], "ln1_mean", axes=[-1]), mk("Sub", ["r", "mu"], ["dev"], "ln1_sub"),
        mk("Pow", ["dev", "two"], ["sq"], "ln1_pow"), mk("ReduceMean", ["sq"], ["var"], "ln1_var", axes=[-1]),
        mk("Add", ["var", "eps"], ["ve"], "ln1_eps"), mk("Sqrt", ["ve"], ["sd1"], "ln1_sqrt"),
        mk("Div", ["dev", "sd1"], ["nrm"], "ln1_div"), mk("Mul", ["nrm", "gamma"], ["ng"], "ln1_gamma"),
        mk("Add", ["ng", "beta"], ["h1"], "ln1_beta"),
        mk("MatMul", ["h1", "w1"], ["f1"], "ffn1"), mk("Add", ["b1", "f1"], ["f"], "ffn1_bias"),
        mk("Div", ["f", "sqrt2"], ["fs"], "gelu_div"), mk("Erf", ["fs"], ["e"], "gelu_erf"),
        mk("Add", ["e", "one"], ["e1"], "gelu_add"), mk("Mul", ["f", "e1"], ["fe"], "gelu_mul"),
        mk("Mul", ["fe", "half"], ["g"], "gelu_half"),
        mk("MatMul", ["g", "w2"], ["f2m"], "ffn2"), mk("Add", ["b2", "f2m"], ["f2"], "ffn2_bias"),
        mk("Add", ["f2", "h1"], ["y"], "residual2"),
    ]
    return _model(nodes, [_vi("x", [2, 5, d]), _vi("mask", [2, 1, 5])], [_vi("y", [2, 5, d])], inits)
