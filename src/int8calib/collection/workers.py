"""Statistics collection in several processes over disjoint shards of the data.

Each worker process builds its own ONNX Runtime session and collects one shard
(:func:`int8calib.batching.shard`); the parent merges the histograms in shard order.
Counts are integers and min/max exact, so the result is bit-identical to one process; every
worker starts TensorRT's histograms from the whole data's first batch, so those merge into
what one sequential run gives.
Workers are started with ``spawn``: ONNX Runtime and the histogram threads are not
fork-safe.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

from ..batching import BatchLoader, FeedDictLoader, shard
from ..errors import Int8CalibError
from ..runner import RunnerSpec
from ..stats import Statistics, merge
from .calibration_pass import collect_statistics
from .warmup import warm_up_in_background


def _collect_shard(spec: RunnerSpec, samples, inputs, preprocess, batch_size, skip_bad, max_memory, threads, first, trt, bits):
    warm_up_in_background()
    runner = spec.build(intra_op_threads=threads)
    loader = BatchLoader(samples, inputs, preprocess, batch_size, skip_bad)
    stats = collect_statistics(
        loader, runner, None, max_memory=max_memory, threads=threads, allow_empty=True, first_samples=first,
        trt_histograms=trt, bit_histograms=bits,
    )
    return stats, list(loader.skipped)


def collect_in_processes(
    loader: "BatchLoader | FeedDictLoader",
    runner,
    meta: dict | None = None,
    workers: int = 2,
    max_memory: "int | str | None" = None,
    first_samples=None,
    trt_histograms: bool = True,
    bit_histograms: bool = True,
) -> Statistics:
    """Like :func:`collect_statistics` over ``loader``, split over ``workers`` processes.

    ``runner`` is an :class:`ActivationRunner` built from a file or a :class:`RunnerSpec`.
    ``max_memory`` applies to each worker. Samples a worker skipped are added to
    ``loader.skipped``. Every worker takes TensorRT's starting ranges from the first batch of
    ``first_samples`` (default: all of ``loader``'s), so the merged statistics equal one run.
    """
    spec = RunnerSpec.of(runner)
    if not isinstance(loader, BatchLoader):
        raise Int8CalibError("--workers needs file data (a list, folder, glob or tensor file), not a data-loader script")
    parts = [p for p in (shard(loader.samples, k, workers) for k in range(1, workers + 1)) if p]
    threads = max(1, (os.cpu_count() or 1) // len(parts))
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=len(parts), mp_context=context) as pool:
        futures = [
            pool.submit(
                _collect_shard, spec, part, loader.inputs, loader.preprocess, loader.batch_size,
                loader.skip_bad, max_memory, threads, list(first_samples or loader.samples)[: loader.batch_size],
                trt_histograms, bit_histograms,
            )
            for part in parts
        ]
        results = [future.result() for future in futures]  # a worker's Int8CalibError re-raises here
    total = results[0][0]
    for stats, _ in results[1:]:
        total = merge(total, stats)
    for _, skipped in results:
        loader.skipped.extend(skipped)
    kept = {k: total.meta[k] for k in ("samples", "bit_histograms") if k in total.meta}
    return Statistics(total.tensors, {**(meta or {}), "samples": 0, **kept})
