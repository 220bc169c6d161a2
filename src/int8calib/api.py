"""The Python API behind ``int8calib calibrate``: one call from model and data to ranges."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from . import __version__
from .calibrator import CalibrationResult, Calibrator, run_calibrator
from .errors import Int8CalibError
from .methods import compute_ranges, get as get_method
from .preprocess import Preprocess
from .runner import ActivationRunner
from .runner.model import model_fingerprint
from .stats import load as load_statistics, save as save_statistics
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
    report: "str | Path | None" = None,
    **method_params,
) -> CalibrationResult:
    """Calibrate ``model`` on ``data`` and write the requested outputs.

    With ``from_histograms`` the statistics come from a file written earlier with
    ``histograms=`` and neither model nor data is needed. An existing ``cache`` that
    is valid for the method is reused without reading data, as TensorRT does, unless
    ``histograms`` or ``report`` (an HTML file, see :mod:`int8calib.report`) asks for
    the statistics.
    """
    algorithm = get_method(method).algorithm
    if from_histograms is not None:
        stats = load_statistics(from_histograms)
        amax = compute_ranges(method, stats, **method_params)
        result = CalibrationResult(amax, method, algorithm, stats, samples=int(stats.meta.get("samples", 0)))
    else:
        if model is None or data is None:
            raise Int8CalibError("calibrate needs a model and --data (or --from-histograms)")
        runner = ActivationRunner(model, providers)
        calibrator = Calibrator(
            data, runner.inputs, preprocess, batch_size,
            cache_file=None if histograms is not None or report is not None else cache,
            method=method, shuffle=shuffle, skip_bad_images=skip_bad_images,
        )
        pre = calibrator.loader.preprocess
        meta = {
            "tool": f"int8calib {__version__}",
            "model": str(model),
            "model_sha256": model_fingerprint(model),
            "preprocess": pre.to_dict() if pre is not None else None,
            "data_sha256": calibrator.loader.fingerprint(),
        }
        result = run_calibrator(calibrator, runner, trt_version, meta, **method_params)
        if calibrator.skipped:
            logger.warning("skipped %d unreadable sample(s)", len(calibrator.skipped))
        if histograms is not None:
            save_statistics(result.statistics, histograms)
    if cache is not None and not result.from_cache:
        write_cache(cache, result.amax, algorithm, trt_version)
    if ranges is not None:
        write_ranges(ranges, result.amax)
    if report is not None:
        from .report import method_ranges, write_report

        stats = result.statistics
        write_report(report, stats, method_ranges(stats, method, result.amax), method)
    return result
