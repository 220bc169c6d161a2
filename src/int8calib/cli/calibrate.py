"""``int8calib calibrate``: model + data -> calibration cache / ranges / statistics."""

from __future__ import annotations

import argparse

from ..writers.cache import DEFAULT_TRT_VERSION
from .options import add_batch_axis_option, add_data_loader_script_option, batch_axes_from_args, data_from_args


def register(sub) -> None:
    p = sub.add_parser(
        "calibrate",
        help="compute INT8 dynamic ranges and write a TensorRT calibration cache",
        description="Run MODEL in ONNX Runtime over the calibration data and write the ranges TensorRT needs.",
    )
    p.add_argument("model", nargs="?", help="the ONNX model (not needed with --from-histograms)")

    data = p.add_argument_group("data")
    data.add_argument("--data", help="calibration list file, directory (images or .npy/.npz), glob, .npy or .npz")
    data.add_argument("--preprocess", help="preset (imagenet, efficientnet-lite, yolo, ppocr-det, ppocr-rec) or a JSON spec file")
    data.add_argument("--batch-size", type=int, default=32, help="images per batch (default 32); results do not depend on it")
    data.add_argument("--shuffle", type=int, metavar="SEED", help="shuffle the data with this seed")
    data.add_argument("--skip-bad-images", action="store_true", help="skip unreadable images instead of failing")
    add_data_loader_script_option(data)
    add_batch_axis_option(data)

    method = p.add_argument_group("method")
    method.add_argument(
        "--method",
        help="auto (the default where it applies: the candidate method with the least output error on 1 sample "
        "in 5 held out; needs MODEL, --data and >= 5 samples, else entropy2), entropy2 (TensorRT's, follows the "
        "batches), entropy2-stable (any batching), entropy, minmax, percentile, mse, legacy, or 'all' to compute "
        "every method from one pass, print a comparison table and write one cache per method (docs/methods.md)",
    )
    method.add_argument("--percentile", type=float, metavar="P", help="percentile method: keep P %% of |x| (default 99.99)")
    method.add_argument("--quantile", type=float, help="legacy method: IInt8LegacyCalibrator quantile (default 0.99999)")
    method.add_argument("--regression-cutoff", type=float, help="legacy method: IInt8LegacyCalibrator regression cutoff (default 1.0)")

    out = p.add_argument_group("outputs")
    out.add_argument("--cache", help="TensorRT calibration cache to write (reused when valid); with --method all, "
                     "one per method: NAME.METHOD.EXT")
    out.add_argument(
        "--reuse-cache", choices=("auto", "strict", "never"), default="auto",
        help="existing --cache: auto reuses it when model, method, preprocessing and data are unchanged and "
        "recomputes it otherwise; strict fails (exit 2) instead of recomputing; never always recomputes",
    )
    out.add_argument("--trt-version", type=int, default=DEFAULT_TRT_VERSION, help=f"version number in the cache header (default {DEFAULT_TRT_VERSION})")
    out.add_argument("--ranges", help="write {tensor: amax} JSON for setDynamicRange")
    out.add_argument("--histograms", help="save the statistics (.npz) to switch methods later without rerunning")
    out.add_argument("--from-histograms", help="compute ranges from a saved statistics file instead of running the model")

    imported = p.add_argument_group("from a calibration cache (TensorRT 8.x/10.x -> Q/DQ, see docs/migrating.md)")
    imported.add_argument(
        "--from-cache", metavar="FILE",
        help="take the ranges from a calibration cache (TensorRT-written or ours) or a ranges JSON and write "
        "them with --qdq, scales bit for bit as in the file; no --data needed",
    )
    imported.add_argument(
        "--missing-ranges", choices=("fail", "float", "calibrate"), default="fail",
        help="tensors the Q/DQ model needs that the file lacks: fail (default, exit 2 listing them), "
        "float (their layers stay in float) or calibrate (only they, from --data)",
    )

    qdq = p.add_argument_group("explicit quantization (Q/DQ model, see docs/qdq.md)")
    qdq.add_argument("--qdq", metavar="OUT.onnx", help="write the model with QuantizeLinear/DequantizeLinear nodes for TensorRT")
    qdq.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="int8", help="precision of the --qdq model (default int8)")
    qdq.add_argument("--exclude-nodes", metavar="REGEX", help="keep nodes whose name matches REGEX in float")
    qdq.add_argument("--exclude-op-types", nargs="+", default=(), metavar="OP", help="keep these op types in float")
    qdq.add_argument("--accuracy-budget", type=float, metavar="PCT", help="keep the most sensitive layers in float until top-1 agreement loss <= PCT points (1 sample in 5 held out); "
                     "needs a scores output [N, classes]")
    qdq.add_argument("--min-sqnr", type=float, metavar="DB", help="keep the most sensitive layers in float until the held-out "
                     "output SQNR is >= DB (any float output; 1 sample in 5 held out)")
    qdq.add_argument(
        "--bias-correction", action=argparse.BooleanOptionalAction, default=None,
        help="correct the Q/DQ model's biases for the mean output shift its int8 weights cause, measured on up to "
        "128 calibration samples (default: on with an int8 --qdq; docs/qdq.md)",
    )
    qdq.add_argument(
        "--weight-rounding", action=argparse.BooleanOptionalAction, default=None,
        help="choose each layer's int8 weights for its output error on the same samples, not round to nearest "
        "(GPTQ-style, on 64 of those samples; default: on with bias correction; docs/qdq.md)",
    )
    qdq.add_argument(
        "--equalize", action=argparse.BooleanOptionalAction, default=None,
        help="rescale the float model's channels where one int8 range per activation tensor fits them poorly, "
        "keeping its function (cross-layer equalization of the tensors depthwise Convs read; default: on when --qdq "
        "is the only output: a cache or ranges name the original model's tensors; docs/qdq.md)",
    )
    qdq.add_argument("--output", metavar="NAME", help="output watched by --accuracy-budget / --min-sqnr / --method auto "
                     "(default: the first floating-point output)")
    add_high_precision_options(p)

    report = p.add_argument_group("report")
    report.add_argument(
        "--report", metavar="HTML",
        help="write a self-contained HTML report: |x| histograms with every method's threshold, "
        "a sortable table of tensors and where to look (needs the 'report' extra)",
    )

    run = p.add_argument_group("runtime")
    run.add_argument("--providers", nargs="+", type=_provider,
                     help="ONNX Runtime execution providers: cpu, cuda or full names (default: CUDA where onnxruntime-gpu "
                          "and CuPy see a GPU, activations then histogrammed on the GPU; else the CPU)")
    from .collect import add_collection_options

    add_collection_options(p)

    from .options import add_output_options

    add_output_options(p)
    p.set_defaults(run=run_calibrate)


def add_high_precision_options(p) -> None:
    """How the int8 Q/DQ model types its float computation (also `calibrate --from-cache`)."""
    typed = p.add_argument_group("float computation of the int8 Q/DQ model (strongly typed TensorRT 10.1+ / 11, docs/qdq.md)")
    typed.add_argument("--high-precision", choices=("fp16", "bf16", "fp32"), default="fp16",
                       help="type of every float computation outside Q/DQ (default fp16; FP32 kept only where the "
                       "observed ranges need it, each node listed with its reason)")
    typed.add_argument("--fp32-nodes", metavar="REGEX", help="keep nodes whose name matches REGEX in FP32")
    typed.add_argument("--fp32-op-types", nargs="+", default=(), metavar="OP", help="keep these op types in FP32")
    typed.add_argument("--low-precision-nodes", metavar="REGEX",
                       help="nodes whose name matches REGEX in the --high-precision type whatever the rules say")
    typed.add_argument("--low-precision-op-types", nargs="+", default=(), metavar="OP",
                       help="these op types in the --high-precision type whatever the rules say")
    typed.add_argument("--low-precision-io", action="store_true",
                       help="graph inputs and outputs in the --high-precision type too (default: float32, cast at the edges)")


def high_precision_kwargs(args: argparse.Namespace) -> dict:
    return {"high_precision": args.high_precision, "fp32_nodes": args.fp32_nodes, "fp32_op_types": args.fp32_op_types,
            "low_precision_nodes": args.low_precision_nodes, "low_precision_op_types": args.low_precision_op_types,
            "low_precision_io": args.low_precision_io}


def precision_options(args: argparse.Namespace):
    from ..writers.precision import PrecisionOptions

    kw = high_precision_kwargs(args)
    return PrecisionOptions(kw["high_precision"], kw["fp32_nodes"], tuple(kw["fp32_op_types"]), kw["low_precision_nodes"],
                            tuple(kw["low_precision_op_types"]), not kw["low_precision_io"])


def run_calibrate(args: argparse.Namespace) -> int:
    from ..api import calibrate
    from ..errors import Int8CalibError
    from ..util.log import logger

    data = data_from_args(args)
    if args.from_cache is not None:
        return _run_from_cache(args, data)
    if args.from_histograms is None and (args.model is None or data is None):
        raise Int8CalibError("calibrate needs MODEL and --data (or --data-loader-script), or --from-histograms FILE")
    result = calibrate(
        model=args.model,
        data=data,
        preprocess=args.preprocess,
        method=args.method,
        batch_size=args.batch_size,
        cache=args.cache,
        ranges=args.ranges,
        histograms=args.histograms,
        from_histograms=args.from_histograms,
        trt_version=args.trt_version,
        providers=args.providers,
        shuffle=args.shuffle,
        skip_bad_images=args.skip_bad_images,
        tensors=args.tensors,
        max_memory=args.max_memory,
        workers=args.workers,
        qdq=args.qdq, precision=args.precision, exclude_nodes=args.exclude_nodes,
        exclude_op_types=args.exclude_op_types, accuracy_budget=args.accuracy_budget,
        min_sqnr=args.min_sqnr, output=args.output, batch_axes=batch_axes_from_args(args),
        report=args.report,
        reuse_cache=args.reuse_cache,
        bias_correction=args.bias_correction,
        weight_rounding=args.weight_rounding,
        equalize=args.equalize,
        **high_precision_kwargs(args),
        **_method_params(args),
    )
    if args.method == "all":
        from ..methods.compare import format_table

        print(format_table(result.statistics, result.by_method))
    if result.auto is not None:
        print(result.auto.format_table())
        for name, seconds in result.search_seconds.items():
            logger.info("%-10s threshold search %7.1f ms for %d tensors", name, 1e3 * seconds, len(result.by_method[name]))
    outputs = ", ".join(str(p) for p in (args.cache, args.ranges, args.histograms, args.report, args.qdq) if p) or "no file written"
    if result.from_cache:
        logger.info("%d tensors from the existing cache %s", len(result.amax), args.cache)
    else:
        logger.info(
            "calibrated %d tensors on %d samples with %s in %.1f s -> %s",
            len(next(iter(result.by_method.values()))), result.samples,
            f"auto ({result.chosen_method})" if result.chosen_method else result.method, result.seconds, outputs,
        )
    mixed = result.quantization
    if mixed is not None:
        measured = (
            f"held-out SQNR of '{mixed.output}' {_db(mixed.sqnr_db)} dB (all INT8 {_db(mixed.int8_sqnr_db)} dB"
            if mixed.min_sqnr is not None
            else f"held-out top-1 agreement {mixed.agreement:.2f} % (all INT8 {mixed.int8_agreement:.2f} %"
        )
        logger.info("mixed precision: %d layer(s) without Q/DQ, %s, %d samples)", len(mixed.kept), measured, mixed.samples)
    model = args.model or (result.statistics.meta.get("model") if result.statistics else None)
    _log_next_steps(model, args.cache if args.method != "all" else None, args.qdq if args.precision == "int8" else None)
    return 0


def _log_next_steps(model, cache, qdq) -> None:
    from ..routes import installed_tensorrt, next_steps
    from ..util.log import logger

    for line in next_steps(model, cache, qdq, installed_tensorrt()):
        logger.info("next: %s", line)


def _run_from_cache(args: argparse.Namespace, data) -> int:
    """``--from-cache FILE --qdq OUT``: the cache's ranges as a Q/DQ model (cachefiles.to_qdq.quantize_from_cache)."""
    from ..errors import Int8CalibError
    from ..cachefiles.to_qdq import quantize_from_cache

    clashes = [
        opt for opt, value in (
            ("--from-histograms", args.from_histograms), ("--cache", args.cache), ("--ranges", args.ranges),
            ("--histograms", args.histograms), ("--report", args.report), ("--accuracy-budget", args.accuracy_budget),
        ) if value is not None
    ]
    if args.precision != "int8":
        clashes.append("--precision " + args.precision)
    if clashes:
        raise Int8CalibError(f"--from-cache writes a Q/DQ model only; drop {', '.join(clashes)}")
    if args.model is None or args.qdq is None:
        raise Int8CalibError("--from-cache needs MODEL and --qdq OUT.onnx")
    quantize_from_cache(
        args.model, args.from_cache, args.qdq, args.missing_ranges, data, args.preprocess,
        args.method or "entropy2",  # tensors missing from a TensorRT cache: calibrated the way TensorRT did the rest
        args.batch_size, args.exclude_nodes, args.exclude_op_types, args.providers,
        lowering=precision_options(args), **_method_params(args),
    )
    _log_next_steps(args.model, None, args.qdq)
    return 0


def _db(value: float | None) -> str:
    return "inf" if value is None else f"{value:.2f}"


def _provider(name: str) -> str:
    """'cpu' / 'cuda' for ONNX Runtime's provider names; others pass as given."""
    return {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}.get(name.lower(), name)


def _method_params(args: argparse.Namespace) -> dict:
    """The method options given, checked against --method (each goes only to the methods that take it)."""
    from ..errors import Int8CalibError

    given = {
        name: value
        for name, value in (
            ("percentile", args.percentile), ("quantile", args.quantile), ("regression_cutoff", args.regression_cutoff)
        )
        if value is not None
    }
    owner = {"percentile": "percentile", "quantile": "legacy", "regression_cutoff": "legacy"}
    for name in given:
        if args.method not in ("all", owner[name]):
            raise Int8CalibError(f"--{name.replace('_', '-')} applies to --method {owner[name]} (or all), "
                                 f"not {args.method or 'the default (auto)'}")
    return given
