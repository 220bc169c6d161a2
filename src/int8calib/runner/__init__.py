"""The runner: executes the ONNX model in ONNX Runtime with activations exposed."""

from .model import InputInfo, calibratable_tensors, load_model, model_inputs
from .onnxrt import ActivationRunner, RunnerSpec

__all__ = ["ActivationRunner", "RunnerSpec", "InputInfo", "calibratable_tensors", "load_model", "model_inputs"]
