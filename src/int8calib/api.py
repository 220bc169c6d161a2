"""The Python API behind ``int8calib calibrate``: one call from model and data to ranges."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .calibrator import CalibrationResult, Calibrator, run_calibrator
from .errors import Int8CalibError
from .methods import compute_ranges, get as get_method
from .preprocess import Preprocess
from .runner import ActivationRunner
from .runner.model import load_model, model_inputs
from .stats import load as load_statistics, save as save_statistics
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
        inputs = model_inputs(load_model(model, load_external_data=False))
        if not inputs:
            raise Int8CalibError(f"{model}: the model has no inputs to feed calibration data to")
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
        result = run_calibrator(calibrator, lambda: ActivationRunner(model, providers), trt_version, meta)
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
