"""Passes: optimisations of the quantized model that read calibration data (bias correction)."""

from .bias_correction import BIAS_SAMPLES, BiasShifts, correct_biases, measure_shifts, spread

__all__ = ["BIAS_SAMPLES", "BiasShifts", "correct_biases", "measure_shifts", "spread"]
