"""Collection: run the model over the calibrator's batches and histogram every activation.

The stand-in for TensorRT's calibration pass. Each batch runs in steps sized to a memory
budget, histograms of one step are computed on a thread pool while ONNX Runtime runs
the next, and only the histograms are kept (docs/performance.md).
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

from .batching import Batch
from .errors import Int8CalibError
from .runner import ActivationRunner
from .stats import Statistics, StatsCollector
from .util.log import logger, progress_bar
from .util.memory import DEFAULT_MAX_MEMORY, DEFAULT_MAX_MEMORY_SMALL_TENSORS, limit_malloc_arenas

if TYPE_CHECKING:
    from .calibrator import Calibrator


def _unpad(activations: dict[str, np.ndarray], n: int, padded: int) -> dict[str, np.ndarray]:
    if n == padded:
        return activations
    return {k: (v[:n] if v.ndim and v.shape[0] == padded else v) for k, v in activations.items()}


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
        self.max_memory = DEFAULT_MAX_MEMORY if max_memory is None else max_memory
        self.rows: int | None = None  # None until measured

    def measure(self, activations: dict[str, np.ndarray], samples: int) -> None:
        samples = max(1, samples)
        self.per_sample = max(1, sum(v.nbytes for v in activations.values()) // samples)
        self.rows = max(1, self.max_memory // (_LIVE_COPIES * self.per_sample))
        if not self.explicit and activations:
            values = max(1, sum(v.size for v in activations.values()) // samples)
            wanted = -(-_STEP_VALUES_PER_TENSOR * len(activations) // values)
            allowed = DEFAULT_MAX_MEMORY_SMALL_TENSORS // (_LIVE_COPIES * self.per_sample)
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
        yield {k: v[start : start + rows] for k, v in batch.feeds.items()}, rows
        start += rows


def warm_up_in_background(methods: Sequence[str] = (), histograms: bool = True) -> None:
    """Start loading the histogram kernel (unless ``histograms`` is False: worker processes
    histogram, their parent does not), then what ``methods`` compile (mse's numba loop), in
    a thread: it overlaps loading the model and collecting instead of delaying them."""
    import threading

    def load() -> None:
        try:
            from .methods import get

            if histograms:
                from .stats import kernels

                kernels.warm_up()
            for name in methods:
                prepare = get(name).prepare
                if prepare is not None:
                    prepare()
        except Exception:  # the first real use reports any problem
            pass

    threading.Thread(target=load, name="int8calib-warm-up", daemon=True).start()


def collect_statistics(
    calibrator: Calibrator,
    runner: ActivationRunner,
    meta: dict | None = None,
    max_memory: "int | str | None" = None,
    threads: int | None = None,
    allow_empty: bool = False,
) -> Statistics:
    """Pull every batch from ``calibrator``, run it, and histogram the activations.

    Each batch runs in steps of as many samples as ``max_memory`` (bytes of live
    activations; default: see :class:`_StepSizer`) allows, so peak memory does not
    grow with the batch size or the number of samples. Histogramming of one step runs
    on ``threads`` threads (default: one per core) while ONNX Runtime computes the next
    step, and the next batch is decoded in the background meanwhile.
    """
    limit_malloc_arenas()  # before the threads below allocate: keeps peak RSS flat over long runs
    names = [i.name for i in runner.inputs]
    sizer = _StepSizer(parse_size(max_memory))
    fixed = calibrator.loader.fixed_batch
    # Relu / Clip(0, hi) outputs the runner did not expose: their inputs are counted by sign.
    derived = getattr(runner, "derived", {})
    collector = StatsCollector(signed={source for source, _ in derived.values()})
    bar = progress_bar(calibrator.loader.sample_count, "collecting", "img")
    pool = ThreadPoolExecutor(max_workers=threads or os.cpu_count() or 1, thread_name_prefix="int8calib-hist")
    try:
        while calibrator.get_batch(names) is not None:
            batch = calibrator.batch
            for feeds, n in _steps(batch, sizer, fixed):
                padded = next(iter(feeds.values())).shape[0]
                activations = _unpad(runner.run(feeds), n, padded)
                if sizer.rows is None:
                    sizer.measure(activations, n)
                    if fixed is not None and sizer.rows < fixed:
                        logger.warning(
                            "the model's batch size is fixed at %d: runs cannot be split to stay under "
                            "--max-memory (%.0f MB of activations per run)", fixed, sizer.per_sample * fixed / 1e6,
                        )
                collector.submit(activations, pool, samples=n)
                del activations, feeds  # the collector's tasks hold the only references now
            bar.update(batch.n)
        stats = collector.result(meta, derived, order=getattr(runner, "tensors", None))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    if collector.samples == 0 and not allow_empty:
        raise Int8CalibError("no calibration sample could be loaded")
    return stats
