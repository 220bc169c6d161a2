"""The runner: executes the ONNX model in ONNX Runtime with activations exposed."""

from .model import InputInfo, calibratable_tensors, load_model, model_inputs
from .onnxrt import ActivationRunner

__all__ = ["ActivationRunner", "InputInfo", "calibratable_tensors", "load_model", "model_inputs"]
