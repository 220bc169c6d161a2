"""The calibration pass: run the model over a loader's batches and histogram every activation.

The stand-in for TensorRT's calibration pass. Each batch runs in steps sized to a memory
budget (:mod:`.steps`), histograms of one step are computed on a thread pool while ONNX
Runtime runs the next, and only the histograms are kept (docs/performance.md).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, Sequence

import numpy as np

from ..batching import Batch, BatchLoader, FeedDictLoader
from ..errors import Int8CalibError
from ..runner import ActivationRunner
from ..stats import Statistics, StatsCollector
from ..util.log import logger, progress_bar
from ..util.memory import limit_malloc_arenas
from .steps import _steps, _StepSizer, parse_size


def _unpad(activations: dict[str, np.ndarray], n: int, padded: int) -> dict[str, np.ndarray]:
    if n == padded:
        return activations
    return {k: (v[:n] if v.ndim and v.shape[0] == padded else v) for k, v in activations.items()}


def _check_inputs(batch: Batch, names: Sequence[str]) -> None:
    """The batch feeds every input the runner takes (the check ``Calibrator.get_batch`` makes)."""
    for name in names:
        if name not in batch.feeds:
            raise Int8CalibError(f"the engine asked for input {name!r}, which the data does not feed")


def collect_statistics(
    loader: "BatchLoader | FeedDictLoader",
    runner: ActivationRunner,
    meta: dict | None = None,
    max_memory: "int | str | None" = None,
    threads: int | None = None,
    allow_empty: bool = False,
    batches: Iterator[Batch] | None = None,
) -> Statistics:
    """Run every batch of ``loader`` through ``runner`` and histogram the activations.

    Each batch runs in steps of as many samples as ``max_memory`` (bytes of live
    activations; default: see :class:`~.steps._StepSizer`) allows, so peak memory does not
    grow with the batch size or the number of samples. Histogramming of one step runs
    on ``threads`` threads (default: one per core) while ONNX Runtime computes the next
    step, and the next batch is decoded in the background meanwhile.

    ``batches`` is ``iter(loader)`` when the caller started it already (its first batch
    then decodes while the runner is built); by default the pass starts it.
    """
    limit_malloc_arenas()  # before the threads below allocate: keeps peak RSS flat over long runs
    names = [i.name for i in runner.inputs]
    sizer = _StepSizer(parse_size(max_memory))
    fixed = loader.fixed_batch
    # Relu / Clip(0, hi) outputs the runner did not expose: their inputs are counted by sign.
    derived = getattr(runner, "derived", {})
    collector = StatsCollector(signed={source for source, _ in derived.values()})
    bar = progress_bar(loader.sample_count, "collecting", "img")
    pool = ThreadPoolExecutor(max_workers=threads or os.cpu_count() or 1, thread_name_prefix="int8calib-hist")
    try:
        for batch in iter(loader) if batches is None else batches:
            _check_inputs(batch, names)
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
