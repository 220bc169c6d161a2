"""The model ``--qdq`` writes, built one way wherever it is built: Q/DQ placement and scales
(writers.qdq), bias correction (this package), then the float computation typed for strongly
typed TensorRT (writers.precision). ``calibrate --qdq``, ``--from-cache``, ``--method auto``'s
candidates and the accuracy budget's trials all call :func:`quantized_model`, so what is scored is
what is written."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

import onnx

from ..writers.precision import LOW_OPSET, LOW_OPSET_HINT, PrecisionOptions, PrecisionSummary, lower_precision
from ..writers.qdq import QdqSummary, at_opset, build_qdq
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
