"""Accumulates histograms batch by batch (the calibrator contract: collect, reset, result)."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from ..errors import Int8CalibError
from .histogram import DEFAULT_MANTISSA_BITS, Statistics, TensorHistogram
from .kernels import accumulate


class StatsCollector:
    """Histograms |x| of every tensor it is given; never keeps the activations."""

    def __init__(self, mantissa_bits: int = DEFAULT_MANTISSA_BITS):
        if not 0 <= mantissa_bits <= 12:
            raise ValueError("mantissa_bits must be in 0..12")
        self.mantissa_bits = mantissa_bits
        self.reset()

    def reset(self) -> None:
        self._hists: dict[str, TensorHistogram] = {}
        self.batches = 0
        self.samples = 0

    def collect(self, activations: Mapping[str, np.ndarray], samples: int = 0) -> None:
        """Add one batch of activations; NaN or Inf in a tensor is an error naming it."""
        for name, value in activations.items():
            h = self._hists.get(name)
            if h is None:
                h = self._hists[name] = TensorHistogram.empty(self.mantissa_bits)
            before = h.nonfinite
            lo, hi = accumulate(value, h.counts, self.mantissa_bits)
            h.min, h.max = min(h.min, lo), max(h.max, hi)
            if h.nonfinite != before:
                raise Int8CalibError(
                    f"tensor '{name}': {h.nonfinite - before} NaN/Inf value(s) in calibration batch {self.batches} "
                    "(check the input data and preprocessing)"
                )
        self.batches += 1
        self.samples += samples

    def result(self, meta: dict | None = None) -> Statistics:
        return Statistics(dict(self._hists), {**(meta or {}), "samples": self.samples})
