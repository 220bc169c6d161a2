"""Tiny ONNX models built with onnx.helper, with a numpy reference of every activation.

``residual_cnn`` has the op mix of a small CNN (Conv, Relu, Clip, Add residual,
GlobalAveragePool, Gemm, MatMul); ``reference_activations`` computes every tensor
with plain numpy, independently of ONNX Runtime, so tests can check the ranges
int8calib computes against values derived without it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _conv1x1(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    # x [N, C, H, W], w [K, C, 1, 1]
    return np.einsum("nchw,kc->nkhw", x, w[:, :, 0, 0]) + b[None, :, None, None]


def residual_cnn(path: Path | None = None, batch: int | str = "N", size: int = 8, seed: int = 0) -> onnx.ModelProto:
    """input [batch, 3, size, size] -> logits [batch, 5]."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.5, (4, 3, 1, 1)).astype(np.float32)
    b1 = rng.normal(0, 0.1, 4).astype(np.float32)
    w2 = rng.normal(0, 0.5, (4, 4, 1, 1)).astype(np.float32)
    b2 = rng.normal(0, 0.1, 4).astype(np.float32)
    wg = rng.normal(0, 0.5, (6, 4)).astype(np.float32)  # Gemm with transB=1: [out, in]
    bg = rng.normal(0, 0.1, 6).astype(np.float32)
    wm = rng.normal(0, 0.5, (6, 5)).astype(np.float32)
    inits = [
        numpy_helper.from_array(a, n)
        for a, n in [(w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"), (wg, "wg"), (bg, "bg"), (wm, "wm")]
    ]
    inits += [numpy_helper.from_array(np.array(0.0, np.float32), "zero"), numpy_helper.from_array(np.array(6.0, np.float32), "six")]
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["conv1"], name="conv1"),
        helper.make_node("Relu", ["conv1"], ["relu1"], name="relu1"),
        helper.make_node("Conv", ["relu1", "w2", "b2"], ["conv2"], name="conv2"),
        helper.make_node("Clip", ["conv2", "zero", "six"], ["clip2"], name="clip2"),
        helper.make_node("Add", ["clip2", "relu1"], ["add"], name="add"),
        helper.make_node("GlobalAveragePool", ["add"], ["pool"], name="pool"),
        helper.make_node("Flatten", ["pool"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "wg", "bg"], ["gemm"], name="gemm", transB=1),
        helper.make_node("MatMul", ["gemm", "wm"], ["logits"], name="matmul"),
    ]
    graph = helper.make_graph(
        nodes,
        "residual_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 5])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    if path is not None:
        onnx.save(model, str(path))
    return model


def reference_activations(model: onnx.ModelProto, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every activation of ``residual_cnn`` computed with numpy (float64)."""
    w = {i.name: numpy_helper.to_array(i).astype(np.float64) for i in model.graph.initializer}
    x = x.astype(np.float64)
    a = {"input": x}
    a["conv1"] = _conv1x1(x, w["w1"], w["b1"])
    a["relu1"] = np.maximum(a["conv1"], 0)
    a["conv2"] = _conv1x1(a["relu1"], w["w2"], w["b2"])
    a["clip2"] = np.clip(a["conv2"], 0, 6)
    a["add"] = a["clip2"] + a["relu1"]
    a["pool"] = a["add"].mean(axis=(2, 3), keepdims=True)
    a["flat"] = a["pool"].reshape(len(x), -1)
    a["gemm"] = a["flat"] @ w["wg"].T + w["bg"]
    a["logits"] = a["gemm"] @ w["wm"]
    return a


def write_images(folder: Path, count: int, size: int = 12, seed: int = 0, ext: str = "png") -> list[Path]:
    """``count`` random RGB images (lossless PNG by default) named img000.png ..."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        pixels = rng.integers(0, 256, (size, size + 2, 3), dtype=np.uint8)
        p = folder / f"img{i:03d}.{ext}"
        Image.fromarray(pixels).save(p)
        paths.append(p)
    return paths
