"""``int8calib evaluate``: what INT8 costs in accuracy, measured against the float model."""

from __future__ import annotations

import argparse

LAYERS_SHOWN = 15


def register(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="compare a quantized model's outputs with the float model's over the same data",
        description="Run both models in ONNX Runtime over the same data; report top-1 agreement, top-5 overlap, "
        "output SQNR and max abs error, and with --labels the top-1/top-5 accuracy of both.",
    )
    p.add_argument("--fp32", required=True, help="the float ONNX model")
    quantized = p.add_mutually_exclusive_group(required=True)
    quantized.add_argument("--int8", help="the quantized (Q/DQ) or reduced-precision ONNX model")
    quantized.add_argument("--cache", help="a calibration cache (TensorRT-written or ours): measured as the Q/DQ model "
                           "calibrate --from-cache would write, without writing it")
    quantized.add_argument("--ranges", help="a dynamic-range JSON {tensor: amax}, measured like --cache")
    p.add_argument("--missing-ranges", choices=("fail", "float"), default="fail",
                   help="with --cache/--ranges: tensors the file lacks fail (default) or stay in float")
    p.add_argument("--data", required=True, help="list file, directory (images or .npy/.npz), glob, .npy or .npz")
    p.add_argument("--preprocess", help="preset (imagenet, efficientnet-lite, yolo, ppocr-det, ppocr-rec) or a JSON spec file")
    p.add_argument("--batch-size", type=int, default=32, help="images per batch (default 32)")
    p.add_argument("--labels", help="TSV/CSV with 'file' and 'class_index' columns (matched on file name)")
    p.add_argument("--output", help="model output to compare (default: the first floating-point output)")
    from .options import add_batch_axis_option

    add_batch_axis_option(p)
    p.add_argument("--per-layer", action="store_true", help="SQNR of every quantized tensor against FP32, worst first")
    p.add_argument("--json", help="write the results as JSON")
    p.add_argument("--providers", nargs="+", help="ONNX Runtime execution providers (default CPUExecutionProvider)")

    from .options import add_output_options

    add_output_options(p)
    p.set_defaults(run=run_evaluate)


def format_report(result: dict, layers_shown: int = LAYERS_SHOWN) -> str:
    def pct(key: str) -> str:
        value = result.get(key)
        return "n/a" if value is None else f"{value:.2f} %"

    sqnr = result["sqnr_db"]
    lines = [
        f"output             {result['output']}" if result.get("output") else None,
        f"samples            {result['n']}",
        f"top-1 agreement    {pct('top1_agreement')}",
        f"top-5 overlap      {pct('top5_overlap')}",
        f"output SQNR        {'inf' if sqnr is None else f'{sqnr:.2f}'} dB",
        f"max abs error      {result['max_abs_error']:.4g}",
    ]
    lines = [line for line in lines if line is not None]
    if result.get("fp32_top1") is not None:
        lines.append(f"top-1 accuracy     fp32 {pct('fp32_top1')}   int8 {pct('int8_top1')}")
        lines.append(f"top-5 accuracy     fp32 {pct('fp32_top5')}   int8 {pct('int8_top5')}")
    lines += _calibration(result.get("calibration"))
    layers = result.get("per_layer") or []
    if layers:
        lines.append(f"per-layer SQNR, worst first ({min(layers_shown, len(layers))} of {len(layers)}):")
        for row in layers[:layers_shown]:
            sqnr = "inf" if row["sqnr_db"] is None else f"{row['sqnr_db']:7.2f}"
            lines.append(f"  {sqnr} dB  {row['tensor']}")
    return "\n".join(lines)


def _calibration(record: dict | None) -> list[str]:
    """How the int8 model was calibrated, from its provenance: method (auto's table) and bias correction."""
    if not record or "method" not in record:
        return []
    corrected = record.get("bias_correction")
    lines = [f"calibration        {'auto -> ' if record.get('chosen_by') else ''}{record['method']}"
             + ("" if "bias_correction" not in record else
                f", biases corrected ({corrected['layers']} layers)" if corrected else ", biases not corrected")]
    if record.get("precision"):
        from ..writers.precision import PrecisionSummary, describe_precision

        lines.append(f"precision          {describe_precision(PrecisionSummary.from_dict(record['precision']))}")
    if record.get("chosen_by"):
        from ..evaluate.mixed import MethodChoice

        lines += ["  " + line for line in MethodChoice.from_dict(record["chosen_by"]).format_table().splitlines()]
    return lines


def run_evaluate(args: argparse.Namespace) -> int:
    import sys

    from ..evaluate import evaluate
    from ..cachefiles.to_qdq import evaluate_cache
    from .options import batch_axes_from_args

    common = (
        args.data, args.preprocess, args.labels, args.batch_size, args.per_layer, args.output, args.json,
        args.providers,
    )
    if args.int8 is not None:
        result = evaluate(args.fp32, args.int8, *common, batch_axes_from_args(args))
    else:
        result = evaluate_cache(
            args.fp32, args.cache or args.ranges, *common, missing=args.missing_ranges,
            batch_axes=batch_axes_from_args(args),
        )
    shown = 10**9 if args.verbose else LAYERS_SHOWN
    print(format_report(result.to_dict(), shown), file=sys.stdout)
    return 0
