"""Which quantizable tensors of a model a cache leaves without a range (``inspect CACHE --model M``).

TensorRT runs a MatMul, Gemm or convolution in INT8 only when each tensor it reads has a
range: its activation inputs, and the Constant layers TensorRT's parser makes of constant
operands of matrix multiplies and element-wise layers (:mod:`int8calib.stats.constants`).
Any one missing and the layer falls back to FP16/FP32 ("Missing scale and zero-point for
tensor ..."). The file's lines are matched to the model with :func:`read.match_names`
(exact names, agreeing reformat copies, TensorRT 10's ``<constant>_output``).

TensorRT 8.x numbers its constant layers (``(Unnamed Layer* N) [Constant]_output``), so no
constant of an 8.x cache can be matched by name: under an 8.x header every constant operand is
listed, with that reason (``int8calib complete-cache`` writes them where TensorRT runs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

if TYPE_CHECKING:
    import onnx

# Layers whose activation inputs need a range to run in INT8 (a convolution's kernel and bias are weights).
ACTIVATION_CONSUMERS = {"MatMul": None, "Gemm": None, "Conv": 1, "ConvTranspose": 1}  # op -> inputs read (None: all)


@dataclass(frozen=True)
class Unranged:
    tensor: str  # the name a cache line would need
    reader: str  # "MatMul '/attn/MatMul'"
    why: str  # "no line", "TensorRT 8.x numbers constant layers", ...

    def to_dict(self) -> dict:
        return {"tensor": self.tensor, "read_by": self.reader, "why": self.why}


def unranged_tensors(model: "onnx.ModelProto", scales: Mapping[str, float], header_version: int | None = None) -> list[Unranged]:
    """Every quantizable tensor of ``model`` without a usable range in ``scales`` (a file's lines):
    activations in graph order, then constants."""
    import math

    from ..runner.model import calibratable_tensors
    from ..stats.constants import constant_inputs
    from ..writers.cache import names_constants
    from .read import model_names, match_names

    activations = set(calibratable_tensors(model))
    tensors, constants = model_names(model)
    match = match_names(scales, tensors, constants)
    ranged = {t for t, s in match.scales.items() if math.isfinite(s)}
    numbered = header_version is not None and not names_constants(header_version)  # TensorRT 8.x or older
    if not numbered:  # TensorRT 10's <constant>_output; an 8.x network has no tensor of that name
        ranged |= {c for c in match.constants if math.isfinite(scales[c])}
    unnamed = sum(1 for n in scales if n.startswith("(Unnamed Layer") and n.endswith("[Constant]_output"))
    out: dict[str, Unranged] = {}
    for node in model.graph.node:
        read = ACTIVATION_CONSUMERS.get(node.op_type, 0)
        for name in node.input if read is None else node.input[:read]:
            if name in activations and name not in ranged and name not in out:
                out[name] = Unranged(name, _reader(node), "an infinite scale" if name in match.scales else "no line")
    for trt_name, _, node in constant_inputs(model):
        if trt_name not in ranged:
            why = (f"TensorRT 8.x names it '(Unnamed Layer* N) [Constant]_output' (the file has {unnamed} such line(s)); "
                   "which N only TensorRT's parser knows (int8calib complete-cache)") if numbered else "no line"
            out[trt_name] = Unranged(trt_name, _reader(node), why)
    return list(out.values())


def _reader(node) -> str:
    return f"{node.op_type} '{node.name or node.output[0]}'"

