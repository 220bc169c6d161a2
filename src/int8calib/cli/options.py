"""Options shared by the commands: output verbosity, and the data options of those that read data."""

from __future__ import annotations

import argparse

from ..errors import Int8CalibError


def add_output_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("output")
    group.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors; no progress bars")
    group.add_argument("-v", "--verbose", action="count", default=0, help="more detail")


def add_data_loader_script_option(group) -> None:
    """``--data-loader-script``, for every command that reads calibration or evaluation data."""
    group.add_argument(
        "--data-loader-script", metavar="FILE.py[:FUNC]",
        help="Python file whose function (default load_data) yields feed dicts {input name: array}, "
        "as for polygraphy --data-loader-script; replaces --data and --preprocess",
    )


def data_from_args(args: argparse.Namespace, option: str = "--data"):
    """The data to pass on: the ``--data`` value, or the loaded ``--data-loader-script``."""
    script = getattr(args, "data_loader_script", None)
    if script is None:
        return args.data
    if args.data is not None:
        raise Int8CalibError(f"give either {option} or --data-loader-script, not both")
    if getattr(args, "preprocess", None) is not None:
        raise Int8CalibError("--preprocess does not apply to --data-loader-script: the script yields model inputs")
    from ..sources import load_data_loader_script

    return load_data_loader_script(script)


def add_batch_axis_option(group) -> None:
    """``--batch-axis NAME=AXIS|none``, for every command that feeds a model."""
    group.add_argument(
        "--batch-axis", action="append", metavar="NAME=AXIS", dest="batch_axes",
        help="the batch axis of input NAME (an integer), or NAME=none for an input fed as it is (a scalar, "
        "state shared by the batch); repeatable; default: from the model (docs/inputs.md)",
    )


def batch_axes_from_args(args: argparse.Namespace) -> dict:
    from ..runner.model import parse_batch_axes

    return parse_batch_axes(getattr(args, "batch_axes", None))
