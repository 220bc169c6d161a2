"""Batches from a feed-dict source (``--data-loader-script``).

Each feed dict the loader yields becomes one batch as it is (Polygraphy's semantics): the
statistics are exact merges over rows, so they do not depend on how the loader chose to batch.
Its batch size is counted along each input's batch axis (``InputInfo.batch_axis``, docs/inputs.md);
an input without one (a scalar sample rate, a fixed table) is fed as the dict gives it. A model with
a fixed batch axis gets short batches zero-padded (``Batch.n`` counts the real rows),
as with file data.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from ..errors import Int8CalibError
from ..runner.model import InputInfo
from ..sources.feeds import FeedDictSource
from .loader import Batch, fit_batch, fixed_batch_size


class FeedDictLoader:
    """Iterates over a :class:`FeedDictSource`, checking every feed dict against the model's inputs."""

    preprocess = None  # the loader yields model inputs as they are
    skip_bad = False

    def __init__(self, source: FeedDictSource, inputs: Sequence[InputInfo], batch_size: int = 32):
        if batch_size < 1:
            raise Int8CalibError(f"--batch-size must be >= 1, got {batch_size}")
        self.source = source
        self.inputs = list(inputs)
        self.fixed_batch = fixed_batch_size(self.inputs)
        # Only informational (TensorRT's getBatchSize): batches are what the loader yields.
        self.batch_size = self.fixed_batch or batch_size
        self.skipped: list[str] = []

    @property
    def sample_count(self) -> int | None:
        return None  # unknown until the loader is exhausted

    def fingerprint(self) -> str:
        return self.source.fingerprint()

    def batching(self) -> str:
        """A loader script's batches are its own: its fingerprint covers them."""
        return "script:" + self.source.fingerprint()

    def __iter__(self) -> Iterator[Batch]:
        names = {i.name for i in self.inputs}
        for number, feed in self.source:
            where = f"{self.source.origin} item {number}"
            missing = sorted(names - set(feed))
            if missing:
                raise Int8CalibError(f"{where}: no array for model input(s) {missing} (has {sorted(map(str, feed))})")
            arrays = {}
            for info in self.inputs:
                try:
                    arr = np.asarray(feed[info.name])
                except Exception as exc:  # ragged lists, objects numpy cannot convert
                    raise Int8CalibError(f"{where}: input '{info.name}' is not an array ({exc})") from None
                if arr.dtype.kind not in "biuf":
                    raise Int8CalibError(f"{where}: input '{info.name}' has non-numeric type {arr.dtype}")
                if info.batch_axis is not None and len(info.shape) and arr.ndim == len(info.shape) - 1:
                    arr = np.expand_dims(arr, info.batch_axis)  # one sample without its batch axis
                arrays[info.name] = arr
            batched = [i for i in self.inputs if i.batch_axis is not None]
            rows = {
                arrays[i.name].shape[i.batch_axis] if arrays[i.name].ndim > i.batch_axis else None for i in batched
            }
            if len(rows) > 1 or None in rows:
                shapes = {i.name: f"{list(arrays[i.name].shape)} (batch axis {i.batch_axis})" for i in batched}
                raise Int8CalibError(f"{where}: arrays disagree on the batch size: {shapes}")
            n = rows.pop() if rows else 1  # no input has a batch axis: the dict is one sample
            if n == 0:
                continue
            if self.fixed_batch is not None and n > self.fixed_batch:
                raise Int8CalibError(f"{where}: batch of {n} rows; the model's batch size is fixed at {self.fixed_batch}")
            feeds = {info.name: fit_batch(info, arrays[info.name], self.fixed_batch, where) for info in self.inputs}
            yield Batch(feeds, n, [], {i.name: i.batch_axis for i in self.inputs})
