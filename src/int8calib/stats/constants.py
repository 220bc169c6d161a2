"""Statistics of the constants TensorRT turns into layers, computed from the model's weights.

TensorRT's ONNX parser turns a constant operand of a MatMul, a Gemm or an element-wise
layer (a weight, a bias, a scalar such as GELU's sqrt(2)) into a Constant layer, and
calibration writes a line for its output like any activation's: the same method over
the constant's values (tests/test_trt_golden.py: TensorRT 8.6's entropy2 and 10.13's
minmax lines of such constants, regenerated bit for bit). Without a range the layer
that reads it falls back from INT8 ("Missing scale and zero-point for tensor ...").

TensorRT 10 names the layer after the initializer (or Constant node output), so its
output is ``<name>_output``: those are the names the statistics take here. TensorRT
8.x numbers its constant layers (``(Unnamed Layer* N) [Constant]_output``), a counter
only its parser knows; there ``int8calib complete-cache`` (:mod:`int8calib.tensorrt.complete`)
writes them on the build machine. Constants feeding other layers (convolution kernels,
normalisation scales, gather tables, shapes) become weights, not tensors, and get no line
(the MPNet cache has none for its LayerNorm and embedding weights).

A constant is the same in every batch, so it is histogrammed once; ``Statistics.meta
[CONSTANTS_META]`` lists these tensors so merging shards keeps one copy instead of adding them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np

from .histogram import CONSTANTS_META, Statistics

if TYPE_CHECKING:
    import onnx

# ONNX ops whose constant operands TensorRT's parser makes Constant layers of (MatrixMultiply and
# ElementWise layers read tensors; Gemm is a MatrixMultiply plus a bias add).
CONSTANT_CONSUMERS = frozenset({"MatMul", "Gemm", "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min"})


def constant_tensor_name(constant: str) -> str:
    """TensorRT 10's name for the output of the Constant layer its parser makes of ``constant``."""
    return f"{constant}_output"


def float_constants(model: "onnx.ModelProto") -> dict:
    """{name: TensorProto} of the model's float initializers and Constant node values."""
    from onnx import TensorProto

    floats = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE}
    constants = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = node.attribute[0].t
    return {name: t for name, t in constants.items() if t.data_type in floats}


def constant_inputs(model: "onnx.ModelProto") -> "list[tuple[str, str, onnx.NodeProto]]":
    """(TensorRT 10 tensor name, constant, the first node reading it) of every float constant
    feeding :data:`CONSTANT_CONSUMERS`, in graph order."""
    constants = float_constants(model)
    taken = {o for node in model.graph.node for o in node.output} | {i.name for i in model.graph.input}
    found: dict[str, tuple[str, str, "onnx.NodeProto"]] = {}
    for node in model.graph.node:
        if node.op_type in CONSTANT_CONSUMERS:
            for name in node.input:
                trt_name = constant_tensor_name(name)
                if name in constants and trt_name not in taken and trt_name not in found:
                    found[trt_name] = (trt_name, name, node)
    return list(found.values())


def constant_operands(model: "onnx.ModelProto", array: "Callable | None" = None) -> "Iterator[tuple[str, np.ndarray]]":
    """(TensorRT 10 tensor name, float32 values) of each of :func:`constant_inputs`, one at a time;
    ``array`` reads a TensorProto (default ``numpy_helper.to_array``; the runner's maps external data)."""
    from onnx import numpy_helper

    constants = float_constants(model)
    for trt_name, name, _ in constant_inputs(model):
        yield trt_name, np.asarray((array or numpy_helper.to_array)(constants[name]), np.float32).reshape(-1)


def constant_statistics(model: "onnx.ModelProto", array: "Callable | None" = None, trt_histograms: bool = True) -> Statistics:
    """The statistics of :func:`constant_operands`, one batch each (TensorRT's histogram starting at its max)."""
    from .collector import StatsCollector

    collector = StatsCollector(trt_histograms=trt_histograms)
    names = []
    for name, values in constant_operands(model, array):  # one calibration batch per constant
        collector.collect({name: values})
        names.append(name)
    return Statistics(collector.result().tensors, {CONSTANTS_META: names})
