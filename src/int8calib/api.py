"""The Python API behind ``int8calib calibrate``: one call from model and data to ranges."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from .calibrator import CalibrationResult, Calibrator, run_calibrator
from .errors import Int8CalibError
from .methods import compute_ranges, get as get_method
from .preprocess import Preprocess
from .runner import ActivationRunner, RunnerSpec
from .runner.model import load_model, model_inputs
from .stats import Statistics, load as load_statistics, save as save_statistics
from .util.log import logger
from .writers.cache import DEFAULT_TRT_VERSION, warn_zero_tensors, write_cache
from .writers.provenance import provenance_dict
from .writers.ranges import write_ranges

# The statistics file records what the statistics depend on; the method comes later.
_STATISTICS_FIELDS = ("tool", "model_sha256", "preprocess", "data_sha256")


def calibrate(
    model: "str | Path | None" = None,
    data=None,
    preprocess: "str | Path | dict | Preprocess | None" = None,
    method: str = "entropy2",
    batch_size: int = 32,
    cache: "str | Path | None" = None,
    ranges: "str | Path | None" = None,
    histograms: "str | Path | None" = None,
    from_histograms: "str | Path | None" = None,
    trt_version: int = DEFAULT_TRT_VERSION,
    providers: Sequence[str] | None = None,
    shuffle: int | None = None,
    skip_bad_images: bool = False,
    report: "str | Path | None" = None,
    reuse_cache: str = "auto",
    tensors: Sequence[str] | None = None,
    max_memory: "int | str | None" = None,
    workers: int = 1,
    **method_params,
) -> CalibrationResult:
    """Calibrate ``model`` on ``data`` and write the requested outputs.

    With ``from_histograms`` the statistics come from a file written earlier with
    ``histograms=`` and neither model nor data is needed. An existing ``cache`` whose
    provenance sidecar matches model, method, preprocessing and data is reused without
    reading data, as TensorRT does, unless ``histograms`` or ``report`` (an HTML
    file, see :mod:`int8calib.report`) needs the statistics; ``reuse_cache`` is
    ``auto``, ``strict`` (a stale cache is an error) or ``never``. Every file is written atomically with a sidecar
    ``<file>.json`` recording what produced it (see docs/trust.md).

    ``tensors`` limits the statistics to those tensors (default: every tensor a TensorRT
    cache needs); ``max_memory`` caps the activations one ONNX Runtime run may hold
    (bytes or '1.5G'); ``workers`` collects in that many processes. None of them changes
    the statistics of a tensor (see docs/performance.md).
    """
    info = get_method(method)
    if from_histograms is not None:
        stats = load_statistics(from_histograms)
        amax = compute_ranges(method, stats, **method_params)
        warn_zero_tensors(amax)
        samples = int(stats.meta.get("samples", 0))
        result = CalibrationResult(amax, method, info.algorithm, stats, samples=samples)
        record = provenance_dict(
            stats.meta.get("model_sha256"), method, {**info.params, **method_params}, stats.meta.get("preprocess"),
            stats.meta.get("data_sha256"), info.algorithm,
        )
        if cache is not None:
            write_cache(cache, amax, info.algorithm, trt_version, record)
    else:
        if model is None or data is None:
            raise Int8CalibError("calibrate needs a model and --data (or --from-histograms)")
        inputs = _inputs(model)
        calibrator = Calibrator(
            data, inputs, preprocess, batch_size, cache_file=cache, method=method, shuffle=shuffle,
            skip_bad_images=skip_bad_images, reuse_cache=reuse_cache, model=model, method_params=method_params,
        )
        if histograms is not None or report is not None:
            # Saving statistics needs a real run, so the cache is recomputed; strict still refuses a stale one.
            if reuse_cache == "strict":
                calibrator.read_calibration_cache()
            calibrator.reuse_cache = "never"
        record = calibrator.provenance()
        meta = {k: record[k] for k in _STATISTICS_FIELDS} | {"model": str(model)}
        result = run_calibrator(
            calibrator, _runner_spec(model, providers, tensors, workers), trt_version, meta,
            max_memory=max_memory, workers=workers,
        )
        if calibrator.skipped:
            logger.warning("skipped %d unreadable sample(s); first: %s", len(calibrator.skipped), calibrator.skipped[0])
        if histograms is not None:
            save_statistics(result.statistics, histograms)
    if ranges is not None:
        write_ranges(ranges, result.amax, record)
    if report is not None:
        from .report import method_ranges, write_report

        stats = result.statistics
        write_report(report, stats, method_ranges(stats, method, result.amax), method)
    return result


def _inputs(model) -> list:
    inputs = model_inputs(load_model(model, load_external_data=False))
    if not inputs:
        raise Int8CalibError(f"{model}: the model has no inputs to feed calibration data to")
    return inputs


def _runner_spec(model, providers, tensors, workers: int) -> "RunnerSpec | Callable[[], ActivationRunner]":
    """How to build the runner, called only if data must be read; worker processes get a RunnerSpec."""
    if workers < 1:
        raise Int8CalibError(f"--workers must be >= 1, got {workers}")
    if workers == 1:
        return lambda: ActivationRunner(model, providers, tensors)
    return RunnerSpec(str(model), tuple(providers) if providers else None, tuple(tensors) if tensors else None)


def collect(
    model: "str | Path",
    data,
    preprocess: "str | Path | dict | Preprocess | None" = None,
    output: "str | Path | None" = None,
    shard: "str | tuple[int, int] | None" = None,
    batch_size: int = 32,
    providers: Sequence[str] | None = None,
    shuffle: int | None = None,
    skip_bad_images: bool = False,
    tensors: Sequence[str] | None = None,
    max_memory: "int | str | None" = None,
    workers: int = 1,
) -> Statistics:
    """Collect the statistics of ``data`` (or of shard K/N of it) and save them to ``output``.

    Shards of one data set merge exactly (``int8calib merge``): the metadata holds the
    fingerprint of the whole data set and the shard, so a merge can check that the parts
    fit, and the merged file equals one run over all the data.
    """
    from .batching import BatchLoader, parse_shard, shard as take_shard
    from .calibrator import collect_statistics
    from .workers import collect_in_processes

    spec = _runner_spec(model, providers, tensors, workers)
    calibrator = Calibrator(
        data, _inputs(model), preprocess, batch_size, shuffle=shuffle, skip_bad_images=skip_bad_images, model=model,
    )
    record = calibrator.provenance()  # fingerprints all the data, before taking a shard
    meta = {k: record[k] for k in _STATISTICS_FIELDS} | {"model": str(model)}
    if shard is not None:
        if not isinstance(calibrator.loader, BatchLoader):
            raise Int8CalibError("--shard needs file data (a list, folder, glob or tensor file)")
        k, n = parse_shard(shard) if isinstance(shard, str) else shard
        part = take_shard(calibrator.loader.samples, k, n)
        if not part:
            raise Int8CalibError(f"shard {k}/{n} is empty: only {len(calibrator.loader.samples)} samples")
        calibrator.loader.samples = part
        meta["shard"] = [k, n]
    if workers > 1:
        stats = collect_in_processes(calibrator, spec, meta, workers, max_memory)
    else:
        stats = collect_statistics(calibrator, spec(), meta, max_memory=max_memory)
    if stats.meta.get("samples", 0) == 0:
        raise Int8CalibError("no calibration sample could be loaded")
    if calibrator.skipped:
        logger.warning("skipped %d unreadable sample(s); first: %s", len(calibrator.skipped), calibrator.skipped[0])
    if output is not None:
        save_statistics(stats, output)
    return stats
