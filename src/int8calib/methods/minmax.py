"""MinMax: the largest observed |x| (TensorRT's MinMaxCalibration)."""

from ..stats.histogram import TensorHistogram
from .registry import register


@register("minmax", algorithm="MinMaxCalibration")
def minmax(hist: TensorHistogram) -> float:
    """amax = max |x| over the calibration data; nothing is clipped."""
    return hist.amax
