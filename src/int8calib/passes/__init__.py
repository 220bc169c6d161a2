"""Passes: optimisations of the quantized model that read calibration data (bias correction, weight rounding)."""

from .bias_correction import BIAS_SAMPLES, BiasShifts, correct_biases, measure_shifts, spread
from .weight_rounding import measure_corrections, round_weights

__all__ = ["BIAS_SAMPLES", "BiasShifts", "correct_biases", "measure_corrections", "measure_shifts", "round_weights", "spread"]
