"""Evaluation: how far a quantized model's outputs are from the float model's, and where.

    from int8calib.evaluate import evaluate
    result = evaluate("model.onnx", "model.qdq.onnx", "images/", "imagenet", labels="labels.tsv")
    result.to_dict()["top1_agreement"]
"""

from .compare import Evaluation, compare_models, evaluate, quantized_tensors
from .labels import read_labels
from .metrics import OutputComparison, PowerSum, sqnr_db, topk

__all__ = [
    "Evaluation", "OutputComparison", "PowerSum", "compare_models", "evaluate", "quantized_tensors",
    "read_labels", "sqnr_db", "topk",
]
