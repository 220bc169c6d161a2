"""``int8calib inspect``: summarise a calibration cache, statistics file or Q/DQ model."""

from __future__ import annotations

import argparse
import json


def register(sub) -> None:
    p = sub.add_parser(
        "inspect",
        help="show what is in a calibration cache, statistics file (.npz) or Q/DQ model (.onnx)",
        description="Print the header, provenance and per-tensor table of FILE; with --model, compare its "
        "tensors with the model's calibratable tensors.",
    )
    p.add_argument("file", help="calibration cache, statistics .npz or Q/DQ .onnx model")
    p.add_argument("--model", help="ONNX model to compare the tensor names with")
    p.add_argument("--compare", metavar="B", help="a second cache, ranges JSON or Q/DQ model: amax of both and B / A "
                   "per tensor, worst first")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")

    from .options import add_output_options

    add_output_options(p)
    p.set_defaults(run=run_inspect)


def run_inspect(args: argparse.Namespace) -> int:
    from ..cachefiles.inspect import inspect

    if args.compare is not None:
        from ..errors import Int8CalibError
        from ..cachefiles.compare import compare_ranges

        if args.model is not None:
            raise Int8CalibError("--compare and --model do not go together")
        comparison = compare_ranges(args.file, args.compare)
        print(json.dumps(comparison.to_dict(), indent=2) if args.json else comparison.format(None if args.verbose else 20))
        return 0
    result = inspect(args.file, args.model)
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.format())
    return 0
