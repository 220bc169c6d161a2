"""The stage's entry point: warm up, then collect in this process or in worker processes."""

from __future__ import annotations

from typing import Callable, Sequence

from ..batching import BatchLoader, FeedDictLoader
from ..runner import ActivationRunner, RunnerSpec
from ..stats import Statistics
from .calibration_pass import collect_statistics
from .warmup import warm_up_in_background


def gather_statistics(
    loader: "BatchLoader | FeedDictLoader",
    runner: "ActivationRunner | RunnerSpec | Callable[[], ActivationRunner]",
    meta: dict | None,
    max_memory: "int | str | None",
    workers: int,
    methods: Sequence[str] = (),
    first_samples=None,
    trt_histograms: bool = True,
    bit_histograms: bool = True,
) -> Statistics:
    """The statistics of every batch ``loader`` yields, in ``workers`` processes.

    What ``methods`` compile and the histogram kernel load in a background thread, and the
    first batch decodes while the runner's session is built. ``first_samples``: the whole
    data set when ``loader`` holds a shard of it (see :func:`collect_statistics`);
    ``trt_histograms`` False: without TensorRT's histograms, which only entropy2 / entropy read;
    ``bit_histograms`` False: without the bit-pattern counts, which only they do not read.
    """
    warm_up_in_background(methods, histograms=workers == 1)
    if workers > 1:
        from .workers import collect_in_processes  # multiprocessing loads only when used

        return collect_in_processes(loader, runner, meta, workers, max_memory, first_samples, trt_histograms,
                                    bit_histograms)
    batches = None
    if not isinstance(runner, ActivationRunner):
        batches = iter(loader)  # starts decoding the first batch in the background
        runner = runner()
    return collect_statistics(
        loader, runner, meta, max_memory=max_memory, batches=batches, first_samples=first_samples,
        trt_histograms=trt_histograms, bit_histograms=bit_histograms,
    )
