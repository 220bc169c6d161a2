"""``int8calib build``: ONNX model -> TensorRT engine at fp32 / fp16 / int8 / best."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser(
        "build",
        help="build a TensorRT engine (needs TensorRT and a GPU)",
        description="Build MODEL into a TensorRT engine. INT8 uses a calibrator on TensorRT < 10.1 and a Q/DQ "
        "model (explicit quantization) on 10.1 and later.",
    )
    p.add_argument("model", help="the ONNX model")
    p.add_argument("-o", "--output", required=True, help="engine file to write")
    p.add_argument("--precision", choices=("fp32", "fp16", "int8", "best"), default="fp32", help="default fp32")
    route = p.add_mutually_exclusive_group()
    route.add_argument("--explicit", dest="explicit", action="store_true", default=None,
                       help="INT8 through a Q/DQ model whatever the TensorRT version")
    route.add_argument("--implicit", dest="explicit", action="store_false",
                       help="INT8 through a calibrator (TensorRT < 11)")

    data = p.add_argument_group("calibration (int8 / best)")
    data.add_argument("--cache", help="calibration cache: reused when valid, written after calibrating")
    data.add_argument("--data", help="calibration list file, directory (images or .npy/.npz), glob, .npy or .npz")
    data.add_argument("--preprocess", help="preset (imagenet, efficientnet-lite, yolo, ppocr-det, ppocr-rec) or a JSON spec file")
    data.add_argument("--batch-size", type=int, default=32, help="images per calibration batch (default 32)")
    data.add_argument("--shuffle", type=int, metavar="SEED", help="shuffle the data with this seed")
    data.add_argument("--skip-bad-images", action="store_true", help="skip unreadable images instead of failing")
    data.add_argument("--method", default="entropy2", help="calibration method (default entropy2)")
    data.add_argument("--high-precision", choices=("fp16", "bf16", "fp32"), default="fp16",
                      help="Q/DQ route: type of the float computation outside Q/DQ (default fp16, as calibrate --qdq)")

    engine = p.add_argument_group("engine")
    engine.add_argument("--shapes", help="input shapes for a dynamic model without --data, e.g. input:8x3x224x224")
    engine.add_argument("--workspace", type=float, metavar="GIB", help="builder workspace limit in GiB")
    engine.add_argument("--cuda-backend", choices=("cuda", "cupy", "torch"),
                        help="how calibration batches reach the GPU (default: the first installed)")

    from .options import add_output_options

    add_output_options(p)
    p.set_defaults(run=run_build)


def run_build(args: argparse.Namespace) -> int:
    from ..tensorrt.build import build_engine, parse_shapes

    build_engine(
        args.model,
        args.output,
        args.precision,
        data=args.data,
        cache=args.cache,
        preprocess=args.preprocess,
        method=args.method,
        batch_size=args.batch_size,
        shuffle=args.shuffle,
        skip_bad_images=args.skip_bad_images,
        shapes=parse_shapes(args.shapes) if args.shapes else None,
        explicit=args.explicit,
        workspace_gib=args.workspace,
        backend=args.cuda_backend,
        high_precision=args.high_precision,
    )
    return 0
