"""Percentile: amax = the P-th percentile of |x| (TensorRT has no such calibrator).

Read from the full-resolution statistics (bins 2**-mantissa_bits wide relative to
their value, counts uniform within a bin), not from 2048 linear bins: a tensor
whose max is a rare outlier 1000x its bulk would otherwise get a percentile only
max/2048 precise. The cache says EntropyCalibration2 (docs/methods.md).
"""

from ..errors import Int8CalibError
from ..stats.histogram import TensorHistogram
from .registry import register


@register("percentile", algorithm="EntropyCalibration2", percentile=99.99)
def percentile(hist: TensorHistogram, percentile: float = 99.99) -> float:
    """The P-th percentile of |x| (default 99.99): clips the top 100 - P % of values."""
    if not 0.0 < percentile <= 100.0:
        raise Int8CalibError(f"--percentile must be in (0, 100], got {percentile}")
    return hist.quantile(percentile / 100.0)
