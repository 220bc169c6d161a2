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
    p.add_argument("--json", action="store_true", help="print the summary as JSON")

    from . import add_output_options

    add_output_options(p)
    p.set_defaults(run=run_inspect)


def run_inspect(args: argparse.Namespace) -> int:
    from ..inspection import inspect

    result = inspect(args.file, args.model)
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.format())
    return 0
