"""Statistics collection in several processes over disjoint shards of the data.

Each worker process builds its own ONNX Runtime session and collects one shard
(:func:`int8calib.batching.shard`); the parent merges the histograms in shard order.
Counts are integers and min/max exact, so the result is bit-identical to one process.
Workers are started with ``spawn``: ONNX Runtime and the histogram threads are not
fork-safe.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

from .batching import BatchLoader, shard
from .calibrator import Calibrator
from .collection import collect_statistics, warm_up_in_background
from .errors import Int8CalibError
from .runner import RunnerSpec
from .stats import Statistics, merge


def _collect_shard(spec: RunnerSpec, samples, inputs, preprocess, batch_size, skip_bad, max_memory, threads):
    warm_up_in_background()
    runner = spec.build(intra_op_threads=threads)
    calibrator = Calibrator(samples, inputs, preprocess, batch_size, skip_bad_images=skip_bad)
    stats = collect_statistics(calibrator, runner, None, max_memory=max_memory, threads=threads, allow_empty=True)
    return stats, list(calibrator.skipped)


def collect_in_processes(
    calibrator: Calibrator,
    runner,
    meta: dict | None = None,
    workers: int = 2,
    max_memory: "int | str | None" = None,
) -> Statistics:
    """Like :func:`collect_statistics`, split over ``workers`` processes.

    ``runner`` is an :class:`ActivationRunner` built from a file or a :class:`RunnerSpec`.
    ``max_memory`` applies to each worker.
    """
    spec = RunnerSpec.of(runner)
    loader = calibrator.loader
    if not isinstance(loader, BatchLoader):
        raise Int8CalibError("--workers needs file data (a list, folder, glob or tensor file), not a data-loader script")
    parts = [p for p in (shard(loader.samples, k, workers) for k in range(1, workers + 1)) if p]
    threads = max(1, (os.cpu_count() or 1) // len(parts))
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=len(parts), mp_context=context) as pool:
        futures = [
            pool.submit(
                _collect_shard, spec, part, loader.inputs, loader.preprocess, loader.batch_size,
                loader.skip_bad, max_memory, threads,
            )
            for part in parts
        ]
        results = [future.result() for future in futures]  # a worker's Int8CalibError re-raises here
    total = results[0][0]
    for stats, _ in results[1:]:
        total = merge(total, stats)
    for _, skipped in results:
        loader.skipped.extend(skipped)
    return Statistics(total.tensors, {**(meta or {}), "samples": total.meta.get("samples", 0)})
