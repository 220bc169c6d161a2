"""Passes: optimisations of the quantized model that read calibration data (bias correction, weight
rounding), and :func:`quantized_model`, which applies them between the Q/DQ writer and the precision pass;
:func:`equalize`, which rescales the float model's channels before its statistics are collected."""

from .bias_correction import BIAS_SAMPLES, BiasShifts, correct_biases, measure_shifts, spread
from .equalization import equalize
from .quantized_model import QuantizedModel, quantized_model, scoring_model
from .weight_rounding import measure_corrections, round_weights

__all__ = ["BIAS_SAMPLES", "BiasShifts", "QuantizedModel", "correct_biases", "equalize", "measure_corrections",
           "measure_shifts", "quantized_model", "round_weights", "scoring_model", "spread"]
