"""``int8calib merge``: combine statistics files (shards of one data set) exactly."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser(
        "merge",
        help="merge statistics files from `int8calib collect` into one",
        description="Add up the histograms of several statistics files of the same model and preprocessing. "
        "The result equals one run over all their data.",
    )
    p.add_argument("inputs", nargs="+", metavar="STATS.npz", help="statistics files to merge")
    p.add_argument("-o", "--output", required=True, help="merged statistics file to write (.npz)")
    p.add_argument("--allow-partial", action="store_true", help="merge even when some shards K/N are missing")

    from .options import add_output_options

    add_output_options(p)
    p.set_defaults(run=run_merge)


def run_merge(args: argparse.Namespace) -> int:
    from ..stats import load, save
    from ..stats.combine import combine
    from ..util.log import logger

    parts = [load(path) for path in args.inputs]
    merged = combine(parts, args.inputs, allow_partial=args.allow_partial)
    save(merged, args.output)
    logger.info("merged %d files: %d tensors, %d samples -> %s", len(parts), len(merged), merged.meta.get("samples", 0), args.output)
    return 0
