"""Statistics: exactly mergeable per-tensor histograms of |x|.

Histograms are keyed on the float32 bit pattern of |x| (exponent plus the top
``mantissa_bits`` of the mantissa), so bins do not depend on a running range: the
counts of a calibration set are the same whatever the batch size, order or sharding,
and ``merge(a, b)`` equals collecting a and b together. Beside them, each tensor keeps
TensorRT's own histogram (:class:`TrtHistogram`), which follows the batches as TensorRT's.
"""

from .histogram import DEFAULT_MANTISSA_BITS, Statistics, TensorHistogram, merge
from .io import load, save
from .trt_histogram import TrtHistogram


def __getattr__(name):
    # The collector needs numba (half a second to import); reading statistics does not.
    if name == "StatsCollector":
        from .collector import StatsCollector

        return StatsCollector
    raise AttributeError(f"module 'int8calib.stats' has no attribute {name!r}")

__all__ = ["DEFAULT_MANTISSA_BITS", "Statistics", "StatsCollector", "TensorHistogram", "TrtHistogram", "load", "merge", "save"]
