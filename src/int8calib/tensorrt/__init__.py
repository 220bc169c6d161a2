"""TensorRT integration: calibrator classes for TensorRT 8.x-10.x and engine builds.

Drop-in for a tutorial calibrator::

    import int8calib.tensorrt
    config.int8_calibrator = int8calib.tensorrt.EntropyCalibrator2(
        "calib_list.txt", model="model.onnx", preprocess="imagenet", cache_file="calibration.cache")

Importing this package does not import TensorRT; the classes below are made on first
use and raise :class:`int8calib.errors.Int8CalibError` when TensorRT is missing (or is
11.0+, which removed calibrators: use :func:`build_engine`, which takes the Q/DQ route).
"""

from __future__ import annotations

from .calibrators import SPECS, TensorRTCalibrator, full_batch, get_class

__all__ = [*SPECS, "TensorRTCalibrator", "build_engine", "full_batch", "get_class"]


def __getattr__(name):
    if name in SPECS:
        return get_class(name)
    if name in ("build_engine", "BuildResult"):
        from . import build

        return getattr(build, name)
    raise AttributeError(f"module 'int8calib.tensorrt' has no attribute {name!r}")
