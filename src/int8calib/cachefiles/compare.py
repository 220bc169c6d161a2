"""``int8calib inspect A --compare B``: two caches, ranges files or Q/DQ models side by side.

Per tensor both amax values and their ratio B / A, worst first (the largest |log ratio|),
then the tensors only one side has. A reformat copy TensorRT wrote
(``<tensor> output reformatter 0``) stands for its tensor when the file has no line of
its own for it. This is how a TensorRT-written cache is compared with int8calib's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from .read import REFORMAT, RangeFile, read_range_file


@dataclass
class RangeComparison:
    a: RangeFile
    b: RangeFile
    rows: list[tuple[str, float, float, float]] = field(default_factory=list)  # tensor, amax A, amax B, B / A
    only_a: list[str] = field(default_factory=list)
    only_b: list[str] = field(default_factory=list)

    def within(self, tolerance: float) -> int:
        """How many common tensors have B / A within 1 +- ``tolerance``."""
        return sum(1 for *_, r in self.rows if abs(r - 1.0) <= tolerance)

    def to_dict(self) -> dict:
        return {
            "a": {"path": str(self.a.path), "kind": self.a.kind, "header": self.a.header, "tensors": len(self.a.scales)},
            "b": {"path": str(self.b.path), "kind": self.b.kind, "header": self.b.header, "tensors": len(self.b.scales)},
            "common": len(self.rows),
            "within_1_percent": self.within(0.01),
            "tensors": [
                {"tensor": t, "amax_a": a, "amax_b": b, "ratio": r if math.isfinite(r) else None} for t, a, b, r in self.rows
            ],
            "only_a": self.only_a,
            "only_b": self.only_b,
        }

    def format(self, limit: int | None = None) -> str:
        lines = [f"A: {_describe(self.a)}", f"B: {_describe(self.b)}"]
        lines.append(
            f"{len(self.rows)} tensor(s) in both, {self.within(0.01)} with amax within 1 %, "
            f"{self.within(0.0)} equal; {len(self.only_a)} only in A, {len(self.only_b)} only in B"
        )
        shown = self.rows if limit is None else self.rows[:limit]
        if shown:
            width = max(len(t) for t, *_ in shown)
            lines.append(f"  {'tensor':<{width}}  {'amax A':>11}  {'amax B':>11}  {'B / A':>8}")
            for t, a, b, r in shown:
                lines.append(f"  {t:<{width}}  {a:11.6g}  {b:11.6g}  {r:8.4f}")
        if len(shown) < len(self.rows):
            lines.append(f"  ... {len(self.rows) - len(shown)} more (-v shows all)")
        lines += [f"  only in A: {t}" for t in self.only_a] + [f"  only in B: {t}" for t in self.only_b]
        return "\n".join(lines)


def _describe(f: RangeFile) -> str:
    extra = f", {len(f.per_channel)} per-channel tensor(s) not compared" if f.per_channel else ""
    return f"{f.path} ({f.header or f.kind}, {len(f.scales)} tensors{extra})"


def fold_copies(scales: dict[str, float]) -> dict[str, float]:
    """Reformat copies renamed to their tensor when the file has no line of its own for it and the copies agree."""
    out = {n: s for n, s in scales.items() if not REFORMAT.match(n)}
    copies: dict[str, dict[str, float]] = {}
    for name, s in scales.items():
        m = REFORMAT.match(name)
        if m:
            copies.setdefault(m.group("base"), {})[name] = s
    for base, found in copies.items():
        if base not in out and len(set(found.values())) == 1:
            out[base] = next(iter(found.values()))
        else:
            out.update(found)  # kept under their own names: nothing is merged by guess
    return out


def _ratio(a: float, b: float) -> float:
    if a == b:
        return 1.0
    return b / a if a > 0 else math.inf


def _badness(ratio: float) -> float:
    return math.inf if ratio <= 0 or not math.isfinite(ratio) else abs(math.log(ratio))


def compare_ranges(a: "str | Path", b: "str | Path") -> RangeComparison:
    """Compare the per-tensor ranges of two files (cache, ranges JSON or Q/DQ model, any mix)."""
    fa, fb = read_range_file(a), read_range_file(b)
    sa, sb = fold_copies(fa.scales), fold_copies(fb.scales)
    out = RangeComparison(fa, fb)
    for t in sa:
        if t in sb:
            amax_a, amax_b = sa[t] * 127.0, sb[t] * 127.0
            out.rows.append((t, amax_a, amax_b, _ratio(amax_a, amax_b)))
    out.rows.sort(key=lambda row: -_badness(row[3]))
    out.only_a = [t for t in sa if t not in sb]
    out.only_b = [t for t in sb if t not in sa]
    return out
