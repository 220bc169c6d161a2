"""Float types of the written model: rounding to float16 / bfloat16 and their limits.

Shared by the Q/DQ writer (scales rounded to the type the model stores them in) and the
precision pass (:mod:`writers.precision`).
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from ..errors import Int8CalibError

HIGH_PRECISIONS = ("fp16", "bf16", "fp32")
DEFAULT_HIGH_PRECISION = "fp16"
LOW_TYPES = {"fp16": TensorProto.FLOAT16, "bf16": TensorProto.BFLOAT16}
FP16_MAX = 65504.0
FP16_MIN_NORMAL = 2.0**-14  # below it FP16 is subnormal (fewer bits) down to 2**-24, then zero
# A tensor observed within a factor of 16 of FP16's largest value stays FP32: data the calibration
# set did not hold overflows easily (ModelOpt's AutoCast defaults to 512; docs/qdq.md compares).
FP16_RANGE_LIMIT = FP16_MAX / 16

def check_high_precision(precision: str) -> str:
    if precision not in HIGH_PRECISIONS:
        raise Int8CalibError(f"--high-precision must be one of {', '.join(HIGH_PRECISIONS)}, got {precision!r}")
    return precision


def _bf16_round(x: np.ndarray) -> np.ndarray:
    """float32 values rounded to bfloat16 (nearest, ties to even), as float32."""
    bits = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16 << 16).astype(np.uint32)
    return rounded.view(np.float32)


def round_to(values: np.ndarray, precision: str) -> np.ndarray:
    """float32 ``values`` rounded to what ``precision`` (fp16, bf16, fp32) holds, as float32."""
    values = np.asarray(values, np.float32)
    if precision == "fp16":
        return values.astype(np.float16).astype(np.float32)
    if precision == "bf16":
        return _bf16_round(values)
    return values


def tensor_of(values: np.ndarray, name: str, precision: str) -> TensorProto:
    """An initializer holding float ``values`` in ``precision``'s type."""
    values = np.asarray(values, np.float32)
    if precision == "fp16":
        return numpy_helper.from_array(values.astype(np.float16), name)
    if precision == "bf16":
        bits = (_bf16_round(values).view(np.uint32) >> 16).astype(np.uint16)
        t = helper.make_tensor(name, TensorProto.BFLOAT16, values.shape, bits.tobytes(), raw=True)
        return t
    return numpy_helper.from_array(values, name)


def scale_values(scale: np.ndarray, precision: str, weights: bool = False) -> np.ndarray:
    """Q/DQ scales as the ``precision`` model stores them, as float32.

    FP16 weight scales are kept at or above FP16's smallest normal number: a subnormal scale
    has too few bits (a weight channel under 0.0078 is quantized with step 2**-14 instead).
    """
    scale = np.asarray(scale, np.float32)
    rounded = round_to(scale, precision)
    if precision != "fp16":
        return rounded
    if weights:
        return np.maximum(rounded, np.float32(FP16_MIN_NORMAL))
    # an activation scale below FP16's normal range keeps float32 (its Q/DQ pair stays FP32)
    return np.where(scale < FP16_MIN_NORMAL, scale, rounded).astype(np.float32)
