"""Writers: what TensorRT reads (calibration cache, dynamic-range JSON, Q/DQ model)."""

from .cache import ALGORITHMS, CalibrationCache, format_cache, parse_cache, read_cache, write_cache
from .ranges import read_ranges, write_ranges

__all__ = [
    "ALGORITHMS", "CalibrationCache", "format_cache", "parse_cache", "read_cache", "read_ranges",
    "write_cache", "write_ranges",
]
