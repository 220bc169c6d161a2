"""Reading an ONNX model and deciding which of its tensors need a dynamic range."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
from onnx import TensorProto

from ..errors import Int8CalibError
from ..stats.histogram import DEFAULT_MANTISSA_BITS

FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE}

# Nodes whose outputs are not activations: they compute shapes, indices or constants.
_NON_ACTIVATION_OPS = {"Constant", "ConstantOfShape", "Shape", "Size", "Range", "NonZero", "ArgMax", "ArgMin"}


@dataclass(frozen=True)
class InputInfo:
    name: str
    shape: tuple[int | str | None, ...]  # ints for fixed dims, str / None for symbolic ones
    dtype: np.dtype
    batch_axis: int | None = 0  # None: no batch axis (a scalar, state shared by the batch): fed as it is

    @property
    def fixed_batch(self) -> int | None:
        """The batch size the model insists on, or None when the batch axis is dynamic (or there is none)."""
        if self.batch_axis is None or len(self.shape) <= self.batch_axis:
            return None
        dim = self.shape[self.batch_axis]
        return dim if isinstance(dim, int) and dim > 0 else None

    @property
    def layout(self) -> tuple[int, int | None]:
        """(rank, batch axis): what reading a tensor file for this input needs (sources.resolve)."""
        return len(self.shape), self.batch_axis

    def sample_shape(self) -> tuple[int | str | None, ...]:
        """The shape of one sample: the input's shape without its batch axis."""
        if self.batch_axis is None:
            return self.shape
        return self.shape[: self.batch_axis] + self.shape[self.batch_axis + 1 :]


def _dynamic(dim) -> bool:
    return not (isinstance(dim, int) and dim > 0)


def batch_axes(shapes: Sequence[tuple | None]) -> list[int | None]:
    """The batch axis of each input, from the model (docs/inputs.md):

    1. rank 0 (a scalar such as a sample rate): none, fed as it is;
    2. unknown rank, or a dynamic first axis: axis 0;
    3. when no input has a dynamic first axis (a fixed-batch model): axis 0 of every input;
    4. otherwise an input whose first axis is fixed has as batch axis its dynamic axis named like
       another input's batch axis (``[2, batch, 128]`` beside ``[batch, T]``), or else its only
       dynamic axis when that one is unnamed (``[2, ?, 128]``); with neither it has none
       (state shared by the batch, a fixed table): fed as it is.
    """
    any_dynamic_first = any(s and _dynamic(s[0]) for s in shapes)
    symbols = {s[0] for s in shapes if s and isinstance(s[0], str) and s[0]}
    axes: list[int | None] = []
    for shape in shapes:
        if shape is None:
            axes.append(0)
        elif not shape:
            axes.append(None)
        elif _dynamic(shape[0]) or not any_dynamic_first:
            axes.append(0)
        else:
            named = [a for a, d in enumerate(shape) if isinstance(d, str) and d in symbols]
            dynamic = [a for a, d in enumerate(shape) if _dynamic(d)]
            if named:
                axes.append(named[0])
            elif len(dynamic) == 1 and not (isinstance(shape[dynamic[0]], str) and shape[dynamic[0]]):
                axes.append(dynamic[0])
            else:
                axes.append(None)
    return axes


def declare_batch_axes(inputs: Sequence[InputInfo], declared: "dict[str, int | None] | None") -> list[InputInfo]:
    """``inputs`` with the batch axes the user declared (``--batch-axis NAME=AXIS|none``)."""
    from dataclasses import replace

    declared = dict(declared or {})
    names = {i.name for i in inputs}
    for name, axis in declared.items():
        if name not in names:
            raise Int8CalibError(f"--batch-axis {name}={axis}: the model has no input '{name}' (inputs: {', '.join(sorted(names))})")
    out = []
    for info in inputs:
        if info.name in declared:
            axis = declared[info.name]
            if axis is not None:
                rank = len(info.shape)
                if not -rank <= axis < rank:
                    raise Int8CalibError(
                        f"--batch-axis {info.name}={axis}: input '{info.name}' has rank {rank} (shape {list(info.shape)})"
                    )
                axis %= rank
            info = replace(info, batch_axis=axis)
        out.append(info)
    return out


def parse_batch_axes(items: "Sequence[str] | None") -> dict[str, int | None]:
    """['state=1', 'sr=none'] -> {'state': 1, 'sr': None}."""
    out: dict[str, int | None] = {}
    for item in items or ():
        name, sep, axis = item.rpartition("=")
        if not sep or not name:
            raise Int8CalibError(f"--batch-axis {item}: expected NAME=AXIS or NAME=none")
        if axis.strip().lower() == "none":
            out[name] = None
            continue
        try:
            out[name] = int(axis)
        except ValueError:
            raise Int8CalibError(f"--batch-axis {item}: the axis must be an integer or none") from None
    return out


def external_data_files(model: onnx.ModelProto, path: str | Path) -> list[Path]:
    """The external data files of ``model`` (loaded without them) stored beside ``path``.

    Raises a one-line error when one points outside the model's folder (an absolute
    path or ``..``: a model file must not make int8calib read arbitrary files) or is missing.
    """
    path = Path(path)
    folder = path.parent.resolve()
    files: dict[str, Path] = {}
    for t in _all_tensors(model):
        if t.data_location != TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in t.external_data if e.key == "location"), "")
        if location in files:
            continue
        target = (folder / location).resolve()
        if not location or Path(location).is_absolute() or not target.is_relative_to(folder):
            raise Int8CalibError(
                f"{path}: initializer '{t.name}' points to external data {location!r} outside the model's folder; refusing to read it"
            )
        if not target.is_file():
            raise Int8CalibError(f"{path}: external data file {location!r} of initializer '{t.name}' not found beside the model")
        files[location] = target
    return [files[k] for k in sorted(files)]


def _all_tensors(model: onnx.ModelProto):
    """Initializers and tensor attributes (Constant nodes), sub-graphs included."""
    graphs = [model.graph]
    while graphs:
        g = graphs.pop()
        yield from g.initializer
        for node in g.node:
            for attr in node.attribute:
                if attr.HasField("t"):
                    yield attr.t
                yield from attr.tensors
                if attr.HasField("g"):
                    graphs.append(attr.g)
                graphs.extend(attr.graphs)


def external_info(t: TensorProto) -> dict[str, str]:
    return {e.key: e.value for e in t.external_data}


def tensor_array(t: TensorProto) -> np.ndarray:
    """The values of ``t``: a read-only memory map where it lies in an external data file
    (tagged by :func:`load_model`), otherwise read from the proto."""
    if t.data_location != TensorProto.EXTERNAL:
        return onnx.numpy_helper.to_array(t)
    info = external_info(t)
    if FOLDER_KEY not in info:
        raise Int8CalibError(f"initializer '{t.name}': external data without its folder (load the model with load_model)")
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type))
    shape = tuple(int(d) for d in t.dims)
    count = int(np.prod(shape, dtype=np.int64))
    if count == 0:
        return np.zeros(shape, dtype)
    mapped = np.memmap(Path(info[FOLDER_KEY]) / info["location"], dtype=dtype, mode="r",
                       offset=int(info.get("offset", 0)), shape=shape)
    return mapped if mapped.nbytes >= 4096 else np.array(mapped)  # small ones: read (memmap scalars lose their shape)


def refer_to_file(t: TensorProto, location: str, offset: int, length: int, folder: str | Path | None = None) -> None:
    """Make ``t`` an external tensor at ``location`` (relative to the model, or to ``folder``, which
    is then recorded under :data:`FOLDER_KEY`), dropping any values it held."""
    for name in ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data", "string_data"):
        t.ClearField(name)
    del t.external_data[:]
    t.data_location = TensorProto.EXTERNAL
    entries = {"location": location, "offset": str(offset), "length": str(length)}
    if folder is not None:
        entries[FOLDER_KEY] = str(Path(folder).resolve())
    for key, value in entries.items():
        entry = t.external_data.add()
        entry.key, entry.value = key, value


def spill_tensor(values: np.ndarray, name: str, folder: str | Path) -> TensorProto:
    """An initializer whose ``values`` are written to a file of their own in ``folder`` (which
    must outlive its use) and mapped from there, instead of being held in memory."""
    values = np.ascontiguousarray(values)
    filename = f"{len(list(Path(folder).iterdir()))}.bin"
    values.tofile(Path(folder) / filename)
    t = TensorProto(name=name, data_type=onnx.helper.np_dtype_to_tensor_dtype(values.dtype), dims=values.shape)
    refer_to_file(t, filename, 0, values.nbytes, folder)
    return t


def external_layout(model: onnx.ModelProto) -> tuple[str | None, dict[str, np.ndarray]]:
    """Where the graph's external initializers lie, for ONNX Runtime: the folder holding most of their
    bytes (ORT maps those files itself: no copy in RAM) and {name: memory map} of those in other folders
    (spilled temporaries, handed over as arrays, which ORT copies)."""
    tagged = [(t, external_info(t)) for t in model.graph.initializer
              if t.data_location == TensorProto.EXTERNAL and FOLDER_KEY in external_info(t)]
    if not tagged:
        return None, {}
    size: dict[str, int] = {}
    for t, info in tagged:
        size[info[FOLDER_KEY]] = size.get(info[FOLDER_KEY], 0) + int(info.get("length", 0))
    main = max(size, key=size.get)
    return main, {t.name: tensor_array(t) for t, info in tagged if info[FOLDER_KEY] != main}


def strip_folder_tags(model: onnx.ModelProto) -> None:
    """Drop :data:`FOLDER_KEY` from every tensor of ``model`` (a copy about to go to ONNX Runtime or a file)."""
    for t in _all_tensors(model):
        keep = [(e.key, e.value) for e in t.external_data if e.key != FOLDER_KEY]
        if len(keep) != len(t.external_data):
            del t.external_data[:]
            for key, value in keep:
                entry = t.external_data.add()
                entry.key, entry.value = key, value


# A model carrying this metadata key (passes.quantized_model.scoring_model) emulates TensorRT's Q/DQ
# arithmetic in float32: ONNX Runtime must run its Q/DQ nodes as written, not fuse them into its own
# int8 kernels (with the weights already dequantized its fusions changed the output: 8 dB against 17.5).
EMULATE_QDQ_KEY = "int8calib_emulate_qdq"


def runs_qdq_as_written(model: onnx.ModelProto) -> bool:
    """Whether ONNX Runtime's Q/DQ fusions must stay off for ``model``: INT8 + FP16 models (its fusions
    compute them wrongly on the CPU) and scoring models that emulate Q/DQ in float32."""
    return has_low_precision_qdq(model) or any(p.key == EMULATE_QDQ_KEY for p in model.metadata_props)


def has_low_precision_qdq(model: onnx.ModelProto) -> bool:
    """Whether ``model`` has Q/DQ nodes with float16 / bfloat16 scales (an INT8 + FP16 model)."""
    low = {i.name for i in model.graph.initializer if i.data_type in (TensorProto.FLOAT16, TensorProto.BFLOAT16)}
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 1 and n.input[1] in low
               for n in model.graph.node)


def uses_external_data(model: onnx.ModelProto) -> bool:
    return any(t.data_location == TensorProto.EXTERNAL for t in _all_tensors(model))


# Initializers left in their external data file carry its folder under this key (ONNX Runtime ignores
# keys it does not know, onnx's own readers refuse absolute locations): tensor_array() and the runner
# read them where they lie, and write_model() copies them, so a model over 2 GB is never held twice.
FOLDER_KEY = "int8calib_folder"


def load_model(path: str | Path, load_external_data: bool = True) -> onnx.ModelProto:
    """Load an ONNX file, raising a one-line error naming it when it is not a usable model.

    With ``load_external_data=False`` external initializers stay on disk, each tagged with its
    folder (:data:`FOLDER_KEY`): :func:`tensor_array` maps them on demand."""
    path = Path(path)
    if not path.is_file():
        raise Int8CalibError(f"{path}: model file not found" if not path.exists() else f"{path}: not a model file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, OSError, ValueError, ... for bad files
        raise Int8CalibError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc})".splitlines()[0]) from None
    if not model.graph.node:
        raise Int8CalibError(f"{path}: not an ONNX model (no graph nodes)")
    external = external_data_files(model, path)
    if external and not load_external_data:
        folder = str(path.resolve().parent)
        for t in _all_tensors(model):
            if t.data_location == TensorProto.EXTERNAL and not any(e.key == FOLDER_KEY for e in t.external_data):
                entry = t.external_data.add()
                entry.key, entry.value = FOLDER_KEY, folder
    if external and load_external_data:
        from onnx.external_data_helper import load_external_data_for_model

        try:
            load_external_data_for_model(model, str(path.parent))
        except Exception as exc:
            raise Int8CalibError(f"{path}: cannot read external data ({type(exc).__name__}: {exc})".splitlines()[0]) from None
    return model


def _dims(value_info: onnx.ValueInfoProto) -> tuple[int | str | None, ...]:
    dims = []
    for d in value_info.type.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return tuple(dims)


def model_inputs(model: onnx.ModelProto) -> list[InputInfo]:
    """Graph inputs that are fed at run time (initializers listed as inputs excluded)."""
    initializers = {i.name for i in model.graph.initializer}
    fed = [vi for vi in model.graph.input if vi.name not in initializers]
    shapes = [_dims(vi) if vi.type.tensor_type.HasField("shape") else None for vi in fed]
    infos = []
    for vi, axis in zip(fed, batch_axes(shapes)):
        elem = vi.type.tensor_type.elem_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(elem) if elem else np.dtype(np.float32)
        infos.append(InputInfo(vi.name, _dims(vi), np.dtype(dtype), axis))
    return infos


def infer_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor that shape inference can type (``types`` for the functions below)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # inference is best-effort; untyped tensors are checked at run time
        inferred = model
    types = {}
    g = inferred.graph
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            types[vi.name] = vi.type.tensor_type.elem_type
    for init in g.initializer:
        types[init.name] = init.data_type
    return types


def calibratable_tensors(model: onnx.ModelProto, types: dict[str, int] | None = None) -> list[str]:
    """Float activation tensors in graph order: the graph inputs and every node output
    that depends on a graph input (constant sub-graphs and shape arithmetic excluded).

    These are the tensors TensorRT's calibration cache holds a scale for.
    """
    graph = model.graph
    types = infer_types(model) if types is None else types
    fed = {i.name for i in model_inputs(model)}
    dynamic = set(fed)  # tensors that depend on a graph input
    names: list[str] = [n for n in fed if types.get(n, TensorProto.FLOAT) in FLOAT_TYPES]
    names = [vi.name for vi in graph.input if vi.name in names]
    for node in graph.node:
        if not any(i in dynamic for i in node.input if i):
            continue
        for out in node.output:
            if not out:
                continue
            dynamic.add(out)
            if node.op_type in _NON_ACTIVATION_OPS:
                continue
            if types.get(out, TensorProto.FLOAT) in FLOAT_TYPES:
                names.append(out)
    # Keep graph order, drop duplicates (a graph input may also be listed as an output).
    seen: set[str] = set()
    return [n for n in names if not (n in seen or seen.add(n))]


def input_dependencies(model: onnx.ModelProto, names: Sequence[str]) -> dict[str, frozenset[str]]:
    """{tensor: the graph inputs it depends on} for ``names`` (top graph; sub-graphs count as their node's inputs)."""
    fed = {i.name for i in model_inputs(model)}
    deps: dict[str, frozenset[str]] = {name: frozenset({name}) for name in fed}
    for node in model.graph.node:
        inner = set()
        for attr in node.attribute:  # tensors an If / Loop body reads from the outer scope
            for g in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                inner.update(i for n in g.node for i in n.input)
        found = frozenset().union(*(deps.get(i, frozenset()) for i in list(node.input) + sorted(inner) if i))
        for out in node.output:
            if out:
                deps[out] = found
    return {name: deps.get(name, frozenset()) for name in names}


def model_fingerprint(path: str | Path) -> str:
    """SHA-256 over the model file and its external data files (graph and weights)."""
    path = Path(path)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    model = load_model(path, load_external_data=False)
    for ext in external_data_files(model, path):
        h.update(ext.relative_to(path.parent.resolve()).as_posix().encode())
        with open(ext, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def opset_of(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _scalar_constants(model: onnx.ModelProto, names: set[str]) -> dict[str, np.ndarray]:
    """The float32 values of the initializers and Constant nodes named in ``names`` (top graph)."""
    from onnx import numpy_helper

    found = {}
    for init in model.graph.initializer:
        if init.name in names and init.data_type == TensorProto.FLOAT and init.data_location != TensorProto.EXTERNAL:
            found[init.name] = numpy_helper.to_array(init)
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output[0] in names:
            for attr in node.attribute:
                if attr.name == "value" and attr.t.data_type == TensorProto.FLOAT:
                    found[node.output[0]] = numpy_helper.to_array(attr.t)
                elif attr.name == "value_float":
                    found[node.output[0]] = np.array(attr.f, np.float32)
    return {k: v for k, v in found.items() if v.size == 1}


def derivable_tensors(
    model: onnx.ModelProto, collected: Sequence[str], mantissa_bits: int = DEFAULT_MANTISSA_BITS,
    types: dict[str, int] | None = None,
) -> dict[str, tuple[str, float]]:
    """``{output: (input, hi)}`` for the tensors in ``collected`` whose histogram follows
    exactly from their input's (stats/derive.py): outputs of Relu (hi = inf) and of
    Clip(min=0, max=hi) with constant bounds, hi on a bit-pattern bin's lower edge (or
    no max: hi = inf), whose float32 input is in ``collected`` too. Graph order.
    """
    from ..stats.derive import on_bin_edge

    wanted = set(collected)
    graph = model.graph
    types = infer_types(model) if types is None else types
    opset = opset_of(model)
    clips = [n for n in graph.node if n.op_type == "Clip" and n.domain in ("", "ai.onnx")]
    constants = _scalar_constants(model, {i for n in clips for i in n.input[1:] if i}) if opset >= 11 else {}
    derived: dict[str, tuple[str, float]] = {}
    for node in graph.node:
        if node.domain not in ("", "ai.onnx") or node.op_type not in ("Relu", "Clip"):
            continue
        if not node.input or node.input[0] not in wanted or node.output[0] not in wanted:
            continue
        if node.input[0] in derived:  # Relu after Relu: the input's signs are not counted, it is not run
            continue
        if types.get(node.input[0]) != TensorProto.FLOAT:
            continue
        if node.op_type == "Relu":
            derived[node.output[0]] = (node.input[0], math.inf)
            continue
        if opset < 11:
            attrs = {a.name: a.f for a in node.attribute}
            low, hi = attrs.get("min"), attrs.get("max", math.inf)  # no min: -FLT_MAX, not derivable
        else:
            bounds = list(node.input[1:3]) + [""] * (3 - len(node.input))
            if not bounds[0] or bounds[0] not in constants or (bounds[1] and bounds[1] not in constants):
                continue
            low = float(constants[bounds[0]].reshape(()))
            hi = float(constants[bounds[1]].reshape(())) if bounds[1] else math.inf
        if low == 0.0 and (hi == math.inf or on_bin_edge(hi, mantissa_bits)):
            derived[node.output[0]] = (node.input[0], hi)
    return derived
