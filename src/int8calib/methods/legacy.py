"""Legacy: TensorRT's IInt8LegacyCalibrator (TensorRT 2.0 EA), as far as it is documented.

The public documentation gives only two parameters: ``quantile`` (between 0 and 1)
"used to select the region maximum when the quantile method is in use", and
``regression_cutoff`` "the fraction of the maximum used to define the regression cutoff".
The algorithm itself is in an unpublished white paper. This project reads them as:
the region maximum is the ``quantile`` quantile of |x|, and never more than
``regression_cutoff`` x max |x|. See docs/methods.md.
"""

from ..errors import Int8CalibError
from ..stats.histogram import TensorHistogram
from .registry import register


@register("legacy", algorithm="LegacyCalibration", quantile=0.99999, regression_cutoff=1.0)
def legacy(hist: TensorHistogram, quantile: float = 0.99999, regression_cutoff: float = 1.0) -> float:
    """min(quantile of |x|, regression_cutoff x max |x|), as IInt8LegacyCalibrator's parameters."""
    if not 0.0 <= quantile <= 1.0:
        raise Int8CalibError(f"legacy quantile must be in [0, 1], got {quantile}")
    if not 0.0 <= regression_cutoff <= 1.0:
        raise Int8CalibError(f"legacy regression cutoff must be in [0, 1], got {regression_cutoff}")
    return min(hist.quantile(quantile), regression_cutoff * hist.amax)
