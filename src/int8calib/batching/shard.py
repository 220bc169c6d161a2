"""Splitting the calibration samples into disjoint shards (``--shard K/N``, ``--workers N``).

Shard K of N (1 <= K <= N) is the K-th contiguous slice of the sample list; the N
slices cover every sample exactly once. Histograms merge exactly, so the statistics
of the N shards merged equal those of one run over all samples.
"""

from __future__ import annotations

import re
from typing import Sequence, TypeVar

from ..errors import Int8CalibError

T = TypeVar("T")


def parse_shard(text: str) -> tuple[int, int]:
    """'2/4' -> (2, 4); a one-line error for anything else."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not match:
        raise Int8CalibError(f"--shard must be K/N (e.g. 1/4), got {text!r}")
    k, n = int(match.group(1)), int(match.group(2))
    if not 1 <= k <= n:
        raise Int8CalibError(f"--shard {text}: K must be between 1 and N")
    return k, n


def shard(items: Sequence[T], k: int, n: int) -> list[T]:
    """The K-th of N contiguous, disjoint slices of ``items`` (sizes differ by at most one)."""
    if not 1 <= k <= n:
        raise ValueError(f"shard {k}/{n}: K must be between 1 and N")
    return list(items[(k - 1) * len(items) // n : k * len(items) // n])
