"""Batching: load and preprocess samples into feed dicts of the model's batch shape."""

from .feeds import FeedDictLoader
from .loader import Batch, BatchLoader

__all__ = ["Batch", "BatchLoader", "FeedDictLoader"]
