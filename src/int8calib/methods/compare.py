"""Comparing methods: how much each one clips, and a table sorted by disagreement."""

from __future__ import annotations

import math

from ..stats.histogram import Statistics


def clip_fraction(stats: Statistics, tensor: str, amax: float) -> float:
    """Fraction of the tensor's values with |x| > amax (counts uniform within a bin)."""
    h = stats[tensor]
    total = h.total
    if total == 0:
        return 0.0
    return max(0.0, 1.0 - float(h.cdf([amax])[0]) / total)


def disagreement(amaxes: list[float]) -> float:
    """log2(largest / smallest amax): 0 when every method agrees, 1 for a factor of 2."""
    top, bottom = max(amaxes), min(amaxes)
    if top <= 0:
        return 0.0
    return math.inf if bottom <= 0 else math.log2(top / bottom)


def _shorten(name: str, width: int) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1) :]


def format_table(stats: Statistics, ranges: dict[str, dict[str, float]], name_width: int = 40) -> str:
    """One row per tensor: each method's amax and the % of values it clips, most disagreeing first."""
    methods = list(ranges)
    tensors = list(next(iter(ranges.values()))) if ranges else []
    spread = {t: disagreement([ranges[m][t] for m in methods]) for t in tensors}
    order = sorted(tensors, key=lambda t: -spread[t])  # stable: graph order among equals
    cell = 18
    header = f"{'tensor':<{name_width}} {'log2 spread':>11}" + "".join(f" {m:>{cell}}" for m in methods)
    sub = f"{'':<{name_width}} {'':>11}" + "".join(f" {'amax  clip%':>{cell}}" for _ in methods)
    lines = [header, sub, "-" * len(header)]
    for t in order:
        cells = []
        for m in methods:
            a = ranges[m][t]
            cells.append(f" {a:>10.4g} {100 * clip_fraction(stats, t, a):>6.3f}"[: cell + 1].rjust(cell + 1))
        lines.append(f"{_shorten(t, name_width):<{name_width}} {spread[t]:>11.3f}" + "".join(cells))
    return "\n".join(lines)
