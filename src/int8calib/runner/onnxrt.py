"""ONNX Runtime runner that returns the model's activations batch by batch."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import onnx

from ..errors import Int8CalibError
from ..util.log import logger
from .model import calibratable_tensors, load_model, model_inputs


def _expose(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``model`` whose graph outputs include every tensor in ``names``."""
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    present = {o.name for o in exposed.graph.output}
    for name in names:
        if name not in present:
            # An untyped output lets ONNX Runtime take the type it computes.
            exposed.graph.output.append(onnx.ValueInfoProto(name=name))
    return exposed


class ActivationRunner:
    """Runs a model and returns ``{tensor name: array}`` for the calibratable tensors.

    Only the current batch's activations are alive at any time: the caller consumes
    them (histograms) before asking for the next batch.
    """

    def __init__(
        self,
        model: "str | Path | onnx.ModelProto",
        providers: Sequence[str] | None = None,
        tensors: Sequence[str] | None = None,
        intra_op_threads: int = 0,
    ):
        import onnxruntime as ort

        self.model_path = Path(model) if not isinstance(model, onnx.ModelProto) else None
        proto = load_model(model) if self.model_path is not None else model
        self.inputs = model_inputs(proto)
        self.tensors = list(tensors) if tensors is not None else calibratable_tensors(proto)
        available = ort.get_available_providers()
        providers = list(providers or ["CPUExecutionProvider"])
        missing = [p for p in providers if p not in available]
        if missing:
            raise Int8CalibError(f"ONNX Runtime provider(s) {missing} not available; available: {available}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.log_severity_level = 3
        exposed = _expose(proto, self.tensors)
        try:
            self.session = ort.InferenceSession(exposed.SerializeToString(), options, providers=providers)
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
            where = self.model_path or "model"
            raise Int8CalibError(f"{where}: ONNX Runtime cannot load the model ({str(exc).splitlines()[0]})") from None
        self.output_names = [o.name for o in self.session.get_outputs()]
        logger.debug("runner: %d tensors exposed, providers %s", len(self.tensors), providers)

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch; returns the float activations of this batch by tensor name."""
        try:
            outputs = self.session.run(self.output_names, dict(feeds))
        except Exception as exc:
            raise Int8CalibError(f"ONNX Runtime failed on a batch: {str(exc).splitlines()[0]}") from None
        by_name = dict(zip(self.output_names, outputs))
        # Graph order, float tensors only (a tensor shape inference could not type may be int).
        return {
            name: by_name[name]
            for name in self.tensors
            if isinstance(by_name.get(name), np.ndarray) and by_name[name].dtype.kind == "f"
        }

    def run_outputs(self, feeds: Mapping[str, np.ndarray], names: Iterable[str]) -> list[np.ndarray]:
        return self.session.run(list(names), dict(feeds))
