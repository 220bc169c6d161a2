"""Passes: optimisations of the quantized model that read calibration data (bias correction)."""

from .bias_correction import BiasShifts, correct_biases, corrected_layers, measure_shifts

__all__ = ["BiasShifts", "correct_biases", "corrected_layers", "measure_shifts"]
