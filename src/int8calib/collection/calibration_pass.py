"""The calibration pass: run the model over a loader's batches and histogram every activation.

The stand-in for TensorRT's calibration pass. Each batch runs in steps sized to a memory
budget (:mod:`.steps`), histograms of one step are computed on a thread pool while ONNX
Runtime runs the next, and only the histograms are kept (docs/performance.md).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

from ..batching import Batch, BatchLoader, FeedDictLoader
from ..errors import Int8CalibError
from ..runner import ActivationRunner
from ..stats import Statistics, StatsCollector
from ..util.log import logger, progress_bar
from ..util.memory import collection_threads, limit_malloc_arenas
from .steps import _steps, _StepSizer, parse_size

if TYPE_CHECKING:
    from ..sources import Sample


def _unpad(activations: dict[str, np.ndarray], n: int, padded: int) -> dict[str, np.ndarray]:
    if n == padded:
        return activations
    return {k: (v[:n] if v.ndim and v.shape[0] == padded else v) for k, v in activations.items()}


def _per_sample(activations: dict[str, np.ndarray], shared: set[str], n: int) -> dict[str, np.ndarray]:
    """Tensors computed from inputs without a batch axis alone (a sample rate's cast) hold one value per
    run, seen by all ``n`` samples: counted ``n`` times, so statistics equal batch size 1's."""
    if n == 1 or not shared:
        return activations
    return {k: (np.repeat(v[None], n, axis=0) if k in shared else v) for k, v in activations.items()}


def _shared(batch: Batch, runner) -> set[str]:
    unbatched = {name for name, axis in batch.axes.items() if axis is None}
    return runner.shared_tensors(unbatched) if unbatched and hasattr(runner, "shared_tensors") else set()


def _check_inputs(batch: Batch, names: Sequence[str]) -> None:
    """The batch feeds every input the runner takes (the check ``Calibrator.get_batch`` makes)."""
    for name in names:
        if name not in batch.feeds:
            raise Int8CalibError(f"the engine asked for input {name!r}, which the data does not feed")


def _first_batch_ranges(batch: Batch, runner: ActivationRunner, sizer: _StepSizer, fixed: int | None) -> dict:
    """(min, max) of every activation over ``batch``, run in steps as collection runs it."""
    if getattr(runner, "on_device", False):
        from ..stats import gpu

        min_max = lambda value: gpu.min_max_checked(value)[:2]  # noqa: E731
    else:
        from ..stats.kernels import min_max

    ranges: dict[str, tuple[float, float]] = {}
    shared = _shared(batch, runner)
    for feeds, n in _steps(batch, sizer, fixed):
        activations = _per_sample(_unpad(runner.run(feeds), n, fixed or n), shared, n)
        if sizer.rows is None:
            sizer.measure(activations, n)
        for name, value in activations.items():
            lo, hi = min_max(value)
            old = ranges.get(name, (lo, hi))
            ranges[name] = (min(old[0], lo), max(old[1], hi))
    return ranges


def _one_step(batch: Batch, sizer: _StepSizer, fixed: int | None) -> bool:
    """Whether ``batch`` runs in one ONNX Runtime step (the first step always takes one sample)."""
    return fixed is not None or batch.n == 1 or (sizer.rows is not None and batch.n <= sizer.rows)


def collect_statistics(
    loader: "BatchLoader | FeedDictLoader",
    runner: ActivationRunner,
    meta: dict | None = None,
    max_memory: "int | str | None" = None,
    threads: int | None = None,
    allow_empty: bool = False,
    batches: Iterator[Batch] | None = None,
    first_samples: Sequence[Sample] | None = None,
    trt_histograms: bool = True,
    bit_histograms: bool = True,
) -> Statistics:
    """Run every batch of ``loader`` through ``runner`` and histogram the activations.

    Each batch runs in steps of as many samples as ``max_memory`` (bytes of live
    activations; default: see :class:`~.steps._StepSizer`) allows, so peak memory does not
    grow with the batch size or the number of samples. Histogramming of one step runs
    on ``threads`` threads (default: one per core) while ONNX Runtime computes the next
    step, and the next batch is decoded in the background meanwhile.

    ``batches`` is ``iter(loader)`` when the caller started it already (its first batch
    then decodes while the runner is built); by default the pass starts it.

    TensorRT's histograms (:class:`~int8calib.stats.TrtHistogram`) start from the first
    batch's max |x|, needed before that batch is histogrammed: when the first batch runs in
    several steps, its steps run once more for their maxima first. ``first_samples`` (a
    shard's or worker's whole data set) gives the first batch to take the ranges from
    instead of the loader's own, so that merged parts equal one sequential run.
    ``trt_histograms`` False leaves TensorRT's histograms out (no method asked for needs them),
    ``bit_histograms`` False the bit-pattern counts (only TensorRT's histograms are read).
    """
    limit_malloc_arenas()  # before the threads below allocate: keeps peak RSS flat over long runs
    names = [i.name for i in runner.inputs]
    sizer = _StepSizer(parse_size(max_memory))
    fixed = loader.fixed_batch
    # Relu / Clip(0, hi) outputs the runner did not expose: their inputs are counted by sign.
    derived = getattr(runner, "derived", {})
    if getattr(runner, "on_device", False):  # activations on the GPU: histogrammed there
        from ..stats.gpu_collector import GpuStatsCollector as Collector
    else:
        Collector = StatsCollector
    collector = Collector(
        signed={source for source, _ in derived.values()}, derived=derived, trt_histograms=trt_histograms,
        bit_histograms=bit_histograms,
    )
    first_batch = None
    if first_samples is not None and isinstance(loader, BatchLoader):
        whole = BatchLoader(first_samples[: loader.batch_size], loader.inputs, loader.preprocess,
                            loader.batch_size, loader.skip_bad, prefetch=0)
        first_batch = next(iter(whole), None)
    bar = progress_bar(loader.sample_count, "collecting", "img")
    pool = ThreadPoolExecutor(max_workers=threads or collection_threads()[1], thread_name_prefix="int8calib-hist")
    try:
        for number, batch in enumerate(iter(loader) if batches is None else batches):
            _check_inputs(batch, names)
            if number == 0 and trt_histograms and (first_batch is not None or not _one_step(batch, sizer, fixed)):
                collector.set_first_batch(_first_batch_ranges(first_batch or batch, runner, sizer, fixed))
            shared = _shared(batch, runner)
            for step, (feeds, n) in enumerate(_steps(batch, sizer, fixed)):
                # rows past n: a fixed batch's padding
                activations = _per_sample(_unpad(runner.run(feeds), n, fixed or n), shared, n)
                if sizer.rows is None:
                    sizer.measure(activations, n)
                    if fixed is not None and sizer.rows < fixed:
                        logger.warning(
                            "the model's batch size is fixed at %d: runs cannot be split to stay under "
                            "--max-memory (%.0f MB of activations per run)", fixed, sizer.per_sample * fixed / 1e6,
                        )
                collector.submit(activations, pool, samples=n, new_batch=step == 0)
                del activations, feeds  # the collector's tasks hold the only references now
            bar.update(batch.n)
        stats = collector.result(meta, derived, order=getattr(runner, "tensors", None))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    if collector.samples == 0 and not allow_empty:
        raise Int8CalibError("no calibration sample could be loaded")
    return stats
