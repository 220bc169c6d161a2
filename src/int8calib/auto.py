"""``--method auto``: the method chosen by measurement (docs/methods.md, "--method auto").

Like the API, this module wires stages together: every candidate's ranges come from the statistics
(``methods``), each candidate's Q/DQ model is measured on held-out samples (``evaluate.mixed``),
with its biases corrected (``passes``) when the written model will be; the winner's ranges are
recomputed from all the data (``collection``, ``stats.merge``). ``default_method`` says when auto
is the default.
"""

from __future__ import annotations

import time
from functools import reduce
from pathlib import Path

from .errors import Int8CalibError
from .methods import get as get_method
from .stats import load as load_statistics
from .util.log import logger

AUTO = "auto"  # --method auto: every candidate from one pass, the best on held-out samples kept
FOLDS = 5  # cross-validation folds when few samples are held out (1 in FOLDS is, in the one split)
CROSS_VALIDATE_BELOW = 32  # held-out samples under which auto ranks by cross-validation instead

# --method auto's candidates: (name in the table, registered method, its parameters). TensorRT's own
# entropy2 is not one: it trailed mse by 5.5 dB on average over the real models (docs/methods.md), its
# histograms cost a second kernel pass over every activation (entropy2 2.14x plain inference, mse 1.74x),
# and entropy2-stable, the same KL search on order-free statistics, stands for it.
AUTO_CANDIDATES: tuple[tuple[str, str, dict], ...] = (
    ("entropy2-stable", "entropy2-stable", {}),
    ("minmax", "minmax", {}),
    ("mse", "mse", {}),
    ("percentile:99.9", "percentile", {"percentile": 99.9}),
    ("percentile:99.99", "percentile", {"percentile": 99.99}),
    ("percentile:99.999", "percentile", {"percentile": 99.999}),
    ("legacy", "legacy", {}),
)


def auto_candidate(name: str) -> tuple[str, dict]:
    """(registered method, parameters) of an auto candidate's table name."""
    for label, method, params in AUTO_CANDIDATES:
        if label == name:
            return method, dict(params)
    raise Int8CalibError(f"unknown auto candidate '{name}'")


_FLOAT_TYPES = (1, 10, 11, 16)  # onnx FLOAT, FLOAT16, DOUBLE, BFLOAT16


def default_method(model=None, data=None, from_histograms=None, precision="int8", output=None, method_params=None,
                   batch_axes=None) -> str:
    """The method when none is given: ``auto`` wherever it applies (the most accurate across the
    real models in docs/methods.md), else ``entropy2``, TensorRT's default, with the reason logged.
    Auto needs the model, int8, a float output to compare and at least ``HOLDOUT_EVERY`` samples."""
    from .evaluate.mixed import HOLDOUT_EVERY

    if method_params:
        raise Int8CalibError(f"{', '.join('--' + k.replace('_', '-') for k in method_params)} need(s) the --method "
                             "it belongs to (percentile, legacy)")
    if precision != "int8":
        return "entropy2"  # the model written is not int8: nothing for auto to compare
    if from_histograms is not None and (data is None or model is None):
        why = "it needs --data" if data is None else "it needs MODEL"
        logger.info("method: entropy2 (TensorRT's default; --method auto does not apply: %s)", why)
        return "entropy2"
    if model is None or data is None or not Path(model).is_file():
        return "entropy2"  # calibrate reports what is missing
    from .evaluate.outputs import choose_output
    from .runner import load_model

    proto = load_model(model, load_external_data=False)
    if output is None and not any(o.type.tensor_type.elem_type in _FLOAT_TYPES for o in proto.graph.output):
        logger.info("method: entropy2 (TensorRT's default; --method auto compares float outputs and the model has none)")
        return "entropy2"
    choose_output(proto, output)  # a bad --output is an error whatever the method
    try:
        count = sample_count(model, data, batch_axes)
    except Int8CalibError:
        return AUTO  # unreadable data: reported where it is read, after the checks that need none
    if count is not None and count < HOLDOUT_EVERY:
        logger.info("method: entropy2 (TensorRT's default; --method auto holds out 1 sample in %d and needs at least %d, "
                    "%d given)", HOLDOUT_EVERY, HOLDOUT_EVERY, count)
        return "entropy2"
    return AUTO


def sample_count(model, data, batch_axes) -> int | None:
    """How many samples ``data`` holds (None: a data-loader script's stream, unknown until read)."""
    from .sources import FeedDictSource, resolve

    if isinstance(data, FeedDictSource):
        return None
    inputs = model_inputs_of(model, batch_axes)
    return len(resolve(data, {i.name: i.layout for i in inputs}))


def check_auto(model, data, from_histograms, precision, output, method_params) -> None:
    """--method auto's flags, before any data is read: it needs the model, held-out data and int8."""
    if method_params:
        raise Int8CalibError(f"--method auto tries its own candidates; drop {', '.join('--' + k.replace('_', '-') for k in method_params)}")
    if precision != "int8":
        raise Int8CalibError(f"--method auto compares INT8 models; it does not apply to --precision {precision}")
    if data is None:
        raise Int8CalibError(
            "--method auto needs --data: it measures each candidate on held-out samples"
            + (" (with --from-histograms, samples the statistics did not see)" if from_histograms is not None else "")
        )
    if model is None and from_histograms is None:
        raise Int8CalibError("--method auto needs MODEL: it builds each candidate's Q/DQ model")
    if from_histograms is not None and model is None:
        model = load_statistics(from_histograms).meta.get("model")
    if model is None or not Path(model).is_file():
        raise Int8CalibError(f"--method auto needs the model: give MODEL ({model!r} not found)")
    from .evaluate.outputs import choose_output
    from .runner import load_model

    choose_output(load_model(model, load_external_data=False), output)


def choose_automatically(result, model, holdout, preprocess, batch_size, providers, output, exclude_nodes,
                          exclude_op_types, batch_axes, refit=None, max_memory=None, correct=False, lowering=None,
                          rounding=False, shifts=None):
    """--method auto: every candidate's ranges from ``result.statistics``, ranked on ``holdout``.

    The held-out samples are preprocessed once and serve the ranking, the refit and, with
    ``correct`` and no ``shifts`` measured already (on calibration samples), the bias correction's
    shifts (of weights rounded by ``passes.weight_rounding`` with ``rounding``), which are returned
    (None without). Neither depends on activation ranges, so measuring them on these samples favours
    no candidate. ``lowering``
    (:class:`~int8calib.writers.precision.PrecisionOptions`) types every candidate's model as the
    written one will be; the same run measures the ranges its FP16 rules lack.

    With ``refit`` (the runner of the statistics pass) the held-out samples' statistics are
    collected too and merged in, and the winner's ranges recomputed from all the data: the
    result is then what ``--method <winner>`` gives on all of it. Not for entropy2 / entropy,
    whose TensorRT histograms follow the batches (they keep the ranges of the 4 samples in 5), nor
    with an accuracy budget, which measures on the same held-out samples. ``result.statistics``
    stays that of the 4 samples in 5 (with TensorRT's histograms, for --report).
    """
    from .evaluate.mixed import choose_method
    from .methods import compute_ranges
    from .runner import load_model

    stats = result.statistics
    source = model if model is not None else stats.meta.get("model")
    pre = preprocess if preprocess is not None else stats.meta.get("preprocess")
    candidates, seconds = {}, {}
    for label, name, params in AUTO_CANDIDATES:
        start = time.perf_counter()
        candidates[label] = compute_ranges(name, stats, **params)
        seconds[label] = time.perf_counter() - start
    proto = load_model(source, load_external_data=False)
    loader = held_out_loader(proto, holdout, pre, batch_size, batch_axes)
    batches = list(loader)  # few samples: kept preprocessed for every use below
    if shifts is None:
        shifts = _float_pass(proto, batches, providers, correct, lowering, rounding)
    choice = choose_method(proto, candidates, batches, output, exclude_nodes, exclude_op_types, providers, shifts, lowering)
    logger.debug("%s", choice.format_table())
    _log_choice(choice)
    result.by_method, result.search_seconds, result.auto = candidates, seconds, choice
    result.chosen_method = choice.chosen
    result.amax = candidates[choice.chosen]
    name, params = auto_candidate(choice.chosen)
    result.algorithm = get_method(name).algorithm
    if refit is not None and not get_method(name).ordered:
        from .collection.calibration_pass import collect_statistics
        from .stats import merge

        held = collect_statistics(loader, _runner(refit), None, max_memory, batches=iter(batches), trt_histograms=False)
        merged = merge(stats, held)
        result.amax = compute_ranges(name, merged, **params)
        result.samples = int(merged.meta.get("samples", 0))
        choice.refit = True
        logger.info("%s: ranges recomputed from all %d samples (the held-out ones merged in)", choice.chosen, result.samples)
    return shifts


def cross_validate(result, model, loader, runner, meta, max_memory=None, providers=None, output=None, exclude_nodes=None,
                   exclude_op_types=(), correct=False, lowering=None, rounding=False):
    """--method auto on little data: rank by ``FOLDS``-fold cross-validation instead of one split.

    With 1 sample in 5 held out, a few dozen samples leave too few to tell the candidates apart
    (docs/methods.md: on 24 detector photos, 5 held out, auto was 2.2 dB below the best method).
    Here sample i belongs to fold i % FOLDS; each fold's statistics are collected separately in the
    one pass (preprocessed once, kept for the measurements: the data is small by construction) and
    merged exactly, so every candidate's ranges for fold k come from the other folds and are
    measured on fold k: every sample is held out once. The winner's ranges come from all folds
    merged, which is ``--method <winner>`` on all the data. TensorRT's order-dependent entropy2 is
    not a candidate here (its histograms do not merge across folds); entropy2-stable stands for it.
    Fills ``result`` (statistics of all the data, every candidate's ranges, the choice) and returns
    the bias-correction shifts (None without ``correct``), measured on the first of the batches.
    """
    from .batching import BatchLoader
    from .collection.calibration_pass import collect_statistics
    from .collection.gather import with_constants
    from .evaluate.mixed import choose_method_by_folds
    from .methods import compute_ranges
    from .runner import load_model
    from .stats import merge

    runner = _runner(runner)
    candidates = [(label, name, params) for label, name, params in AUTO_CANDIDATES if not get_method(name).ordered]
    parts, fold_stats = [], []
    for k in range(FOLDS):
        part = BatchLoader(loader.samples[k::FOLDS], loader.inputs, loader.preprocess, loader.batch_size, loader.skip_bad)
        batches = list(part)
        loader.skipped.extend(part.skipped)
        if batches:  # (a fold of unreadable samples skipped with --skip-bad-images is left out)
            fold_stats.append(collect_statistics(part, runner, meta, max_memory, batches=iter(batches), trt_histograms=False))
            parts.append(batches)
    if len(parts) < 2:
        raise Int8CalibError("no calibration sample could be loaded" if not parts else
                             "--method auto: only one fold of samples could be loaded; give more readable samples")
    proto = load_model(model, load_external_data=False)
    shifts = _float_pass(proto, [b for batches in parts for b in batches], providers, correct, lowering, rounding)

    seconds: dict[str, float] = {}

    def ranges(stats):
        out = {}
        for label, name, params in candidates:
            start = time.perf_counter()
            out[label] = compute_ranges(name, stats, **params)
            seconds[label] = time.perf_counter() - start
        return out

    folds = [(ranges(reduce(merge, fold_stats[:k] + fold_stats[k + 1:])), parts[k]) for k in range(len(parts))]
    choice = choose_method_by_folds(proto, folds, output, exclude_nodes, exclude_op_types, providers, shifts, lowering)
    _log_choice(choice)
    stats = with_constants(reduce(merge, fold_stats), model)  # (the folds need no constants: the models quantize none)
    result.statistics, result.by_method, result.auto = stats, ranges(stats), choice
    result.search_seconds = seconds  # of the last, all-data computation
    result.chosen_method = choice.chosen
    result.amax = result.by_method[choice.chosen]
    result.algorithm = get_method(auto_candidate(choice.chosen)[0]).algorithm
    result.samples = int(stats.meta.get("samples", 0))
    return shifts


def _float_pass(proto, batches, providers, correct: bool, lowering, rounding: bool = False):
    """The bias-correction shifts (None without ``correct``; of rounded weights with ``rounding``) and, in
    the same run of the float model on ``batches``, the ranges ``lowering``'s FP16 rules lack (into
    ``lowering.ranges``)."""
    from .passes import measure_corrections
    from .writers.precision import unranged_tensors

    unranged = unranged_tensors(proto, lowering) if lowering is not None else []
    if not correct and not unranged:
        return None
    shifts = measure_corrections(proto, batches, providers, rounding and correct, ranges_of=unranged,
                                 nodes=None if correct else [],
                                 high_precision=lowering.high_precision if lowering is not None else "fp32")
    if lowering is not None:
        lowering.ranges.update(shifts.ranges)
    return shifts if correct else None


def _runner(spec):
    """An ActivationRunner from the statistics pass's runner factory or RunnerSpec (--workers)."""
    from .runner import ActivationRunner

    if isinstance(spec, ActivationRunner):
        return spec
    if callable(spec):
        return spec()
    return ActivationRunner(spec.model, spec.providers, spec.tensors, derive=spec.derive, any_layout=spec.any_layout)


def _log_choice(choice) -> None:
    second = choice.runner_up
    logger.info("--method auto chose %s (held-out SQNR of '%s' %.2f dB%s)", choice.chosen, choice.output,
                300.0 if choice.table[0]["sqnr_db"] is None else choice.table[0]["sqnr_db"],
                f", {choice.margin_db:+.2f} dB ahead of {second['candidate']}" if second is not None else "")


def held_out_loader(proto, holdout, preprocess, batch_size: int, batch_axes):
    """A loader over the held-out samples (a sample list, a feed-dict source, or data to resolve),
    preprocessed like calibration."""
    from .batching import BatchLoader, FeedDictLoader
    from .calibrator import is_sample_list
    from .preprocess import Preprocess
    from .runner.model import declare_batch_axes, model_inputs
    from .sources import FeedDictSource, resolve

    inputs = declare_batch_axes(model_inputs(proto), batch_axes)
    if isinstance(holdout, FeedDictSource):
        return FeedDictLoader(holdout, inputs, batch_size)
    samples = holdout if is_sample_list(holdout) else resolve(holdout, {i.name: i.layout for i in inputs})
    return BatchLoader(samples, inputs, Preprocess.load(preprocess) if preprocess is not None else None, batch_size)


def model_inputs_of(model, batch_axes: "dict[str, int | None] | None" = None) -> list:
    from .runner.model import declare_batch_axes, load_model, model_inputs

    """The model's inputs, with the batch axes declared by --batch-axis (at least one input)."""
    inputs = declare_batch_axes(model_inputs(load_model(model, load_external_data=False)), batch_axes)
    if not inputs:
        raise Int8CalibError(f"{model}: the model has no inputs to feed calibration data to")
    return inputs


