"""Per-tensor numbers for the report, and the "where to look" ranking derived from them.

Every flag is a number crossing a threshold, so the reason printed beside a tensor
is the measurement itself (e.g. "clips 1.2 % of values"), never a guess.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..stats.histogram import Statistics, TensorHistogram

# Thresholds above which a number becomes a reason to look at a tensor.
CLIPPED_FLAG = 0.01  # more than 1 % of the values saturate at amax (entropy often clips ~0.1 %)
SPREAD_FLAG = 3.0  # the methods' amax differ by more than 3x
TAIL_FLAG = 10.0  # max |x| is more than 10x the 99.99th percentile of |x|
UNDERFLOW_FLAG = 0.5  # more than half of the non-zero values round to zero
SQNR_FLAG_DB = 20.0  # per-layer SQNR below 20 dB (about 1 % noise power)
TAIL_QUANTILE = 0.9999
INT8_LEVELS = 127


@dataclass
class TensorSummary:
    name: str
    amax_by_method: dict[str, float]
    chosen_amax: float
    max_abs: float  # observed max |x|
    total: int
    zero_fraction: float  # exact zeros (e.g. after ReLU), representable without error
    clipped: float  # fraction of values with |x| > chosen amax
    underflow: float  # fraction of the non-zero values below half an INT8 step
    tail_ratio: float  # max |x| / 99.99th percentile of |x|
    spread: float  # largest / smallest non-zero amax over the methods
    sqnr_db: float | None = None
    score: float = 0.0
    reasons: list[str] = field(default_factory=list)


def summarize_tensor(
    name: str, hist: TensorHistogram, amax_by_method: dict[str, float], chosen_amax: float, sqnr_db: float | None
) -> TensorSummary:
    total = hist.total
    zeros = int(hist.counts[0])
    if total == 0:
        clipped = underflow = 0.0
    else:
        below = hist.cdf(np.array([chosen_amax, chosen_amax / INT8_LEVELS / 2]))
        clipped = max(0.0, 1.0 - float(below[0]) / total)
        nonzero = total - zeros
        underflow = max(0.0, float(below[1]) - zeros) / nonzero if nonzero and chosen_amax > 0 else 0.0
    p = hist.quantile(TAIL_QUANTILE)
    positive = [a for a in amax_by_method.values() if a > 0]
    summary = TensorSummary(
        name=name,
        amax_by_method=dict(amax_by_method),
        chosen_amax=float(chosen_amax),
        max_abs=hist.amax,
        total=total,
        zero_fraction=zeros / total if total else 0.0,
        clipped=clipped,
        underflow=min(underflow, 1.0),
        tail_ratio=hist.amax / p if p > 0 else 1.0,
        spread=max(positive) / min(positive) if positive else 1.0,
        sqnr_db=None if sqnr_db is None else float(sqnr_db),
    )
    _score(summary)
    return summary


def _score(s: TensorSummary) -> None:
    """Add a reason (and a share of the score) for every number past its threshold."""
    parts: list[tuple[float, str]] = []
    if s.sqnr_db is not None and s.sqnr_db < SQNR_FLAG_DB:
        # measured damage outranks the signs of it below
        parts.append((3.0 + (SQNR_FLAG_DB - s.sqnr_db) / 2.5, f"low per-layer SQNR: {s.sqnr_db:.1f} dB"))
    if s.clipped > CLIPPED_FLAG:
        parts.append((math.log10(s.clipped / CLIPPED_FLAG) + 1.0,
                      f"clips {s.clipped:.2%} of values at amax {s.chosen_amax:.4g} (max |x| {s.max_abs:.4g})"))
    if s.spread > SPREAD_FLAG:
        lo = min((m for m, a in s.amax_by_method.items() if a > 0), key=s.amax_by_method.get)
        hi = max(s.amax_by_method, key=s.amax_by_method.get)
        parts.append((math.log2(s.spread),
                      f"methods disagree {s.spread:.1f}x: {lo} {s.amax_by_method[lo]:.4g} vs {hi} {s.amax_by_method[hi]:.4g}"))
    if s.tail_ratio > TAIL_FLAG:
        parts.append((math.log10(s.tail_ratio / TAIL_FLAG) + 0.5,
                      f"max |x| is {s.tail_ratio:.0f}x the 99.99th percentile: rare outliers set the range"))
    if s.underflow > UNDERFLOW_FLAG:
        parts.append((2.0 * (s.underflow - UNDERFLOW_FLAG) + 0.5,
                      f"{s.underflow:.0%} of non-zero values are below half an INT8 step and round to 0"))
    parts.sort(key=lambda p: -p[0])
    s.score = float(sum(p[0] for p in parts))
    s.reasons = [p[1] for p in parts]


def summarize(
    statistics: Statistics,
    ranges_by_method: dict[str, dict[str, float]],
    chosen_method: str,
    per_layer_sqnr: dict[str, float] | None = None,
) -> list[TensorSummary]:
    """One summary per tensor of ``statistics``, in its order."""
    sqnr = per_layer_sqnr or {}
    chosen = ranges_by_method[chosen_method]
    out = []
    for name, hist in statistics.tensors.items():
        by_method = {m: float(r[name]) for m, r in ranges_by_method.items() if name in r}
        out.append(summarize_tensor(name, hist, by_method, chosen.get(name, hist.amax), sqnr.get(name)))
    return out


def where_to_look(summaries: list[TensorSummary], limit: int = 10) -> list[TensorSummary]:
    """The flagged tensors, highest score first (ties keep model order)."""
    flagged = [s for s in summaries if s.reasons]
    return sorted(flagged, key=lambda s: -s.score)[:limit]
