"""Batching: load and preprocess samples into feed dicts of the model's batch shape."""

from .feeds import FeedDictLoader
from .loader import Batch, BatchLoader, first_samples, row_steps
from .prefetch import prefetch
from .shard import parse_shard, shard

__all__ = ["Batch", "BatchLoader", "FeedDictLoader", "first_samples", "parse_shard", "prefetch", "row_steps", "shard"]
