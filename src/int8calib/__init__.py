"""int8calib: INT8 post-training calibration for TensorRT, on any machine.

The data flows one way, one subpackage per stage::

    sources -> preprocess -> batching -> runner -> collection -> stats -> methods -> writers

Public names load lazily so ``import int8calib`` stays cheap.
"""

__version__ = "0.1.0"

_LAZY = {
    "calibrate": ("int8calib.api", "calibrate"),
    "collect": ("int8calib.api", "collect"),
    "inspect": ("int8calib.cachefiles.inspect", "inspect"),
    "quantize_from_cache": ("int8calib.cachefiles.to_qdq", "quantize_from_cache"),
    "evaluate_cache": ("int8calib.cachefiles.to_qdq", "evaluate_cache"),
    "compare_ranges": ("int8calib.cachefiles.compare", "compare_ranges"),
    "Calibrator": ("int8calib.calibrator", "Calibrator"),
    "EntropyCalibrator2": ("int8calib.calibrator", "EntropyCalibrator2"),
    "EntropyCalibrator": ("int8calib.calibrator", "EntropyCalibrator"),
    "LegacyCalibrator": ("int8calib.calibrator", "LegacyCalibrator"),
    "MinMaxCalibrator": ("int8calib.calibrator", "MinMaxCalibrator"),
    "CalibrationResult": ("int8calib.calibrator", "CalibrationResult"),
    "Preprocess": ("int8calib.preprocess", "Preprocess"),
    "read_cache": ("int8calib.writers.cache", "read_cache"),
    "write_cache": ("int8calib.writers.cache", "write_cache"),
    "Int8CalibError": ("int8calib.errors", "Int8CalibError"),
}

# Subpackages reachable as attributes (int8calib.zoo.efficientnet_lite0()) without importing them up front.
_SUBPACKAGES = {"evaluate", "methods", "preprocess", "report", "stats", "tensorrt", "writers", "zoo"}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    import importlib

    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    if name in _SUBPACKAGES:
        return importlib.import_module(f"int8calib.{name}")
    raise AttributeError(f"module 'int8calib' has no attribute {name!r}")
