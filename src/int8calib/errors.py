"""Errors that reach the user as one line and exit code 2.

Anything raised as :class:`Int8CalibError` is the user's input being wrong (a file,
a list line, a tensor, an option); the CLI prints ``error: <message>`` and exits 2.
Any other exception is a bug in int8calib and keeps its traceback.
"""


class Int8CalibError(Exception):
    """Bad input or usage: reported as one line, exit code 2, no traceback."""

    exit_code = 2


class CacheFormatError(Int8CalibError):
    """A calibration cache that does not follow TensorRT's format (names the line)."""


class StatisticsFormatError(Int8CalibError):
    """A statistics file that int8calib cannot read."""
