"""The Python API behind ``int8calib calibrate``: one call from model and data to ranges."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from . import __version__
from .calibrator import CalibrationResult, Calibrator, run_calibrator
from .errors import Int8CalibError
from .methods import compute_ranges, get as get_method
from .preprocess import Preprocess
from .runner import ActivationRunner, RunnerSpec
from .runner.model import load_model, model_fingerprint, model_inputs
from .sources import data_fingerprint
from .stats import Statistics, load as load_statistics, save as save_statistics
from .util.log import logger
from .writers.cache import DEFAULT_TRT_VERSION, write_cache
from .writers.ranges import write_ranges


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
    tensors: Sequence[str] | None = None,
    max_memory: "int | str | None" = None,
    workers: int = 1,
    **method_params,
) -> CalibrationResult:
    """Calibrate ``model`` on ``data`` and write the requested outputs.

    With ``from_histograms`` the statistics come from a file written earlier with
    ``histograms=`` (or ``int8calib collect`` / ``merge``) and neither model nor data is
    needed. An existing ``cache`` that is valid for the method is reused without reading
    data, as TensorRT does.

    ``tensors`` limits the statistics to those tensors (default: every tensor a TensorRT
    cache needs); ``max_memory`` caps the activations one ONNX Runtime run may hold
    (bytes or '1.5G'); ``workers`` collects in that many processes. None of them changes
    the statistics of a tensor.
    """
    algorithm = get_method(method).algorithm
    if from_histograms is not None:
        stats = load_statistics(from_histograms)
        amax = compute_ranges(method, stats, **method_params)
        result = CalibrationResult(amax, method, algorithm, stats, samples=int(stats.meta.get("samples", 0)))
    else:
        if model is None or data is None:
            raise Int8CalibError("calibrate needs a model and --data (or --from-histograms)")
        runner = _runner(model, providers, tensors, workers)
        calibrator = Calibrator(
            data, runner.inputs if workers <= 1 else _inputs(model), preprocess, batch_size,
            cache_file=None if histograms is not None else cache,
            method=method, shuffle=shuffle, skip_bad_images=skip_bad_images,
        )
        meta = _meta(model, calibrator)
        result = run_calibrator(
            calibrator, runner, trt_version, meta, max_memory=max_memory, workers=workers, **method_params
        )
        if calibrator.skipped:
            logger.warning("skipped %d unreadable sample(s)", len(calibrator.skipped))
        if histograms is not None:
            save_statistics(result.statistics, histograms)
    if cache is not None and not result.from_cache:
        write_cache(cache, result.amax, algorithm, trt_version)
    if ranges is not None:
        write_ranges(ranges, result.amax)
    return result


def _runner(model, providers, tensors, workers: int) -> "ActivationRunner | RunnerSpec":
    """This process's runner, or only its recipe when worker processes will build their own."""
    if workers < 1:
        raise Int8CalibError(f"--workers must be >= 1, got {workers}")
    if workers == 1:
        return ActivationRunner(model, providers, tensors)
    load_model(model, load_external_data=False)  # a missing or unreadable file fails here, in one line
    return RunnerSpec(str(model), tuple(providers) if providers else None, tuple(tensors) if tensors else None)


def _inputs(model) -> list:
    return model_inputs(load_model(model, load_external_data=False))


def _meta(model, calibrator: Calibrator) -> dict:
    """What produced a set of statistics: merging and reuse check these."""
    pre = calibrator.loader.preprocess
    return {
        "tool": f"int8calib {__version__}",
        "model": str(model),
        "model_sha256": model_fingerprint(model),
        "preprocess": pre.to_dict() if pre is not None else None,
        "data_sha256": data_fingerprint(calibrator.loader.samples),
    }


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

    Shards of one data set merge exactly (:func:`merge_files`); the metadata names the
    whole data set's fingerprint and the shard, so a merge can check that the parts fit.
    """
    from .batching import parse_shard, shard as take_shard
    from .calibrator import collect_statistics
    from .workers import collect_in_processes

    runner = _runner(model, providers, tensors, workers)
    calibrator = Calibrator(
        data, runner.inputs if workers <= 1 else _inputs(model), preprocess, batch_size,
        shuffle=shuffle, skip_bad_images=skip_bad_images,
    )
    meta = _meta(model, calibrator)  # fingerprint of all the data, so that merged shards equal one run
    if shard is not None:
        k, n = parse_shard(shard) if isinstance(shard, str) else shard
        part = take_shard(calibrator.loader.samples, k, n)
        if not part:
            raise Int8CalibError(f"shard {k}/{n} is empty: only {len(calibrator.loader.samples)} samples")
        calibrator.loader.samples = part
        meta["shard"] = [k, n]
    if workers > 1:
        stats = collect_in_processes(calibrator, runner, meta, workers, max_memory)
    else:
        stats = collect_statistics(calibrator, runner, meta, max_memory=max_memory)
    if stats.meta.get("samples", 0) == 0:
        raise Int8CalibError("no calibration sample could be loaded")
    if calibrator.skipped:
        logger.warning("skipped %d unreadable sample(s)", len(calibrator.skipped))
    if output is not None:
        save_statistics(stats, output)
    return stats
