"""ONNX Runtime runner that returns the model's activations batch by batch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import onnx

from ..errors import Int8CalibError
from ..util.log import logger
from .blocked import blocked_model
from .model import (
    calibratable_tensors, derivable_tensors, external_layout, runs_qdq_as_written, infer_types, input_dependencies,
    load_model, model_inputs, strip_folder_tags, uses_external_data,
)


def _expose(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``model`` whose graph outputs include every tensor in ``names``."""
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    strip_folder_tags(exposed)  # ONNX Runtime finds the files through the session's folder
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

    With ``derive=True`` (what collection uses), tensors whose histogram follows from
    another collected tensor's (``derived``: Relu / Clip(0, hi) outputs, see
    :func:`derivable_tensors`) are not exposed, and ``run`` does not return them.

    With ``any_layout=True`` (also for collection) an array ``run`` returns has the
    tensor's shape and values but possibly not its element order: on the CPU, tensors
    are read in ONNX Runtime's blocked channel layout, skipping the reorders that
    exposing them costs (:mod:`runner.blocked`). Only the batch axis keeps its meaning.
    """

    def __init__(
        self,
        model: "str | Path | onnx.ModelProto",
        providers: Sequence[str] | None = None,
        tensors: Sequence[str] | None = None,
        intra_op_threads: int = 0,
        derive: bool = False,
        any_layout: bool = False,
    ):
        import onnxruntime as ort

        self.model_path = Path(model) if not isinstance(model, onnx.ModelProto) else None
        # External weights stay on disk: only the graph is parsed and re-serialised, so
        # a model above protobuf's 2 GB limit loads, and ORT maps the weights itself.
        proto = load_model(model, load_external_data=False) if self.model_path is not None else model
        self.inputs = model_inputs(proto)
        types = infer_types(proto) if tensors is None or derive else None  # shape inference, once
        self.tensors = list(tensors) if tensors is not None else calibratable_tensors(proto, types)
        if tensors is not None:
            known = {o for n in proto.graph.node for o in n.output} | {i.name for i in proto.graph.input}
            unknown = [t for t in self.tensors if t not in known]
            if unknown:
                raise Int8CalibError(f"{self.model_path or 'model'}: no tensor(s) {unknown[:5]} in the graph")
        # {tensor: graph inputs it depends on}: a tensor computed from inputs without a batch axis
        # alone is one value per run, shared by every sample of the batch (collection weighs it).
        self.depends = input_dependencies(proto, self.tensors)
        self.derive = derive
        self.derived = derivable_tensors(proto, self.tensors, types=types) if derive else {}
        self.exposed = [t for t in self.tensors if t not in self.derived]
        available = ort.get_available_providers()
        providers = list(providers or _default_providers(available))
        self.providers = providers
        missing = [p for p in providers if p not in available]
        if missing:
            raise Int8CalibError(f"ONNX Runtime provider(s) {missing} not available; available: {available}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.log_severity_level = 3
        # Histogramming threads run beside ORT: idle ORT workers must sleep, not spin
        # (spinning cost ~40% throughput on 2 cores, measured in benchmarks/calibration_speed.py).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # The memory arena stays on: every run's exposed outputs (tens of MB per sample)
        # would otherwise be fresh pages, and the page faults cost more CPU than the
        # inference itself (measured: 2x CPU per batch on EfficientNet-Lite0). The
        # arena is bounded by the largest step, which --max-memory caps.
        # Initializers still in external data files (the model's, or those a copy of it made in memory
        # refers to: Q/DQ candidates, bias-correction twins) are mapped by ONNX Runtime from their files,
        # without pre-packing (a second copy of every MatMul weight in RAM); those spilled elsewhere are
        # handed over as arrays (benchmarks/large_model.py measures both).
        folder, self._external = external_layout(proto)
        if folder is not None:
            options.add_session_config_entry("session.model_external_initializers_file_folder_path", folder)
            options.add_session_config_entry("session.disable_prepacking", "1")
        if self._external:
            options.add_external_initializers(
                list(self._external), [ort.OrtValue.ortvalue_from_numpy(a) for a in self._external.values()])
        # ONNX Runtime 1.32's Q/DQ fusions (on from ORT_ENABLE_BASIC up) compute INT8 + FP16 models
        # wrongly on the CPU (EfficientNet-Lite0: -9.6 dB against 21.0 dB with them off, docs/qdq.md);
        # without them Q/DQ run as written, which is how TensorRT's arithmetic is emulated anyway.
        as_written = runs_qdq_as_written(proto)
        if as_written:
            options.add_session_config_entry("session.disable_quant_qdq", "1")
        self.any_layout = any_layout
        # CUDA provider and CuPy: outputs stay on the GPU (I/O binding) and are histogrammed there
        self.on_device = providers[0] == "CUDAExecutionProvider" and _gpu_kernels_available()
        self._options = options
        self._exposed_bytes = _expose(proto, self.exposed).SerializeToString()
        # {exposed name: (output name, channels)} for tensors read in the blocked layout
        self.blocked: dict[str, tuple[str, int]] = {}
        # Only convolutions run blocked: other models skip the extra optimisation pass.
        blockable = any_layout and providers == ["CPUExecutionProvider"] and not uses_external_data(proto) and not as_written
        blockable = blockable and any(n.op_type == "Conv" and n.domain in ("", "ai.onnx") for n in proto.graph.node)
        if not (blockable and self._start_blocked()):
            self._start(self._exposed_bytes)
        logger.debug(
            "runner: %d tensors exposed (%d in the blocked layout), %d derived from them, providers %s",
            len(self.exposed), len(self.blocked), len(self.derived), providers,
        )

    def shared_tensors(self, unbatched: "set[str] | frozenset[str]") -> set[str]:
        """The tensors computed from the inputs in ``unbatched`` (those without a batch axis) alone."""
        if not unbatched:
            return set()
        return {t for t, deps in self.depends.items() if deps and deps <= unbatched}

    def _start(self, model_bytes: bytes) -> None:
        import onnxruntime as ort

        try:
            self.session = ort.InferenceSession(model_bytes, self._options, providers=self.providers)
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
            where = self.model_path or "model"
            raise Int8CalibError(f"{where}: ONNX Runtime cannot load the model ({str(exc).splitlines()[0]})") from None
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._checked = not self.blocked

    def _start_blocked(self) -> bool:
        """A session reading tensors in the blocked layout; False (nothing changed) where
        ONNX Runtime uses none, or anything about it fails: the NCHW session follows."""
        import onnxruntime as ort

        try:
            blocked = blocked_model(self._exposed_bytes, self.exposed)
            if blocked is None:
                return False
            self._options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # optimized already
            self.session = ort.InferenceSession(blocked[0].SerializeToString(), self._options, providers=self.providers)
        except Exception as exc:  # an optimisation only: the plain session reports real problems
            logger.debug("runner: blocked layout not used (%s)", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            self._options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            return False
        self.blocked = blocked[1]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._checked = False
        return True

    def _fall_back(self, why: str) -> None:
        """Expose every tensor in NCHW again."""
        import onnxruntime as ort

        logger.debug("runner: %s; exposing tensors in NCHW", why)
        self.blocked = {}
        self._options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._start(self._exposed_bytes)

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch; returns the float activations of this batch by tensor name (CuPy
        arrays on the GPU when ``on_device``)."""
        if self.on_device:
            return self._run_on_device(feeds)
        try:
            outputs = self.session.run(self.output_names, dict(feeds))
        except Exception as exc:
            if not self._checked:  # the first run of the blocked-layout session
                self._fall_back(f"the blocked-layout session failed ({str(exc).splitlines()[0]})")
                return self.run(feeds)
            raise Int8CalibError(f"ONNX Runtime failed on a batch: {str(exc).splitlines()[0]}") from None
        by_name = dict(zip(self.output_names, outputs))
        for name, (output, channels) in self.blocked.items():
            by_name[name] = value = by_name.pop(output)
            if not self._checked and (value.ndim < 2 or value.shape[1] != channels):
                self._fall_back(f"blocked output of '{name}' has shape {value.shape}, expected {channels} channels")
                return self.run(feeds)
        self._checked = True
        # Graph order, float tensors only (a tensor shape inference could not type may be int).
        return {
            name: by_name[name]
            for name in self.exposed
            if isinstance(by_name.get(name), np.ndarray) and by_name[name].dtype.kind == "f"
        }


    def _run_on_device(self, feeds: Mapping[str, np.ndarray]) -> dict:
        """One batch with every output bound to the GPU: ONNX Runtime allocates them there and
        nothing is copied to the host; each comes back as a CuPy view that keeps its OrtValue."""
        import cupy

        binding = self.session.io_binding()
        for name, value in feeds.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(value))
        for name in self.output_names:
            binding.bind_output(name, "cuda")
        try:
            self.session.run_with_iobinding(binding)
        except Exception as exc:
            raise Int8CalibError(f"ONNX Runtime failed on a batch: {str(exc).splitlines()[0]}") from None
        out = {}
        for name, value in zip(self.output_names, binding.get_outputs()):
            dtype = _FLOAT_TYPES.get(value.data_type())
            if name in self.exposed and dtype is not None:
                size = int(np.prod(value.shape())) * np.dtype(dtype).itemsize
                memory = cupy.cuda.UnownedMemory(value.data_ptr(), size, value)
                out[name] = cupy.ndarray(tuple(value.shape()), dtype, cupy.cuda.MemoryPointer(memory, 0))
        return {name: out[name] for name in self.exposed if name in out}


_FLOAT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


def _default_providers(available: Sequence[str]) -> list[str]:
    """CUDA when onnxruntime-gpu and CuPy both see a GPU (said in the log), else the CPU."""
    if "CUDAExecutionProvider" in available and _gpu_kernels_available():
        logger.info("onnxruntime-gpu sees a GPU: calibrating on CUDA (--providers cpu to stay on the CPU)")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _gpu_kernels_available() -> bool:
    from ..stats import gpu

    return gpu.available()


@dataclass(frozen=True)
class RunnerSpec:
    """What a worker process needs to build its own :class:`ActivationRunner`."""

    model: str
    providers: tuple[str, ...] | None = None
    tensors: tuple[str, ...] | None = None
    derive: bool = False
    any_layout: bool = False

    @classmethod
    def of(cls, runner: "ActivationRunner | RunnerSpec") -> "RunnerSpec":
        if isinstance(runner, RunnerSpec):
            return runner
        if not isinstance(runner, ActivationRunner) or runner.model_path is None:
            raise Int8CalibError("collecting in several processes needs the model as a file path")
        return cls(str(runner.model_path), tuple(runner.providers), tuple(runner.tensors), runner.derive, runner.any_layout)

    def build(self, intra_op_threads: int = 0) -> ActivationRunner:
        return ActivationRunner(self.model, self.providers, self.tensors, intra_op_threads, self.derive, self.any_layout)

    __call__ = build  # a runner factory, as run_calibrator takes
