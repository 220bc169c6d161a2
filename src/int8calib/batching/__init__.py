"""Batching: load and preprocess samples into feed dicts of the model's batch shape."""

from .loader import Batch, BatchLoader

__all__ = ["Batch", "BatchLoader"]
