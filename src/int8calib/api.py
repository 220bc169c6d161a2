"""The Python API behind ``int8calib calibrate``: one call from model and data to ranges."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:  # the model path imports these when it runs: --from-histograms needs none of them
    from .calibrator import Calibrator
    from .preprocess import Preprocess

from . import __version__
from .errors import Int8CalibError
from .methods import available, compute_all, get as get_method
from .result import CalibrationResult
from .stats import load as load_statistics, save as save_statistics
from .util.log import logger
from .writers.cache import DEFAULT_TRT_VERSION, write_cache
from .writers.ranges import write_ranges


ALL = "all"  # --method all: every method from one pass


def method_path(path: "str | Path", method: str) -> Path:
    """calibration.cache -> calibration.entropy2.cache: one output per method under --method all."""
    path = Path(path)
    return path.with_name(f"{path.stem}.{method}{path.suffix}")


def _statistics_meta(model, calibrator: "Calibrator") -> dict:
    """What produced the statistics, so a later --from-histograms run needs neither model nor data."""
    from .runner.model import model_fingerprint
    from .sources import data_fingerprint

    pre = calibrator.loader.preprocess
    return {
        "tool": f"int8calib {__version__}",
        "model": str(model),
        "model_sha256": model_fingerprint(model),
        "preprocess": pre.to_dict() if pre is not None else None,
        "data_sha256": data_fingerprint(calibrator.loader.samples),
        # Sorted: order does not change the statistics, so it does not change the file either.
        "data": sorted(str(s.path) + (f"[{s.index}]" if s.index is not None else "") for s in calibrator.loader.samples),
    }


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
    **method_params,
) -> CalibrationResult:
    """Calibrate ``model`` on ``data`` and write the requested outputs.

    With ``from_histograms`` the statistics come from a file written earlier with
    ``histograms=`` and neither model nor data is needed. An existing ``cache`` that
    is valid for the method is reused without reading data, as TensorRT does.

    ``method="all"`` computes every method from the same statistics: the result's
    ``by_method`` holds each one's ranges, and ``cache`` / ``ranges`` are written once
    per method with the method in the name (calibration.entropy2.cache, ...).
    """
    names = available() if method == ALL else [method]
    for name in names:
        get_method(name)  # fail early on an unknown name
    for output in (cache, ranges, histograms):
        if output is not None and not Path(output).resolve().parent.is_dir():
            raise Int8CalibError(f"{output}: the folder to write it in does not exist")
    start = time.perf_counter()
    if from_histograms is not None:
        stats = load_statistics(from_histograms)
        result = CalibrationResult({}, method, "", stats, samples=int(stats.meta.get("samples", 0)))
    else:
        if model is None or data is None:
            raise Int8CalibError("calibrate needs a model and --data (or --from-histograms)")
        from .calibrator import Calibrator, collect_statistics, run_calibrator
        from .runner import ActivationRunner

        runner = ActivationRunner(model, providers)
        reuse_cache = histograms is None and method != ALL
        calibrator = Calibrator(
            data, runner.inputs, preprocess, batch_size,
            cache_file=cache if reuse_cache else None,
            method=names[0], shuffle=shuffle, skip_bad_images=skip_bad_images,
        )
        meta = _statistics_meta(model, calibrator)
        if method == ALL:
            stats = collect_statistics(calibrator, runner, meta)
            result = CalibrationResult({}, method, "", stats, samples=int(stats.meta.get("samples", 0)))
        else:
            result = run_calibrator(calibrator, runner, trt_version, meta, **method_params)
        result.skipped = list(calibrator.skipped)
        if calibrator.skipped:
            logger.warning("skipped %d unreadable sample(s)", len(calibrator.skipped))
        if histograms is not None:
            save_statistics(result.statistics, histograms)
    if result.from_cache or method != ALL and from_histograms is None:
        result.by_method = {method: result.amax}  # run_calibrator read the cache or searched already
    else:
        result.by_method, result.search_seconds = compute_all(result.statistics, names, **method_params)
        if method != ALL:
            result.amax, result.algorithm = result.by_method[method], get_method(method).algorithm
    result.seconds = time.perf_counter() - start
    for name, amax in result.by_method.items():
        if cache is not None and not result.from_cache:
            path = method_path(cache, name) if method == ALL else cache
            write_cache(path, amax, get_method(name).algorithm, trt_version)
        if ranges is not None:
            write_ranges(method_path(ranges, name) if method == ALL else ranges, amax)
    return result
