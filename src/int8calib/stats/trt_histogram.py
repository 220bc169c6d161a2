"""TensorRT's calibration histogram, kept beside the bit-pattern one for the faithful methods.

TensorRT's entropy calibrators histogram |x| of every tensor into 2048 linear bins over
[0, R). R starts as the largest |x| of the FIRST batch; when a later batch holds a larger
value, R doubles (adjacent bin pairs merge into the lower half) until it fits. A value goes
to bin floor(|x| / (R / 2048)) in float32, clamped to the top bin. The result depends on
the first batch and on the batch size, as TensorRT's does (docs/methods.md: what was
checked against caches TensorRT wrote, and what is assumed).

Doubling is exact: R / 2048 is scaled by a power of two, so floor(q) >> 1 == floor(q / 2)
for every value binned earlier. Only values that landed exactly at the upper edge (q = 2048
in float32, clamped into bin 2047) are the exception, which :meth:`TrtHistogram.double`
handles as TensorRT would: clamped in an earlier batch they stay clamped, clamped earlier
in the batch that doubles they move up (TensorRT doubles before binning a batch).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

BINS = 2048


def f32(value: float) -> float:
    """``value`` rounded to float32, as a Python float (inf past the float32 range)."""
    with np.errstate(over="ignore"):
        return float(np.float32(value))


@dataclass
class TrtHistogram:
    """2048 counts over [0, range); ``first_max`` is the first batch's max |x| (float32)."""

    counts: np.ndarray = field(default_factory=lambda: np.zeros(BINS, np.int64))
    first_max: float = 0.0
    range: float = 0.0
    edge: int = 0  # values of the current batch clamped from bin 2048 into 2047 (see double)

    @classmethod
    def starting_at(cls, first_max: float) -> "TrtHistogram":
        first_max = f32(abs(first_max))
        return cls(first_max=first_max, range=first_max)

    @property
    def width(self) -> float:
        return f32(self.range / BINS)

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def new_batch(self) -> None:
        """A new calibration batch begins: values clamped so far stay in the top bin."""
        self.edge = 0

    def double(self) -> None:
        """R -> 2R: bin pairs merge into the lower half."""
        merged = np.zeros_like(self.counts)
        merged[: BINS // 2] = self.counts[0::2] + self.counts[1::2]
        if self.edge:  # binned at q = 2048 this batch: TensorRT, doubling first, puts them at q = 1024
            merged[BINS // 2 - 1] -= self.edge
            merged[BINS // 2] += self.edge
            self.edge = 0
        self.counts = merged
        self.range = f32(self.range * 2)

    def fit(self, step_max: float) -> None:
        """Widen the range (doubling) until it holds ``step_max`` (>= 0)."""
        step_max = f32(step_max)
        if self.range == 0.0:
            # The first batch was all zeros (or empty): TensorRT's behaviour is not known; the
            # first non-zero values start the range, zeros counted so far stay in bin 0.
            if step_max > 0:
                self.range = self.first_max = step_max
            return
        while step_max > self.range:
            self.double()

    def count_clamped(self, clamped: int) -> None:
        """``clamped`` values of this batch landed at the upper edge (see :meth:`double`)."""
        self.edge += clamped

    def merge(self, later: "TrtHistogram") -> "TrtHistogram":
        """This histogram followed by ``later``'s batches, on the same starting range."""
        if later.first_max != self.first_max and self.total and later.total and self.range and later.range:
            raise ValueError("histograms started from different first batches")
        a, b = (self if self.range else later), (later if self.range else self)
        out = TrtHistogram(a.counts.copy(), a.first_max, a.range)
        if b.range == 0.0:  # only zeros
            out.counts[0] += b.total
            return out
        other = TrtHistogram(b.counts.copy(), b.first_max, b.range)
        while other.range < out.range:
            other.double()
        while out.range < other.range:
            out.double()
        out.counts += other.counts
        return out
