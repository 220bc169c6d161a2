"""Accuracy metrics of a quantized model's output against the float model's, batch by batch.

All metrics accumulate exactly over batches, so results do not depend on batch size:
sums of squares for SQNR, counts for top-k, a running max for the absolute error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


def sqnr_db(signal_power: float, noise_power: float) -> float:
    """10 log10(sum ref^2 / sum (ref - test)^2); inf when the two are identical."""
    if noise_power <= 0:
        return math.inf
    if signal_power <= 0:
        return -math.inf
    return 10.0 * math.log10(signal_power / noise_power)


def array_sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """SQNR of ``test`` against ``reference`` (whole arrays), in dB."""
    ref = np.asarray(reference, dtype=np.float64)
    return sqnr_db(float(np.sum(ref**2)), float(np.sum((ref - test) ** 2)))


def topk(logits: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest scores of each row, largest first (ties: lower index first)."""
    k = min(k, logits.shape[1])
    order = np.argsort(-logits, axis=1, kind="stable")
    return order[:, :k]


@dataclass
class PowerSum:
    """Signal and noise power of one tensor, summed over batches."""

    signal: float = 0.0
    noise: float = 0.0
    max_abs_error: float = 0.0
    elements: int = 0

    def add(self, ref: np.ndarray, test: np.ndarray) -> None:
        ref = np.asarray(ref, np.float64)
        diff = np.asarray(test, np.float64) - ref
        self.signal += float(np.sum(ref * ref))
        self.noise += float(np.sum(diff * diff))
        if diff.size:
            self.max_abs_error = max(self.max_abs_error, float(np.max(np.abs(diff))))
        self.elements += ref.size

    @property
    def sqnr_db(self) -> float:
        return sqnr_db(self.signal, self.noise)


_erf = np.vectorize(math.erf, otypes=[np.float64])


def flip_probability(ref: np.ndarray, test: np.ndarray, competitors: int = 5) -> np.ndarray:
    """Per row, the estimated chance that quantization noise changes the top-1 class.

    The noise of a row is modelled as independent Gaussian with the spread of ``test - ref``
    over its classes; class j overtakes the reference top-1 c with probability
    Phi(-(ref_c - ref_j) / (sigma sqrt 2)), summed over the ``competitors`` runners-up (capped
    at 1). Unlike the observed flips, which are 0 or 1 per sample, this uses every sample's
    margin, so a few hundred samples estimate a disagreement rate well below 1 %.
    """
    ref = np.asarray(ref, dtype=np.float64)
    sigma = np.std(np.asarray(test, dtype=np.float64) - ref, axis=1)
    ordered = -np.sort(-ref, axis=1)
    margins = ordered[:, :1] - ordered[:, 1 : 1 + competitors]
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(sigma[:, None] > 0, -margins / (sigma[:, None] * math.sqrt(2.0)), -np.inf)
    return np.minimum(1.0, np.sum(0.5 * (1.0 + _erf(z / math.sqrt(2.0))), axis=1))


@dataclass
class OutputComparison:
    """Top-k agreement, SQNR and error of a classifier's scores [N, classes], plus accuracy when labels are given."""

    n: int = 0
    top1_agree: int = 0
    top5_overlap: float = 0.0  # sum over samples of |top5(ref) & top5(test)| / 5
    expected_flips: float = 0.0  # sum over samples of flip_probability
    power: PowerSum = field(default_factory=PowerSum)
    labelled: int = 0
    correct: dict[str, int] = field(default_factory=lambda: {"fp32_top1": 0, "fp32_top5": 0, "int8_top1": 0, "int8_top5": 0})
    classifier: bool = True
    # per sample (row), in order: signal and noise power, and a classifier's flip probability; auto's
    # paired comparison of candidates reads them (evaluate.mixed.rank_candidates)
    rows: dict[str, list] = field(default_factory=lambda: {"signal": [], "noise": [], "flips": []})

    def add(self, ref: np.ndarray, test: np.ndarray, labels: np.ndarray | None = None) -> None:
        if ref.shape != test.shape:
            raise ValueError(f"output shapes differ: {ref.shape} vs {test.shape}")
        self.power.add(ref, test)
        self.n += ref.shape[0] if ref.ndim else 1
        if ref.ndim:
            axes = tuple(range(1, ref.ndim))
            ref64 = np.asarray(ref, np.float64)
            self.rows["signal"].append(np.sum(ref64 * ref64, axis=axes).reshape(-1))
            self.rows["noise"].append(np.sum(np.square(np.asarray(test, np.float64) - ref64), axis=axes).reshape(-1))
        if ref.ndim != 2 or ref.shape[1] < 2:
            self.classifier = False
            return
        ref_top, test_top = topk(ref, 5), topk(test, 5)
        self.top1_agree += int(np.sum(ref_top[:, 0] == test_top[:, 0]))
        flips = flip_probability(ref, test)
        self.rows["flips"].append(flips)
        self.expected_flips += float(np.sum(flips))
        k = ref_top.shape[1]
        for r, t in zip(ref_top, test_top):
            self.top5_overlap += len(set(r.tolist()) & set(t.tolist())) / k
        if labels is not None:
            labels = np.asarray(labels).reshape(-1, 1)
            self.labelled += labels.shape[0]
            for name, top in (("fp32", ref_top), ("int8", test_top)):
                self.correct[f"{name}_top1"] += int(np.sum(top[:, :1] == labels))
                self.correct[f"{name}_top5"] += int(np.sum(np.any(top == labels, axis=1)))

    def merge(self, other: "OutputComparison") -> None:
        """Add ``other``'s samples (the comparison of other data of the same output)."""
        self.n += other.n
        self.top1_agree += other.top1_agree
        self.top5_overlap += other.top5_overlap
        self.expected_flips += other.expected_flips
        self.power.signal += other.power.signal
        self.power.noise += other.power.noise
        self.power.max_abs_error = max(self.power.max_abs_error, other.power.max_abs_error)
        self.power.elements += other.power.elements
        self.labelled += other.labelled
        for key, count in other.correct.items():
            self.correct[key] += count
        for key, parts in other.rows.items():
            self.rows[key].extend(parts)
        self.classifier = self.classifier and other.classifier

    def per_sample(self, key: str) -> np.ndarray:
        """``rows[key]`` (signal, noise or flips) as one array, a value per sample in order."""
        parts = self.rows[key]
        return np.concatenate(parts) if parts else np.zeros(0)

    def to_dict(self) -> dict:
        """Percentages for the rates; None where a metric does not apply."""
        def pct(count: float, total: int) -> float | None:
            return round(100.0 * count / total, 4) if total and self.classifier else None

        sqnr = self.power.sqnr_db
        out = {
            "n": self.n,
            "top1_agreement": pct(self.top1_agree, self.n),
            "top5_overlap": pct(self.top5_overlap, self.n),
            "expected_top1_disagreement": pct(self.expected_flips, self.n),
            "sqnr_db": round(sqnr, 4) if math.isfinite(sqnr) else None,
            "max_abs_error": self.power.max_abs_error,
        }
        for key, count in self.correct.items():
            out[key] = pct(count, self.labelled)
        return out
