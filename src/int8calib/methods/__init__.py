"""Methods: pure functions from a tensor's statistics to its amax, registered by name.

    from int8calib.methods import compute_amax, available
    amax = compute_amax("entropy2", histogram)
"""

from . import entropy, minmax  # noqa: F401  (importing registers the methods)
from .registry import METHODS, Method, available, compute_amax, compute_ranges, get

__all__ = ["METHODS", "Method", "available", "compute_amax", "compute_ranges", "get"]
