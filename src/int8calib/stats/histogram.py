"""Per-tensor histograms keyed on the float32 bit pattern, and their re-binning."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import Int8CalibError
from .trt_histogram import TrtHistogram

DEFAULT_MANTISSA_BITS = 8  # 256 bins per power of two: relative bin width 0.39 %


def ordered_min(a: float, b: float) -> float:
    """min(a, b) with -0.0 below +0.0, so the result does not depend on the argument order."""
    return a if (a, math.copysign(1.0, a)) <= (b, math.copysign(1.0, b)) else b


def ordered_max(a: float, b: float) -> float:
    """max(a, b) with +0.0 above -0.0 (see :func:`ordered_min`)."""
    return a if (a, math.copysign(1.0, a)) >= (b, math.copysign(1.0, b)) else b


@functools.lru_cache(maxsize=4)
def fine_edges(mantissa_bits: int) -> np.ndarray:
    """Lower edges of every bit-pattern bin plus the upper edge of the last finite one (float64)."""
    n = 255 << mantissa_bits  # keys with exponent 255 hold inf / NaN
    bits = (np.arange(n + 1, dtype=np.uint64) << np.uint64(23 - mantissa_bits)).astype(np.uint32)
    edges = bits.view(np.float32).astype(np.float64)
    edges[-1] = float(np.finfo(np.float32).max)
    edges.setflags(write=False)
    return edges


# Statistics.meta key listing the tensors that are model constants (stats.constants), not activations.
CONSTANTS_META = "constants"

@dataclass
class TensorHistogram:
    """Counts of |x| by bit-pattern bin, plus the exact signed min and max.

    ``trt`` is TensorRT's own histogram of the same values (2048 bins, range from the first
    batch), which the TensorRT-faithful methods read; None where the data's order is not
    known (statistics merged from runs with different first batches, older files).
    """

    counts: np.ndarray  # int64 [256 << mantissa_bits]
    min: float = float("inf")
    max: float = float("-inf")
    mantissa_bits: int = DEFAULT_MANTISSA_BITS
    trt: TrtHistogram | None = None

    @classmethod
    def empty(cls, mantissa_bits: int = DEFAULT_MANTISSA_BITS) -> "TensorHistogram":
        return cls(np.zeros(256 << mantissa_bits, np.int64), mantissa_bits=mantissa_bits)

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    @property
    def amax(self) -> float:
        """The observed max |x| (0.0 for an empty or all-zero tensor)."""
        if self.min > self.max:
            return 0.0
        return float(max(abs(self.min), abs(self.max)))

    def merge(self, other: "TensorHistogram") -> "TensorHistogram":
        if other.mantissa_bits != self.mantissa_bits:
            raise Int8CalibError(
                f"cannot merge histograms of {self.mantissa_bits} and {other.mantissa_bits} mantissa bits"
            )
        trt = None
        if self.trt is not None and other.trt is not None:
            try:
                trt = self.trt.merge(other.trt)
            except ValueError:  # different first batches: TensorRT's order is lost
                trt = None
        return TensorHistogram(
            self.counts + other.counts, ordered_min(self.min, other.min), ordered_max(self.max, other.max),
            self.mantissa_bits, trt,
        )

    def pieces(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The non-empty finite bins as (lower edges, upper edges, counts as float64), ascending.

        Counts are spread uniformly within each bin. The bin holding the observed max is
        cut at that max, so a spike at the max (a Clip at 6.0) stays at the max instead of
        spreading beyond it.
        """
        finite = self.counts[: 255 << self.mantissa_bits]
        nz = np.flatnonzero(finite)
        edges = fine_edges(self.mantissa_bits)
        hi = np.minimum(edges[nz + 1], self.amax)
        lo = np.minimum(edges[nz], hi)
        return lo, hi, finite[nz].astype(np.float64)

    def cdf(self, points: np.ndarray) -> np.ndarray:
        """Number of values with |x| <= each point (counts uniform within each bin)."""
        return self.partial_moments(points, orders=(0,))[0]

    def partial_moments(self, points: np.ndarray, orders=(0, 1, 2)) -> list[np.ndarray]:
        """For each order k, the sum of |x|**k over the values with |x| <= each point.

        Exact for the piecewise-uniform density of :meth:`pieces`; order 0 is the cdf.
        """
        points = np.asarray(points, dtype=np.float64)
        lo, hi, c = self.pieces()
        if c.size == 0:
            return [np.zeros_like(points) for _ in orders]
        j = np.searchsorted(lo, points, side="right") - 1  # last bin starting at or below the point
        inside = j >= 0
        jj = np.clip(j, 0, c.size - 1)
        a, b = lo[jj], hi[jj]
        x = np.clip(points, a, b)
        width = b - a
        out = []
        for k in orders:
            # sum of |x|**k of each whole bin: c * (b^(k+1) - a^(k+1)) / ((k+1) (b - a)); a point mass if b == a
            with np.errstate(divide="ignore", invalid="ignore"):
                whole = np.where(hi > lo, (hi ** (k + 1) - lo ** (k + 1)) / ((k + 1) * (hi - lo)), lo**k) * c
                part = np.where(width > 0, (x ** (k + 1) - a ** (k + 1)) / ((k + 1) * width), a**k) * c[jj]
            if k == 0:  # the cdf: interpolate linearly, which is exact and cheaper
                with np.errstate(divide="ignore", invalid="ignore"):
                    part = np.where(width > 0, (x - a) / width, 1.0) * c[jj]
            cum = np.concatenate(([0.0], np.cumsum(whole)))
            out.append(np.where(inside, cum[jj] + part, 0.0))
        return out

    def quantile(self, fraction: float) -> float:
        """The |x| below which ``fraction`` of the values lie: the inverse of :meth:`cdf`."""
        lo, hi, c = self.pieces()
        if c.size == 0:
            return 0.0
        cum = np.cumsum(c)
        target = min(max(float(fraction), 0.0), 1.0) * cum[-1]
        j = min(int(np.searchsorted(cum, target, side="left")), c.size - 1)
        before = cum[j] - c[j]
        return float(lo[j] + (hi[j] - lo[j]) * min(max((target - before) / c[j], 0.0), 1.0))

    def linear(self, bins: int = 2048, upper: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Re-bin to ``bins`` linear bins over [0, upper] (default: the observed max |x|).

        Returns (counts as float64, edges). Mass above ``upper`` is not included.
        """
        upper = self.amax if upper is None else float(upper)
        edges = np.linspace(0.0, upper, bins + 1)
        if upper <= 0:
            return np.zeros(bins), edges
        cdf = self.cdf(edges)
        return np.diff(cdf), edges


@dataclass
class Statistics:
    """Histograms of every calibrated tensor, plus metadata on what produced them."""

    tensors: dict[str, TensorHistogram] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    @property
    def mantissa_bits(self) -> int:
        return next(iter(self.tensors.values())).mantissa_bits if self.tensors else DEFAULT_MANTISSA_BITS

    def __getitem__(self, name: str) -> TensorHistogram:
        return self.tensors[name]

    def __iter__(self):
        return iter(self.tensors)

    def __len__(self) -> int:
        return len(self.tensors)


def merge(a: Statistics, b: Statistics) -> Statistics:
    """Statistics of a and b's data together, b's batches after a's.

    The bit-pattern histograms merge exactly (associative and commutative). TensorRT's
    histograms (``TensorHistogram.trt``) merge exactly when both started from the same
    first batch, as ``--shard`` and ``--workers`` runs do; otherwise they are dropped.
    Tensor order follows ``a`` then tensors only ``b`` has. Metadata keeps ``a``'s
    entries; sample counts add up. The model's constants (``meta[CONSTANTS_META]``, computed
    from its weights, not from the data) are kept once, not added.
    """
    tensors = dict(a.tensors)
    constants = set(a.meta.get(CONSTANTS_META, ())) & set(b.meta.get(CONSTANTS_META, ()))
    for name, h in b.tensors.items():
        if name not in constants:
            tensors[name] = tensors[name].merge(h) if name in tensors else h
    meta = dict(a.meta)
    if "samples" in a.meta or "samples" in b.meta:
        meta["samples"] = int(a.meta.get("samples", 0)) + int(b.meta.get("samples", 0))
    return Statistics(tensors, meta)
