"""The model ``--qdq`` writes, built one way wherever it is built: Q/DQ placement and scales
(writers.qdq), bias correction (this package), then the float computation typed for strongly
typed TensorRT (writers.precision). ``calibrate --qdq``, ``--from-cache``, ``--method auto``'s
candidates and the accuracy budget's trials all call :func:`quantized_model`, so what is scored is
what is written."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

import numpy as np
import onnx
from onnx import numpy_helper

from ..runner.model import EMULATE_QDQ_KEY, uses_external_data
from ..writers.precision import LOW_OPSET, LOW_OPSET_HINT, PrecisionOptions, PrecisionSummary, lower_precision
from ..writers.qdq import QdqSummary, at_opset, build_qdq, drop_unused_initializers
from .bias_correction import BiasShifts, correct_biases


@dataclass
class QuantizedModel:
    model: onnx.ModelProto
    qdq: QdqSummary
    precision: PrecisionSummary
    corrected: list[str] = field(default_factory=list)  # layers whose biases were corrected


def quantized_model(
    model: onnx.ModelProto,
    amax: Mapping[str, float],
    exclude_nodes: str | None = None,
    exclude_op_types: Iterable[str] = (),
    keep_float: Iterable[str] = (),
    scales: Mapping[str, float] | None = None,
    shifts: BiasShifts | None = None,
    precision: PrecisionOptions | None = None,
) -> QuantizedModel:
    """The INT8 Q/DQ model of ``model`` with ranges ``amax`` (``scales``: a cache's own scales),
    biases corrected with ``shifts`` when given, float computation in ``precision``'s type
    (default: float16, FP32 where its rules say)."""
    precision = precision or PrecisionOptions()
    if shifts is not None and shifts.shifts and shifts.high_precision != precision.high_precision:
        raise ValueError(f"bias shifts measured for {shifts.high_precision} scales, the model stores {precision.high_precision}")
    if precision.lowered:  # float16 scales need opset 19: converted before the int8 weights exist (one copy less)
        model = at_opset(model, LOW_OPSET, "float16 / bfloat16 Q/DQ scales", LOW_OPSET_HINT)
    qdq, summary = build_qdq(model, amax, exclude_nodes, exclude_op_types, keep_float, scales, precision.high_precision)
    corrected = correct_biases(qdq, shifts) if shifts is not None and shifts.shifts else []
    lowered, typed = lower_precision(qdq, precision)
    return QuantizedModel(lowered, summary, typed, corrected)


def scoring_model(
    model: onnx.ModelProto,
    amax: Mapping[str, float],
    exclude_nodes: str | None = None,
    exclude_op_types: Iterable[str] = (),
    keep_float: Iterable[str] = (),
    shifts: BiasShifts | None = None,
    precision: PrecisionOptions | None = None,
) -> QuantizedModel:
    """The model :func:`quantized_model` writes, for ranking candidates: the same INT8 weights, the
    same scales (rounded to the type the written model stores them in) and the same corrected
    biases, with the float computation outside Q/DQ left in float32 and the weights stored
    dequantized. ONNX Runtime's CPU has no float16 kernels for most operators and casts around
    each (2.7x the twin's time on EfficientNet-Lite0). Neither is TensorRT's arithmetic: TensorRT
    computes an INT8 layer in integers and rescales in float32, which the twin follows and ONNX
    Runtime's float16 emulation does not (it rounds every dequantized value to float16), while it
    runs the unquantized layers in float16, which the emulation follows and the twin does not.
    Measured against the written models (benchmarks/scoring_model.py, docs/qdq.md): within
    0.35 dB on EfficientNet-Lite0 and MiniLM, up to 1.5 dB on one candidate of the PP-OCRv4
    recogniser. bfloat16 rounds 32x coarser than float16: those models are scored as written."""
    precision = precision or PrecisionOptions()
    if precision.high_precision == "bf16":
        return quantized_model(model, amax, exclude_nodes, exclude_op_types, keep_float, shifts=shifts, precision=precision)
    qdq, summary = build_qdq(model, amax, exclude_nodes, exclude_op_types, keep_float, None, precision.high_precision)
    corrected = correct_biases(qdq, shifts) if shifts is not None and shifts.shifts else []
    if not uses_external_data(qdq):  # (a large model's weights stay where they are: dequantized they would be 4x)
        _fold_weight_dequantization(qdq.graph)
    qdq.metadata_props.add(key=EMULATE_QDQ_KEY, value="1")
    return QuantizedModel(qdq, summary, PrecisionSummary("fp32"), corrected)


def _fold_weight_dequantization(graph: onnx.GraphProto) -> None:
    """Replace each DequantizeLinear of an initializer by the float32 initializer it computes, in place
    ((q - zero point) * scale, as ONNX Runtime computes it)."""
    inits = {i.name: i for i in graph.initializer}
    kept, dequantized = [], []
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in inits:
            kept.append(node)
            continue
        q = numpy_helper.to_array(inits[node.input[0]]).astype(np.float32)
        scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
        zero = numpy_helper.to_array(inits[node.input[2]]).astype(np.float32) if len(node.input) > 2 and node.input[2] else np.float32(0)
        if scale.ndim == 1:  # per channel along ``axis`` (default 1)
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1) % q.ndim
            shape = [1] * q.ndim
            shape[axis] = -1
            scale, zero = scale.reshape(shape), zero.reshape(shape) if zero.ndim else zero
        dequantized.append(numpy_helper.from_array(((q - zero) * scale).astype(np.float32), node.output[0]))
    del graph.node[:]
    graph.node.extend(kept)
    graph.initializer.extend(dequantized)
    drop_unused_initializers(graph)
