"""Which model output to compare, and which metric it supports: checked before any data is read.

The default output is the first floating-point graph output: a model may list an integer
pass-through first (a transformer exported with its ``input_ids`` or argmax as output 0),
which has no quantization error to measure. ``--accuracy-budget`` needs scores [N, classes]
(rank 2, a fixed class axis of at least 2); any other float output takes ``--min-sqnr``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from ..errors import Int8CalibError


@dataclass(frozen=True)
class OutputInfo:
    name: str
    shape: tuple[int | str | None, ...] | None  # None: rank unknown
    dtype: np.dtype

    @property
    def is_float(self) -> bool:
        return self.dtype.kind == "f"

    @property
    def is_scores(self) -> bool:
        """[N, classes] with a fixed class axis of at least 2: top-1 agreement is defined."""
        return self.shape is not None and len(self.shape) == 2 and isinstance(self.shape[1], int) and self.shape[1] >= 2

    def describe(self) -> str:
        shape = "unknown shape" if self.shape is None else "[" + ", ".join("?" if d is None else str(d) for d in self.shape) + "]"
        return f"'{self.name}' ({self.dtype.name} {shape})"


def model_outputs(model: onnx.ModelProto) -> list[OutputInfo]:
    out = []
    for vi in model.graph.output:
        t = vi.type.tensor_type
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)) if t.elem_type else np.dtype(np.float32)
        shape = None
        if t.HasField("shape"):
            shape = tuple(
                int(d.dim_value) if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim
            )
        out.append(OutputInfo(vi.name, shape, dtype))
    return out


def choose_output(model: onnx.ModelProto, name: str | None = None, flag: str = "--output") -> OutputInfo:
    """The output ``name``, or the first floating-point output; a one-line error when there is none."""
    outputs = model_outputs(model)
    listed = ", ".join(o.describe() for o in outputs)
    if name is not None:
        found = next((o for o in outputs if o.name == name), None)
        if found is None:
            raise Int8CalibError(f"{flag} {name}: the model has no output '{name}' (outputs: {listed})")
        if not found.is_float:
            raise Int8CalibError(
                f"{flag} {name}: output {found.describe()} is not floating-point; quantization error is measured on float outputs"
            )
        return found
    found = next((o for o in outputs if o.is_float), None)
    if found is None:
        raise Int8CalibError(f"the model has no floating-point output to compare (outputs: {listed})")
    return found


def check_budget(
    model: onnx.ModelProto, output: str | None, accuracy_budget: float | None, min_sqnr: float | None
) -> OutputInfo | None:
    """Check the budget flags against the model's outputs (no data read); the output watched, or None without a budget."""
    if accuracy_budget is not None and min_sqnr is not None:
        raise Int8CalibError("give either --accuracy-budget (top-1 agreement) or --min-sqnr (output SQNR), not both")
    if accuracy_budget is None and min_sqnr is None:
        if output is not None:
            raise Int8CalibError(f"--output {output} applies to --method auto, --accuracy-budget or --min-sqnr, and none is given")
        return None
    if accuracy_budget is not None and accuracy_budget < 0:
        raise Int8CalibError(f"--accuracy-budget must be >= 0, got {accuracy_budget}")
    if min_sqnr is not None and not np.isfinite(min_sqnr):
        raise Int8CalibError(f"--min-sqnr must be a finite number of dB, got {min_sqnr}")
    info = choose_output(model, output)
    if accuracy_budget is not None and not info.is_scores:
        raise Int8CalibError(
            f"--accuracy-budget: output {info.describe()} is not [N, classes] scores, so top-1 agreement is "
            "undefined; use --min-sqnr DB (or --output NAME for a scores output)"
        )
    return info
