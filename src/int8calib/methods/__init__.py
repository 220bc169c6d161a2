"""Methods: pure functions from a tensor's statistics to its amax, registered by name.

    from int8calib.methods import compute_amax, available
    amax = compute_amax("entropy2", histogram)
"""

# Importing registers the methods; this order is the order of `available()` and of tables.
from . import entropy, minmax, percentile, mse, legacy  # noqa: F401, I001
from .registry import METHODS, Method, available, compute_all, compute_amax, compute_ranges, get

__all__ = ["METHODS", "Method", "available", "compute_all", "compute_amax", "compute_ranges", "get"]
