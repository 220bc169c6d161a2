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
from .sources import data_fingerprint
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
    qdq: "str | Path | None" = None,
    precision: str = "int8",
    exclude_nodes: str | None = None,
    exclude_op_types: Sequence[str] = (),
    accuracy_budget: float | None = None,
    report: "str | Path | None" = None,
    **method_params,
) -> CalibrationResult:
    """Calibrate ``model`` on ``data`` and write the requested outputs.

    With ``from_histograms`` the statistics come from a file written earlier with
    ``histograms=`` and neither model nor data is needed. An existing ``cache`` that
    is valid for the method is reused without reading data, as TensorRT does, unless
    ``histograms`` or ``report`` (an HTML file, see :mod:`int8calib.report`) asks for
    the statistics.

    ``qdq`` writes the model for ``precision`` (a Q/DQ model for int8); ``accuracy_budget``
    (percentage points of top-1 agreement) holds out 1 sample in 5 of ``data`` and keeps
    the most sensitive layers in float until the loss on them is within the budget.
    """
    holdout = None
    algorithm = get_method(method).algorithm
    if from_histograms is not None:
        stats = load_statistics(from_histograms)
        amax = compute_ranges(method, stats, **method_params)
        result = CalibrationResult(amax, method, algorithm, stats, samples=int(stats.meta.get("samples", 0)))
    else:
        if model is None or data is None:
            raise Int8CalibError("calibrate needs a model and --data (or --from-histograms)")
        runner = ActivationRunner(model, providers)
        if accuracy_budget is not None:
            from .evaluate.mixed import split_holdout
            from .sources import resolve

            data, holdout = split_holdout(resolve(data, {i.name: len(i.shape) for i in runner.inputs}, shuffle))
            shuffle = None
            logger.info("holding out %d of %d samples to measure accuracy; ranges use the rest", len(holdout), len(data) + len(holdout))
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
            "data_sha256": data_fingerprint(calibrator.loader.samples),
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
    if qdq is not None or accuracy_budget is not None:
        source = model if model is not None else result.statistics.meta.get("model") if result.statistics else None
        if source is None or not Path(source).is_file():
            raise Int8CalibError(f"--qdq needs the model: give MODEL (the statistics name {source!r}, not found)")
        pre = preprocess if preprocess is not None or result.statistics is None else result.statistics.meta.get("preprocess")
        if accuracy_budget is not None and holdout is None:
            if data is None:
                raise Int8CalibError("--accuracy-budget with --from-histograms needs --data: samples the statistics did not see")
            holdout = data
        result.quantization = export_model(
            source, result.amax, qdq, precision, exclude_nodes, exclude_op_types, accuracy_budget, holdout, pre,
            batch_size, providers,
        )
    return result


def export_model(
    model: "str | Path",
    amax: dict[str, float],
    path: "str | Path | None",
    precision: str = "int8",
    exclude_nodes: str | None = None,
    exclude_op_types: Sequence[str] = (),
    accuracy_budget: float | None = None,
    holdout=None,
    preprocess=None,
    batch_size: int = 32,
    providers: Sequence[str] | None = None,
):
    """Write ``model`` at ``precision`` to ``path`` (int8: Q/DQ); with a budget, choose the layers kept in float.

    Returns the :class:`~int8calib.evaluate.mixed.MixedPrecision` decision, or None without a budget.
    """
    from .runner import load_model
    from .writers.qdq import insert_qdq, write_model

    proto = load_model(model)
    mixed = None
    if accuracy_budget is not None:
        from .batching import BatchLoader
        from .evaluate.mixed import choose_float_layers
        from .runner import model_inputs
        from .sources import resolve

        if precision != "int8":
            raise Int8CalibError("--accuracy-budget applies to --precision int8")
        inputs = model_inputs(proto)
        samples = holdout if _is_samples(holdout) else resolve(holdout, {i.name: len(i.shape) for i in inputs})
        loader = BatchLoader(samples, inputs, Preprocess.load(preprocess) if preprocess is not None else None, batch_size)
        mixed = choose_float_layers(proto, amax, loader, accuracy_budget, exclude_nodes, exclude_op_types, providers)
        if mixed.kept:
            logger.info("trtexec --precisionConstraints=obey --layerPrecisions=%s", mixed.layer_precisions)
    if path is not None:
        keep = mixed.kept if mixed is not None else ()
        write_model(path, insert_qdq(proto, amax, exclude_nodes, exclude_op_types, precision, keep))
        logger.info("wrote the %s model %s", precision, path)
    return mixed


def _is_samples(data) -> bool:
    from .sources import Sample

    return isinstance(data, list) and bool(data) and all(isinstance(s, Sample) for s in data)
