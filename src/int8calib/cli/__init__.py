"""The command line: a thin layer over the Python API, one module per subcommand.

Each command module has ``register(subparsers)``, which adds its parser and sets
``run=`` to a function taking the parsed arguments and returning an exit code.
"""

from __future__ import annotations

import argparse
import signal
import sys

from .. import __version__
from ..errors import Int8CalibError
from ..util import log
from ..util.memory import limit_malloc_arenas
from . import build, calibrate, collect, complete, demo, evaluate, inspect, merge

COMMANDS = [calibrate, collect, merge, evaluate, inspect, build, complete, demo]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="int8calib",
        description="INT8 post-training calibration for TensorRT, computed with ONNX Runtime on any machine.",
    )
    parser.add_argument("--version", action="version", version=f"int8calib {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for command in COMMANDS:
        command.register(sub)
    return parser


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so it unwinds like Ctrl-C (temporary files removed)."""


def _on_sigterm(signum, frame):
    raise _Terminated()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    limit_malloc_arenas()  # before any thread starts: see util/memory.py
    log.configure(getattr(args, "verbose", 0), getattr(args, "quiet", False))
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread: leave signals alone
        previous = None
    try:
        return int(args.run(args) or 0)
    except Int8CalibError as exc:
        print(f"int8calib: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        # Every output is renamed into place complete, so files are old or new, never partial.
        what, code = ("terminated (SIGTERM)", 143) if isinstance(exc, _Terminated) else ("interrupted", 130)
        print(f"int8calib: {what}; no file was left half-written", file=sys.stderr)
        return code
    except BrokenPipeError:
        return 0
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
