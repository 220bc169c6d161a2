"""Batching: load and preprocess samples into feed dicts of the model's batch shape."""

from .feeds import FeedDictLoader
from .loader import Batch, BatchLoader, row_steps
from .prefetch import prefetch
from .shard import parse_shard, shard

__all__ = ["Batch", "BatchLoader", "FeedDictLoader", "parse_shard", "prefetch", "row_steps", "shard"]
