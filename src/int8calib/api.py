"""The Python API behind ``int8calib calibrate``: one call from model and data to ranges."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from .auto import (  # noqa: F401 (AUTO_CANDIDATES, auto_candidate, default_method: API)
    AUTO, AUTO_CANDIDATES, CROSS_VALIDATE_BELOW, FOLDS, auto_candidate, check_auto, choose_automatically,
    cross_validate, default_method, held_out_loader, model_inputs_of,
)
from .errors import Int8CalibError
from .methods import available, compute_all, get as get_method
from .result import CalibrationResult
from .stats import Statistics, load as load_statistics, save as save_statistics
from .util.log import logger
from .writers.cache import DEFAULT_TRT_VERSION, warn_zero_tensors, write_cache
from .writers.precision import PrecisionOptions, observed_ranges, unranged_tensors
from .writers.provenance import provenance_dict
from .writers.ranges import write_ranges

if TYPE_CHECKING:  # the model path imports these when it runs: --from-histograms needs none of them
    from .preprocess import Preprocess
    from .runner import ActivationRunner, RunnerSpec

ALL = "all"  # --method all: every method from one pass

# The statistics file records what the statistics depend on; the method comes later.
_STATISTICS_FIELDS = ("tool", "model_sha256", "preprocess", "data_sha256")


def method_path(path: "str | Path", method: str) -> Path:
    """calibration.cache -> calibration.entropy2.cache: one output per method under --method all."""
    path = Path(path)
    return path.with_name(f"{path.stem}.{method}{path.suffix}")


def _record(base: dict, method: str, params: dict) -> dict:
    """The provenance of ``method``'s outputs from statistics described by ``base``."""
    m = get_method(method)
    own = {k: v for k, v in params.items() if k in m.params}
    return provenance_dict(
        base.get("model_sha256"), method, {**m.params, **own}, base.get("preprocess"), base.get("data_sha256"),
        m.algorithm, batching=base.get("batching") if m.ordered else None,
    )


def _result_record(base: dict, result: CalibrationResult, method: str, params: dict) -> dict:
    """The provenance of one output of ``result``: auto's winner with its table (``chosen_by``), or ``method``."""
    if result.auto is None:
        return _record(base, method, params)
    chosen, chosen_params = auto_candidate(result.chosen_method)
    return _record(base, chosen, chosen_params) | {"chosen_by": result.auto.to_dict()}


def calibrate(
    model: "str | Path | None" = None,
    data=None,
    preprocess: "str | Path | dict | Preprocess | None" = None,
    method: str | None = None,
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
    min_sqnr: float | None = None,
    output: str | None = None,
    batch_axes: "dict[str, int | None] | None" = None,
    report: "str | Path | None" = None,
    reuse_cache: str = "auto",
    tensors: Sequence[str] | None = None,
    max_memory: "int | str | None" = None,
    workers: int = 1,
    bias_correction: bool | None = None,
    high_precision: str = "fp16",
    fp32_nodes: str | None = None,
    fp32_op_types: Sequence[str] = (),
    low_precision_nodes: str | None = None,
    low_precision_op_types: Sequence[str] = (),
    low_precision_io: bool = False,
    weight_rounding: bool | None = None,
    equalize: bool | None = None,
    _equalized: dict | None = None,  # (internal: the call on the equalized model records what was done)
    **method_params,
) -> CalibrationResult:
    """Calibrate ``model`` on ``data`` and write the requested outputs.

    With ``from_histograms`` the statistics come from a file written earlier with
    ``histograms=`` and neither model nor data is needed. An existing ``cache`` whose
    provenance sidecar matches model, method, preprocessing and data is reused without
    reading data, as TensorRT does, unless ``histograms`` or ``report`` (an HTML
    file, see :mod:`int8calib.report`) needs the statistics; ``reuse_cache`` is
    ``auto``, ``strict`` (a stale cache is an error) or ``never``. Every file is written
    atomically with a sidecar ``<file>.json`` recording what produced it (docs/trust.md).

    ``qdq`` writes the model for ``precision`` (a Q/DQ model for int8); ``accuracy_budget``
    (percentage points of top-1 agreement) holds out 1 sample in 5 of ``data`` and keeps
    the most sensitive layers in float until the loss on them is within the budget;
    ``min_sqnr`` (dB) does the same until the held-out SQNR of ``output`` (default: the first
    float output) reaches it. Budget, output and precision are checked against the model
    before any data is read.

    ``method="all"`` computes every method from the same statistics (never reusing a
    cache): ``result.by_method`` holds each one's ranges and ``cache`` / ``ranges`` are
    written once per method, named by :func:`method_path` (calibration.entropy2.cache, ...).

    ``tensors`` limits the statistics to those tensors (default: every tensor a TensorRT
    cache needs, or only the Q/DQ model's activation inputs when that model is the only output); ``max_memory`` caps the activations one ONNX Runtime run may hold
    (bytes or '1.5G'); ``workers`` collects in that many processes. None of them changes
    the statistics of a tensor (docs/performance.md). ``batch_axes`` ({input: axis or None})
    declares inputs' batch axes where the model's shapes do not tell (docs/inputs.md).

    ``bias_correction`` (default: on when an int8 ``qdq`` model is written) corrects the
    biases of the Q/DQ model for the mean output shift its int8 weights cause, measured on
    up to ``passes.BIAS_SAMPLES`` calibration samples (:mod:`int8calib.passes.bias_correction`);
    ``--method auto`` and the accuracy budget then measure corrected models.

    ``high_precision`` (fp16, the default; bf16; fp32) types every float computation of the int8
    Q/DQ model outside Q/DQ, for strongly typed TensorRT (:mod:`int8calib.writers.precision`): FP32
    is kept only where the ranges calibration observed (or ``fp32_nodes`` / ``fp32_op_types``) say
    so; ``low_precision_nodes`` / ``low_precision_op_types`` force nodes to the low type;
    ``low_precision_io`` types graph inputs and outputs too (default: they stay float32). What is
    scored (auto, the budget) is that model.

    ``weight_rounding`` (default: ``passes.weight_rounding.DEFAULT``, with bias correction) chooses
    the Q/DQ model's int8 weights for each layer's output error on the same samples
    (:mod:`int8calib.passes.weight_rounding`), before their shifts are measured.

    ``equalize`` (default: ``passes.equalization.DEFAULT`` where an int8 Q/DQ model is the only output)
    rescales the float model's channels where per-tensor activation ranges fit them poorly
    (:mod:`int8calib.passes.equalization`, ranges per channel on up to ``EQUALIZE_SAMPLES`` samples) and
    calibrates that model: the Q/DQ model holds its weights. Caches, ranges and statistics name the
    original model's tensors, so they are refused with it.
    """
    arguments = dict(locals())  # (--equalize: the call again, on the equalized model)
    if method is None:
        method = default_method(model, data, from_histograms, precision, output, method_params, batch_axes)
    auto = method == AUTO
    names = available() if method == ALL else sorted({m for _, m, _ in AUTO_CANDIDATES}) if auto else [method]
    for name in names:
        get_method(name)  # fail early on an unknown name
    budgeted = accuracy_budget is not None or min_sqnr is not None
    if auto:
        check_auto(model, data, from_histograms, precision, output, method_params)
    if method == ALL and (qdq is not None or budgeted):
        raise Int8CalibError("--qdq, --accuracy-budget and --min-sqnr need one method; --method all writes caches and ranges only")
    if budgeted and precision != "int8":
        raise Int8CalibError(f"--accuracy-budget / --min-sqnr apply to --precision int8, not {precision}")
    correct = _check_bias_correction(bias_correction, qdq, precision, budgeted, from_histograms, data)
    lowering = PrecisionOptions(high_precision, fp32_nodes, tuple(fp32_op_types), low_precision_nodes,
                              tuple(low_precision_op_types), not low_precision_io)
    rounding = _check_weight_rounding(weight_rounding, correct)
    for written in (cache, ranges, histograms, report, qdq):
        if written is not None and not Path(written).resolve().parent.is_dir():
            raise Int8CalibError(f"{written}: the folder to write it in does not exist")
    if _check_equalize(equalize, qdq, precision, budgeted, (cache, ranges, histograms, report), from_histograms, model, data):
        import tempfile

        if budgeted or (output is not None and not auto):
            _check_budget(model, output, accuracy_budget, min_sqnr)  # before any data is read
        with tempfile.TemporaryDirectory(prefix="int8calib-equalized-") as folder:
            equalized, done = _equalized_model(model, data, preprocess, batch_size, providers, batch_axes, shuffle,
                                               skip_bad_images, Path(folder))
            params = arguments.pop("method_params")
            return calibrate(**(arguments | {"model": equalized, "equalize": False, "_equalized": done}), **params)
    start = time.perf_counter()
    holdout, folds, shifts = None, 0, None
    # Only a Q/DQ model wanted: statistics for its activation inputs are enough (and faster to collect).
    qdq_only = (qdq is not None or budgeted) and not (cache or ranges or histograms or report)
    if from_histograms is not None:
        stats = load_statistics(from_histograms)
        result = CalibrationResult({}, method, "", stats, samples=int(stats.meta.get("samples", 0)))
        base = stats.meta
        if budgeted or (output is not None and not auto):
            _check_budget(model if model is not None else stats.meta.get("model"), output, accuracy_budget, min_sqnr)
    else:
        from .calibrator import Calibrator, run_calibrator
        from .collection import gather_statistics

        if model is None or data is None:
            raise Int8CalibError("calibrate needs a model and --data (or --from-histograms)")
        if budgeted or (output is not None and not auto):
            _check_budget(model, output, accuracy_budget, min_sqnr)
        if tensors is None and qdq_only:
            from .runner import load_model
            from .writers.qdq import activation_tensors

            tensors = activation_tensors(load_model(model, load_external_data=False))
        runner = _runner_spec(model, providers, tensors, workers)
        inputs = model_inputs_of(model, batch_axes)
        if budgeted or auto:
            from .evaluate.mixed import HOLDOUT_EVERY, split_holdout
            from .sources import FeedDictSource, resolve, split_rows

            if isinstance(data, FeedDictSource):
                data, holdout = split_rows(data, {i.name: i.batch_axis for i in inputs}, HOLDOUT_EVERY)
                logger.info("holding out 1 sample in %d to measure accuracy; ranges use the rest", HOLDOUT_EVERY)
            else:
                samples = resolve(data, {i.name: i.layout for i in inputs}, shuffle)
                if auto and not budgeted and len(samples) // HOLDOUT_EVERY < CROSS_VALIDATE_BELOW:
                    data, folds = samples, FOLDS
                    logger.info("%d samples: --method auto ranks its candidates by %d-fold cross-validation",
                                len(samples), FOLDS)
                else:
                    data, holdout = split_holdout(samples)
                    logger.info("holding out %d of %d samples to measure accuracy; ranges use the rest", len(holdout), len(data) + len(holdout))
            shuffle = None
        calibrator = Calibrator(
            data, inputs, preprocess, batch_size, cache_file=None if method in (ALL, AUTO) else cache,
            method="entropy2" if auto else names[0], shuffle=shuffle, skip_bad_images=skip_bad_images,
            reuse_cache=reuse_cache, model=model, method_params=None if method in (ALL, AUTO) else method_params,
        )
        if histograms is not None or report is not None:
            # Saving statistics needs a real run, so the cache is recomputed; strict still refuses a stale one.
            if reuse_cache == "strict":
                calibrator.read_calibration_cache()
            calibrator.reuse_cache = "never"
        base = calibrator.provenance()
        meta = _statistics_meta(model, calibrator, base)
        if folds:
            result = CalibrationResult({}, method, "")
            shifts = cross_validate(result, model, calibrator.loader, runner, meta, max_memory, providers, output,
                                    exclude_nodes, exclude_op_types, correct, lowering, rounding)
        elif method in (ALL, AUTO):
            # auto's candidates read no TensorRT histograms: kept only where the statistics are (--histograms, --report)
            trt = method == ALL or histograms is not None or report is not None
            result = CalibrationResult({}, method, "", gather_statistics(calibrator.loader, runner, meta, max_memory, workers, names,
                                                                         trt_histograms=trt))
            result.samples = int(result.statistics.meta.get("samples", 0))
        else:
            # TensorRT's histograms cost a second pass in the kernel: collected when entropy2 / entropy
            # need them now, or statistics are kept for later (--histograms, --report).
            keep = histograms is not None or report is not None or None
            result = run_calibrator(
                calibrator, runner, trt_version, meta, max_memory=max_memory, workers=workers, trt_histograms=keep
            )
            result.by_method = {method: result.amax}  # searched (and the cache written) already, or reused
        result.skipped = list(calibrator.skipped)
        if calibrator.skipped:
            logger.warning("skipped %d unreadable sample(s); first: %s", len(calibrator.skipped), calibrator.skipped[0])
        if histograms is not None:
            save_statistics(result.statistics, histograms)
    int8_model = (qdq is not None or budgeted) and precision == "int8"
    if int8_model and result.statistics is not None:
        lowering.ranges.update(observed_ranges(result.statistics))
    # auto with one held-out split takes the float pass (bias correction, weight rounding) from the calibration
    # samples as --method <its choice> does, so that its model is that one's (cross-validation and
    # --from-histograms measure on the samples auto ranks on)
    own_pass = not auto or (not folds and from_histograms is None)
    if int8_model and own_pass and (correct or lowering.lowered) and (from_histograms is None or data is not None):
        shifts = _float_pass(model if model is not None else result.statistics.meta.get("model"),
                             calibrator.loader if from_histograms is None else data,
                             preprocess if preprocess is not None else result.statistics.meta.get("preprocess"),
                             batch_size, providers, batch_axes, correct, lowering, rounding)
    if auto:
        if not folds:  # (cross-validation chose already, in the statistics pass)
            if holdout is None:  # --from-histograms: the statistics did not see --data
                holdout = data
            shifts = choose_automatically(result, model, holdout, preprocess, batch_size, providers, output, exclude_nodes,
                                          exclude_op_types, batch_axes, max_memory=max_memory, correct=correct,
                                          rounding=rounding, lowering=lowering,
                                          refit=None if from_histograms is not None or budgeted else runner,
                                          shifts=shifts)  # (None unless measured above)
        warn_zero_tensors(result.amax)
        if cache is not None:
            write_cache(cache, result.amax, result.algorithm, trt_version, _result_record(base, result, method, method_params),
                        result.constants)
    elif not result.by_method:
        result.by_method, result.search_seconds = compute_all(result.statistics, names, **method_params)
        for name, amax in result.by_method.items():
            warn_zero_tensors(amax)
            if cache is not None:
                write_cache(method_path(cache, name) if method == ALL else cache, amax,
                            get_method(name).algorithm, trt_version, _record(base, name, method_params), result.constants)
        if method != ALL:
            result.amax, result.algorithm = result.by_method[method], get_method(method).algorithm
    if ranges is not None and auto:
        write_ranges(ranges, result.amax, _result_record(base, result, method, method_params))
    elif ranges is not None:
        for name, amax in result.by_method.items():
            write_ranges(method_path(ranges, name) if method == ALL else ranges, amax, _record(base, name, method_params))
    if qdq is not None or budgeted:
        source = model if model is not None else result.statistics.meta.get("model") if result.statistics else None
        if source is None or not Path(source).is_file():
            raise Int8CalibError(f"--qdq needs the model: give MODEL (the statistics name {source!r}, not found)")
        pre = preprocess if preprocess is not None or result.statistics is None else result.statistics.meta.get("preprocess")
        if budgeted and holdout is None:
            if data is None:  # (auto has its held-out samples already)
                raise Int8CalibError("--accuracy-budget / --min-sqnr with --from-histograms need --data: samples the statistics did not see")
            holdout = data
        result.quantization = export_model(
            source, result.amax, qdq, precision, exclude_nodes, exclude_op_types, accuracy_budget, holdout, pre,
            batch_size, providers, min_sqnr, output, batch_axes, shifts,
            _result_record(base, result, method, method_params) | ({"equalization": _equalized} if _equalized else {}),
            lowering, result,
        )
    if report is not None:
        from .report import method_ranges, write_report

        stats = result.statistics
        chosen = "entropy2" if method == ALL else auto_candidate(result.chosen_method)[0] if auto else method
        write_report(report, stats, result.by_method if method == ALL else method_ranges(stats, method, result.amax), chosen,
                     auto=result.auto.to_dict() if auto else None,
                     precision=result.precision.to_dict() if result.precision is not None else None)
    result.seconds = time.perf_counter() - start
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
    min_sqnr: float | None = None,
    output: str | None = None,
    batch_axes: "dict[str, int | None] | None" = None,
    shifts=None,
    record: dict | None = None,
    lowering: "PrecisionOptions | None" = None,
    result: CalibrationResult | None = None,
):
    """Write ``model`` at ``precision`` to ``path`` (int8: Q/DQ, float computation typed by ``lowering``,
    default float16: :mod:`int8calib.writers.precision`); with a budget (``accuracy_budget``
    points of top-1 agreement or ``min_sqnr`` dB of ``output``'s SQNR), choose the layers kept in float.
    ``shifts`` (:class:`~int8calib.passes.BiasShifts`) corrects the Q/DQ model's biases; ``record``
    (provenance) goes into the model's metadata, with what bias correction did; ``result.precision``
    gets the written model's :class:`~int8calib.writers.precision.PrecisionSummary`.

    Returns the :class:`~int8calib.evaluate.mixed.MixedPrecision` decision, or None without a budget.
    """
    import onnx

    from .runner import load_model
    from .runner.model import uses_external_data
    from .writers.provenance import metadata_props
    from .writers.qdq import insert_qdq, write_model

    proto = load_model(model, load_external_data=False)  # weights mapped where they lie
    mixed = None
    if accuracy_budget is not None or min_sqnr is not None:
        from .evaluate.mixed import choose_float_layers
        from .evaluate.outputs import check_budget

        if precision != "int8":
            raise Int8CalibError(f"--accuracy-budget / --min-sqnr apply to --precision int8, not {precision}")
        check_budget(proto, output, accuracy_budget, min_sqnr)  # before the held-out data is read
        loader = held_out_loader(proto, holdout, preprocess, batch_size, batch_axes)
        mixed = choose_float_layers(
            proto, amax, loader, accuracy_budget, exclude_nodes, exclude_op_types, providers, min_sqnr, output, shifts,
            lowering,
        )
        if mixed.kept:
            logger.info("kept without Q/DQ (in the Q/DQ model: %s compute, nothing to pass TensorRT 10.1+ / 11); "
                        "for a TensorRT <= 10.0 implicit build from the cache: trtexec --int8 --fp16 "
                        "--precisionConstraints=obey --layerPrecisions=%s", lowering.high_precision.upper() if lowering else "FP16",
                        mixed.layer_precisions)
    if path is not None:
        keep = mixed.kept if mixed is not None else ()
        if precision == "int8":
            from .passes import quantized_model

            built = quantized_model(proto, amax, exclude_nodes, exclude_op_types, keep, shifts=shifts, precision=lowering)
            built.qdq.log()
            built.precision.log()
            written = built.model
            record = dict(record or {})
            if shifts is not None and shifts.shifts:
                record["bias_correction"] = {"layers": len(built.corrected), "samples": shifts.samples}
                record["weight_rounding"] = {"layers": len(shifts.rounded)} if shifts.rounded else None
                logger.info("bias correction: %d layer(s) corrected (largest shift %s)", len(built.corrected),
                            ", ".join(f"{n} {v:.3g}" for n, v in shifts.largest(1)) or "none")
            else:
                record["bias_correction"] = None
            record["precision"] = built.precision.to_dict()
            if result is not None:
                result.precision = built.precision
            onnx.helper.set_model_props(written, metadata_props(record))
        else:
            written = insert_qdq(proto, amax, precision=precision)
        write_model(path, written, external_data=uses_external_data(proto))
        logger.info("wrote the %s model %s", precision, path)
    return mixed


def _check_bias_correction(bias_correction, qdq, precision, budgeted, from_histograms, data) -> bool:
    """Whether to correct biases (default: when an int8 Q/DQ model is written and data can be read)."""
    int8_model = (qdq is not None or budgeted) and precision == "int8"
    if bias_correction and not int8_model:
        raise Int8CalibError("--bias-correction corrects the int8 Q/DQ model's biases: it needs --qdq (with --precision int8)")
    if bias_correction and from_histograms is not None and data is None:
        raise Int8CalibError("--bias-correction with --from-histograms needs --data: it runs the model on calibration samples")
    if bias_correction is None:
        bias_correction = qdq is not None and precision == "int8"
        if bias_correction and from_histograms is not None and data is None:
            logger.info("no bias correction: --from-histograms without --data has no samples to measure it on")
            return False
    return bool(bias_correction)


def _check_weight_rounding(weight_rounding, correct: bool) -> bool:
    """Whether to round weights for the layers' output error (it goes with bias correction, whose
    shifts must be those of the weights written)."""
    from .passes.weight_rounding import DEFAULT

    if weight_rounding and not correct:
        raise Int8CalibError("--weight-rounding writes its int8 weights with bias correction: it needs --qdq "
                             "(int8) and bias correction on")
    return bool(correct and (DEFAULT if weight_rounding is None else weight_rounding))


def _check_equalize(equalize, qdq, precision, budgeted: bool, others, from_histograms, model, data) -> bool:
    """Whether to equalize the float model first (only where an int8 Q/DQ model is all that is written)."""
    from .passes.equalization import DEFAULT

    int8_model = (qdq is not None or budgeted) and precision == "int8"
    if equalize:
        if not int8_model:
            raise Int8CalibError("--equalize rescales the float model for the int8 Q/DQ model: it needs --qdq (with --precision int8)")
        if any(o is not None for o in others):
            raise Int8CalibError("--equalize: a calibration cache, ranges, statistics or a report would name the equalized "
                                 "model's tensors, which the original model does not have; write them without --equalize")
        if from_histograms is not None or model is None or data is None:
            raise Int8CalibError("--equalize needs MODEL and --data: the statistics must be collected on the equalized model")
        return True
    if equalize is None and DEFAULT and int8_model and all(o is None for o in others):
        return from_histograms is None and model is not None and data is not None
    return False


def _equalized_model(model, data, preprocess, batch_size: int, providers, batch_axes, shuffle, skip_bad_images: bool,
                     folder: Path) -> tuple[Path, dict | None]:
    """``model`` equalized (:func:`passes.equalization.equalize`, channel ranges on up to
    ``EQUALIZE_SAMPLES`` samples of ``data``, spread over it), written into ``folder``, and what the
    Q/DQ model's provenance records of it (the original model's hash: the provenance's own is the
    equalized one's); ``model`` itself and None where there is nothing to equalize."""
    from .batching import BatchLoader
    from .calibrator import Calibrator
    from .passes import spread
    from .passes.equalization import EQUALIZE_SAMPLES, equalize
    from .runner import load_model
    from .runner.model import model_fingerprint, uses_external_data
    from .writers.qdq import write_model

    proto = load_model(model, load_external_data=False)  # weights mapped where they lie
    loader = Calibrator(data, model_inputs_of(model, batch_axes), preprocess, batch_size, shuffle=shuffle,
                        skip_bad_images=skip_bad_images).loader
    if isinstance(loader, BatchLoader):  # files are often sorted by class: samples from all of them
        loader = BatchLoader(spread(loader.samples, EQUALIZE_SAMPLES), loader.inputs, loader.preprocess,
                             loader.batch_size, loader.skip_bad)
    done = equalize(proto, loader, providers, EQUALIZE_SAMPLES)
    if not done.tensors:
        return Path(model), None
    path = folder / Path(model).name
    write_model(path, done.model, external_data=uses_external_data(proto))
    return path, {"model_sha256": model_fingerprint(model), "tensors": len(done.tensors), "samples": done.samples}


def _float_pass(model, data, preprocess, batch_size: int, providers, batch_axes, correct: bool, lowering: "PrecisionOptions",
                rounding: bool = False):
    """One run of the float model on up to BIAS_SAMPLES samples of ``data`` (the calibration loader,
    or data to resolve) spread over it: the weight-rounding shifts when ``correct`` (returned, else
    None; of weights rounded by ``passes.weight_rounding`` on the same samples with ``rounding``) and
    max |x| of the float tensors the statistics did not cover (into ``lowering.ranges``)."""
    from .batching import BatchLoader, FeedDictLoader
    from .passes import measure_corrections, spread
    from .runner import load_model

    proto = load_model(model, load_external_data=False)
    unranged = unranged_tensors(proto, lowering)
    if not correct and not unranged:
        return None
    if not isinstance(data, (BatchLoader, FeedDictLoader)):
        data = held_out_loader(proto, data, preprocess, batch_size, batch_axes)
    nodes = None if correct else []
    if isinstance(data, FeedDictLoader):  # a script's stream: its first samples
        shifts = measure_corrections(proto, data, providers, rounding, high_precision=lowering.high_precision,
                                     ranges_of=unranged, nodes=nodes)
    else:
        loader = BatchLoader(spread(data.samples), data.inputs, data.preprocess, data.batch_size, data.skip_bad)
        shifts = measure_corrections(proto, loader, providers, rounding, max_samples=None,
                                     high_precision=lowering.high_precision, ranges_of=unranged, nodes=nodes)
    lowering.ranges.update(shifts.ranges)
    return shifts if correct else None


def _check_budget(model, output, accuracy_budget, min_sqnr) -> None:
    """The budget flags against the model's outputs, before any data is read."""
    from .evaluate.outputs import check_budget
    from .runner import load_model

    if model is None or not Path(model).is_file():
        raise Int8CalibError(f"--accuracy-budget / --min-sqnr need the model: give MODEL ({model!r} not found)")
    check_budget(load_model(model, load_external_data=False), output, accuracy_budget, min_sqnr)


def _statistics_meta(model, calibrator, base: dict) -> dict:
    """What a statistics file records: model, preprocessing, data (fingerprint and list)."""
    meta = {k: base[k] for k in _STATISTICS_FIELDS} | {"model": str(model), "batching": calibrator.loader.batching()}
    if hasattr(calibrator.loader, "samples"):  # files, not feed dicts: list them, sorted as order does not matter
        meta["data"] = sorted(str(s.path) + (f"[{s.index}]" if s.index is not None else "") for s in calibrator.loader.samples)
    return meta


# Histograms of Relu / Clip(0, 6) outputs are derived from their inputs' instead of exposing
# them (runner.model.derivable_tensors), and activations are read in ONNX Runtime's blocked
# layout where it has one (runner.blocked); tests switch these off to compare.
DERIVE_CLIPPED = True
BLOCKED_LAYOUT = True


def _runner_spec(model, providers, tensors, workers: int) -> "RunnerSpec | Callable[[], ActivationRunner]":
    """How to build the runner, called only if data must be read; worker processes get a RunnerSpec."""
    from .runner import ActivationRunner, RunnerSpec
    from .util.memory import collection_threads

    if workers < 1:
        raise Int8CalibError(f"--workers must be >= 1, got {workers}")
    if workers == 1:
        return lambda: ActivationRunner(model, providers, tensors, derive=DERIVE_CLIPPED, any_layout=BLOCKED_LAYOUT,
                                        intra_op_threads=collection_threads()[0])
    return RunnerSpec(
        str(model), tuple(providers) if providers else None, tuple(tensors) if tensors else None,
        DERIVE_CLIPPED, BLOCKED_LAYOUT,
    )


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
    batch_axes: "dict[str, int | None] | None" = None,
) -> Statistics:
    """Collect the statistics of ``data`` (or of shard K/N of it) and save them to ``output``.

    Shards of one data set merge exactly (``int8calib merge``): the metadata holds the
    fingerprint of the whole data set and the shard, so a merge can check that the parts
    fit, and the merged file equals one run over all the data.
    """
    from .batching import BatchLoader, parse_shard, shard as take_shard
    from .calibrator import Calibrator
    from .collection import gather_statistics

    runner = _runner_spec(model, providers, tensors, workers)
    calibrator = Calibrator(
        data, model_inputs_of(model, batch_axes), preprocess, batch_size, shuffle=shuffle, skip_bad_images=skip_bad_images, model=model,
    )
    # Fingerprint and list all the data before taking a shard: merged shards then equal one run.
    meta = _statistics_meta(model, calibrator, calibrator.provenance())
    if shard is not None:
        if not isinstance(calibrator.loader, BatchLoader):
            raise Int8CalibError("--shard needs file data (a list, folder, glob or tensor file)")
        k, n = parse_shard(shard) if isinstance(shard, str) else shard
        part = take_shard(calibrator.loader.samples, k, n)
        if not part:
            raise Int8CalibError(f"shard {k}/{n} is empty: only {len(calibrator.loader.samples)} samples")
        whole = calibrator.loader.samples
        calibrator.loader.samples = part
        meta["shard"] = [k, n]
    else:
        whole = None
    # TensorRT's histograms start from the whole data's first batch in every shard (merge is exact).
    stats = gather_statistics(calibrator.loader, runner, meta, max_memory, workers, first_samples=whole)
    if stats.meta.get("samples", 0) == 0:
        raise Int8CalibError("no calibration sample could be loaded")
    if calibrator.skipped:
        logger.warning("skipped %d unreadable sample(s); first: %s", len(calibrator.skipped), calibrator.skipped[0])
    if output is not None:
        save_statistics(stats, output)
    return stats
