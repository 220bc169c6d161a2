"""``int8calib demo``: EfficientNet-Lite0 on bundled photos, FP32 vs INT8, all offline."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="calibrate EfficientNet-Lite0 on bundled photos and compare FP32 with INT8 (needs int8calib[demo])",
        description="Calibrate EfficientNet-Lite0 (ImageNet weights) on photos shipped in the scikit-image, "
        "scikit-learn and matplotlib wheels, write the cache, a Q/DQ model and the report, and print "
        "FP32 vs INT8 predictions. No network access, no GPU.",
    )
    p.add_argument("--out", default="int8calib-demo", help="output folder (default ./int8calib-demo)")
    p.add_argument("--method", default="auto", help="calibration method (default auto; the demo also shows TensorRT's entropy2)")
    p.add_argument("--no-report", action="store_true", help="skip the HTML report")
    from .options import add_output_options

    add_output_options(p)
    p.set_defaults(run=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo as demo

    result = demo(args.out, args.method, report=not args.no_report)
    views = result.calibration_samples
    print(
        f"EfficientNet-Lite0 (ImageNet), {result.method} calibration on {views} views "
        f"of these {len(result.photos)} photos (crops and mirror images):\n"
    )
    print(result.table())
    print()
    for what, path in result.outputs.items():
        print(f"{what:>6}: {path}")
    s = result.seconds
    print(f"\n{s['total']:.1f} s in all (calibration {s['calibrate']:.1f} s)")
    from ..routes import installed_tensorrt, next_steps

    for line in next_steps(result.outputs["model"], result.outputs["cache"], result.outputs["qdq"], installed_tensorrt()):
        print(f"next: {line}")
    return 0
