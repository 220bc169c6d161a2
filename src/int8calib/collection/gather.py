"""The stage's entry point: warm up, then collect in this process or in worker processes."""

from __future__ import annotations

from pathlib import Path
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

    When ``meta`` names the model file, the statistics also hold its constants that TensorRT
    calibrates (:mod:`int8calib.stats.constants`), computed once from the weights.
    """
    warm_up_in_background(methods, histograms=workers == 1)
    if workers > 1:
        from .workers import collect_in_processes  # multiprocessing loads only when used

        stats = collect_in_processes(loader, runner, meta, workers, max_memory, first_samples, trt_histograms,
                                     bit_histograms)
    else:
        batches = None
        if not isinstance(runner, ActivationRunner):
            batches = iter(loader)  # starts decoding the first batch in the background
            runner = runner()
        stats = collect_statistics(
            loader, runner, meta, max_memory=max_memory, batches=batches, first_samples=first_samples,
            trt_histograms=trt_histograms, bit_histograms=bit_histograms,
        )
    model = (meta or {}).get("model")
    return with_constants(stats, model, trt_histograms) if model and Path(model).is_file() else stats


def with_constants(stats: Statistics, model: "str | Path", trt_histograms: bool = True) -> Statistics:
    """``stats`` plus the statistics of the model file's constants TensorRT calibrates (those it lacks)."""
    from ..runner.model import load_model, tensor_array
    from ..stats.constants import CONSTANTS_META, constant_statistics

    constants = constant_statistics(load_model(model, load_external_data=False), tensor_array, trt_histograms)
    added = {name: h for name, h in constants.tensors.items() if name not in stats.tensors}
    meta = stats.meta | {CONSTANTS_META: list(dict.fromkeys([*stats.meta.get(CONSTANTS_META, ()), *added]))}
    return Statistics(stats.tensors | added, meta)
