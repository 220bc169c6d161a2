"""Options shared by the commands that read data."""

from __future__ import annotations

import argparse

from ..errors import Int8CalibError


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
