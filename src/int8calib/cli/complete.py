"""``int8calib complete-cache``: a cache completed with the names TensorRT's own parser gives (needs TensorRT)."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser(
        "complete-cache",
        help="add the lines only TensorRT can name to a calibration cache (needs TensorRT, no GPU work)",
        description="Parse MODEL with TensorRT's ONNX parser and add to CACHE a line for every tensor of TensorRT's "
        "network it lacks that is a constant (its range from its weights, with the cache's method) or a copy of a "
        "ranged tensor (a broadcast or reshape): TensorRT 8.x's '(Unnamed Layer* N) [Constant]_output', "
        "'ONNXTRT_Broadcast_N_output'. Tensors still without a range are listed with the reason.",
    )
    p.add_argument("model", help="the ONNX model the cache is for")
    p.add_argument("cache", help="the calibration cache (int8calib's or TensorRT's)")
    p.add_argument("-o", "--output", help="where to write the completed cache (default: CACHE itself)")
    p.add_argument("--method", help="method for the constants' ranges (default: the one the cache's header names)")

    from .options import add_output_options

    add_output_options(p)
    p.set_defaults(run=run_complete)


def run_complete(args: argparse.Namespace) -> int:
    from ..tensorrt.complete import complete_cache

    complete_cache(args.model, args.cache, args.output, args.method)
    return 0
