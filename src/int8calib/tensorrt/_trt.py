"""Importing TensorRT lazily, and what each TensorRT version can do."""

from __future__ import annotations

import sys

from ..errors import Int8CalibError

# TensorRT 10.1 deprecated implicit quantization (calibrators); 11.0 removed it.
EXPLICIT_FROM = (10, 1)


def import_tensorrt(feature: str = "this"):
    """The ``tensorrt`` module, or a one-line :class:`Int8CalibError` saying how to get it."""
    try:
        import tensorrt
    except ImportError as exc:
        raise Int8CalibError(
            f"{feature} needs TensorRT's Python package ({exc}); install it from NVIDIA's index "
            "(pip install tensorrt-cu12 or tensorrt-cu13). Without TensorRT, 'int8calib calibrate --cache FILE' "
            "writes the calibration cache your TensorRT machine can read."
        ) from None
    return tensorrt


def loaded_tensorrt():
    """``tensorrt`` if it is already imported (or stubbed in by tests), else None; never imports it."""
    return sys.modules.get("tensorrt")


def version(trt) -> tuple[int, ...]:
    """TensorRT's version as a tuple of ints, e.g. (10, 13, 3)."""
    parts = []
    for piece in str(getattr(trt, "__version__", "0")).split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts) or (0,)


def has_calibrators(trt) -> bool:
    return hasattr(trt, "IInt8EntropyCalibrator2")


def prefers_explicit(trt) -> bool:
    """True where the builder should get a Q/DQ model rather than a calibrator."""
    return version(trt) >= EXPLICIT_FROM or not has_calibrators(trt)
