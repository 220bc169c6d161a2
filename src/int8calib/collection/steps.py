"""Steps: how many samples one ONNX Runtime run takes under the memory budget (--max-memory)."""

from __future__ import annotations

import re
from typing import Iterator

import numpy as np

from ..batching import Batch
from ..errors import Int8CalibError
from ..util.log import logger
from ..util.memory import DEFAULT_MAX_MEMORY_SMALL_TENSORS, default_max_memory

# While one step runs, memory holds its outputs in ORT's arena, the arrays handed to
# Python, and the previous step's activations still being histogrammed: budget three
# times one run's outputs (measured peak is lower, see docs/performance.md).
_LIVE_COPIES = 3
_STEP_VALUES_PER_TENSOR = 1 << 16  # ~65 us of kernel work against ~10 us of Python per tensor and step


def parse_size(text: "str | int | None") -> int | None:
    """'1.5G', '800M', '64k', '2GiB' or a number of bytes -> bytes (None stays None)."""
    if text is None or isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmMgGtT]?)(i?[bB])?\s*", str(text))
    if not match or float(match.group(1)) <= 0:
        raise Int8CalibError(f"cannot read memory size {text!r} (use e.g. 1.5G, 800M)")
    return int(float(match.group(1)) * (1 << (10 * " KMGT".index(match.group(2).upper() or " "))))


class _StepSizer:
    """How many samples one ONNX Runtime run may take under a memory budget.

    The first run takes a single sample and measures its activation bytes; later runs
    take as many as the budget allows. Statistics are exact sums, so splitting a batch
    this way changes nothing in the result.

    Under the default budget (``max_memory`` None), a model of many small tensors gets
    larger steps, up to ``DEFAULT_MAX_MEMORY_SMALL_TENSORS``: each tensor costs about
    10 us of Python per step whatever its size, so a step should give the kernel at
    least ``_STEP_VALUES_PER_TENSOR`` values per tensor (measured on the 1,051-tensor
    model of benchmarks/deep_model.py: 2 steps per batch of 8 took 95 ms against 77 ms
    for one). An explicit budget is never exceeded.
    """

    def __init__(self, max_memory: int | None):
        self.explicit = max_memory is not None
        self.max_memory = default_max_memory() if max_memory is None else max_memory
        self.rows: int | None = None  # None until measured

    def measure(self, activations: dict[str, np.ndarray], samples: int) -> None:
        samples = max(1, samples)
        self.per_sample = max(1, sum(v.nbytes for v in activations.values()) // samples)
        self.rows = max(1, self.max_memory // (_LIVE_COPIES * self.per_sample))
        if not self.explicit and activations:
            values = max(1, sum(v.size for v in activations.values()) // samples)
            wanted = -(-_STEP_VALUES_PER_TENSOR * len(activations) // values)
            allowed = max(DEFAULT_MAX_MEMORY_SMALL_TENSORS, self.max_memory) // (_LIVE_COPIES * self.per_sample)
            self.rows = max(self.rows, min(wanted, allowed))
        logger.debug("activations: %.1f MB per sample; %d sample(s) per run", self.per_sample / 1e6, self.rows)


def _steps(batch: Batch, sizer: _StepSizer, fixed_batch: int | None) -> Iterator[tuple[dict[str, np.ndarray], int]]:
    """(feeds, real samples) for each run over ``batch``; a fixed-batch model takes it whole."""
    if fixed_batch is not None:
        yield batch.feeds, batch.n
        return
    start = 0
    while start < batch.n:
        left = batch.n - start
        if sizer.rows is None:
            rows = 1
        else:  # equal steps (11, 11, 10 rather than 12, 12, 8): allocations repeat, peak memory stays flat
            rows = -(-left // -(-left // sizer.rows))
        yield batch.rows(start, start + rows), rows
        start += rows
