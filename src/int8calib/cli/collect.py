"""``int8calib collect``: run the model over (a shard of) the data and save the statistics."""

from __future__ import annotations

import argparse

from ..util.memory import DEFAULT_MAX_MEMORY, DEFAULT_MAX_MEMORY_SMALL_TENSORS
from .options import batch_axes_from_args


def add_collection_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``calibrate`` and ``collect``: memory, processes, tensors."""
    group = parser.add_argument_group("performance")
    group.add_argument(
        "--max-memory", metavar="SIZE",
        help=f"activation memory one ONNX Runtime run may hold, e.g. 1.5G (default {DEFAULT_MAX_MEMORY >> 20}M per pair of cores, up to "
        f"{DEFAULT_MAX_MEMORY_SMALL_TENSORS >> 20}M for models of many small tensors); larger batches run in sub-batches, "
        "with identical results",
    )
    group.add_argument("--workers", type=int, default=1, help="collect in N processes over disjoint parts of the data (identical results)")
    group.add_argument("--tensors", nargs="+", metavar="NAME", help="collect only these tensors (default: every tensor the cache needs)")


def register(sub) -> None:
    p = sub.add_parser(
        "collect",
        help="collect activation statistics (optionally one shard of the data) into a .npz file",
        description="Run MODEL over the data (or shard K of N of it) and save the histograms; "
        "merge shards with `int8calib merge`, then `int8calib calibrate --from-histograms`.",
    )
    p.add_argument("model", help="the ONNX model")
    p.add_argument("--data", required=True, help="calibration list file, directory (images or .npy/.npz), glob, .npy or .npz")
    p.add_argument("--preprocess", help="preset (imagenet, efficientnet-lite, yolo, ppocr-det, ppocr-rec) or a JSON spec file")
    p.add_argument("--batch-size", type=int, default=32, help="images per batch (default 32); results do not depend on it")
    p.add_argument("--shuffle", type=int, metavar="SEED", help="shuffle the data with this seed (same seed in every shard)")
    p.add_argument("--skip-bad-images", action="store_true", help="skip unreadable images instead of failing")
    p.add_argument("--shard", metavar="K/N", help="collect only the K-th of N disjoint parts of the data (1 <= K <= N)")
    p.add_argument("--providers", nargs="+", help="ONNX Runtime execution providers (default CPUExecutionProvider)")
    p.add_argument("-o", "--output", required=True, help="statistics file to write (.npz)")
    from .options import add_batch_axis_option

    add_batch_axis_option(p)
    add_collection_options(p)

    from .options import add_output_options

    add_output_options(p)
    p.set_defaults(run=run_collect)


def run_collect(args: argparse.Namespace) -> int:
    from ..api import collect
    from ..util.log import logger

    stats = collect(
        model=args.model, data=args.data, preprocess=args.preprocess, output=args.output, shard=args.shard,
        batch_axes=batch_axes_from_args(args),
        batch_size=args.batch_size, providers=args.providers, shuffle=args.shuffle,
        skip_bad_images=args.skip_bad_images, tensors=args.tensors, max_memory=args.max_memory, workers=args.workers,
    )
    logger.info("collected %d tensors on %d samples -> %s", len(stats), stats.meta["samples"], args.output)
    return 0
