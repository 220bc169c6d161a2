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


def parse_onnx(trt, builder, trt_logger, onnx_bytes: bytes, model, strongly_typed: bool = False):
    """(network, parser) of the ONNX model with TensorRT's own parser; a failure is a one-line error."""
    flags = 0
    creation = trt.NetworkDefinitionCreationFlag
    if version(trt) < (10,) and hasattr(creation, "EXPLICIT_BATCH"):
        flags |= 1 << int(creation.EXPLICIT_BATCH)  # default (and deprecated) from TensorRT 10
    if strongly_typed:
        if not hasattr(creation, "STRONGLY_TYPED"):
            raise Int8CalibError(f"TensorRT {trt.__version__} has no strongly typed networks; use --implicit")
        flags |= 1 << int(creation.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse(onnx_bytes, str(model)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors)) or "no detail"
        raise Int8CalibError(f"{model}: TensorRT's ONNX parser failed: {errors}".splitlines()[0])
    return network, parser  # the network points into weights the parser owns: keep both alive
