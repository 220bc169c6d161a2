"""A minimal stand-in for the ``tensorrt`` module, enough to drive int8calib's adapter.

It imitates what TensorRT does with a calibrator during ``build_serialized_network``:
read the cache first; if there is none, call ``get_batch`` until it returns None, read
each batch back from device memory, and write a cache with the calibrator's algorithm.
Device memory is :class:`FakeBackend` (a dict from fake addresses to arrays). Every call
is appended to ``module.calls`` so tests can check the order.
"""

from __future__ import annotations

import enum
import itertools
import json
import struct
import types

import numpy as np
import onnx


class FakeBackend:
    """Device memory as {address: bytes}; upload reuses the buffer like the real backends."""

    name = "fake"

    def __init__(self):
        self.memory: dict[int, bytearray] = {}
        self.freed: list[int] = []
        self._next = itertools.count(0x1000, 0x1000)

    class Buffer:
        def __init__(self, ptr, nbytes):
            self.ptr, self.nbytes = ptr, nbytes

    def upload(self, host, buffer=None):
        host = np.ascontiguousarray(host)
        if buffer is None or buffer.nbytes < host.nbytes:
            buffer = self.Buffer(next(self._next), host.nbytes)
            self.memory[buffer.ptr] = bytearray(host.nbytes)
        self.memory[buffer.ptr][: host.nbytes] = host.tobytes()
        return buffer

    def download(self, ptr, shape, dtype):
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        return np.frombuffer(bytes(self.memory[ptr][:nbytes]), dtype).reshape(shape).copy()

    def free(self, buffer):
        self.memory.pop(buffer.ptr)
        self.freed.append(buffer.ptr)


def make(version: str = "10.0.1", calibrators: bool = True, fast_int8: bool = True, fast_fp16: bool = True):
    """A fresh fake ``tensorrt`` module."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.calls = []
    trt.builds = []

    class CalibrationAlgoType(enum.IntEnum):
        LEGACY_CALIBRATION = 0
        ENTROPY_CALIBRATION = 1
        ENTROPY_CALIBRATION_2 = 2
        MINMAX_CALIBRATION = 3

    trt.CalibrationAlgoType = CalibrationAlgoType

    class _Base:
        def __init__(self):
            self._base_initialised = True  # pybind11 refuses subclasses that skip this

    if calibrators:
        for name in ("IInt8Calibrator", "IInt8EntropyCalibrator2", "IInt8EntropyCalibrator",
                     "IInt8MinMaxCalibrator", "IInt8LegacyCalibrator"):
            setattr(trt, name, type(name, (_Base,), {}))

    class BuilderFlag(enum.IntEnum):
        FP16 = 0
        INT8 = 1
        PREFER_PRECISION_CONSTRAINTS = 2
        OBEY_PRECISION_CONSTRAINTS = 3

    class NetworkDefinitionCreationFlag(enum.IntEnum):
        EXPLICIT_BATCH = 0
        STRONGLY_TYPED = 1

    trt.BuilderFlag = BuilderFlag
    trt.NetworkDefinitionCreationFlag = NetworkDefinitionCreationFlag
    trt.ProfilingVerbosity = enum.IntEnum("ProfilingVerbosity", "LAYER_NAMES_ONLY NONE DETAILED")
    trt.LayerInformationFormat = enum.IntEnum("LayerInformationFormat", "ONELINE JSON")
    trt.MemoryPoolType = enum.IntEnum("MemoryPoolType", "WORKSPACE")

    class Logger:
        WARNING = 2

        def __init__(self, severity=2):
            self.severity = severity

    trt.Logger = Logger

    # Data types as numpy dtypes (the real DataType is an enum): what tensors of this stand-in carry.
    trt.DataType = types.SimpleNamespace(FLOAT=np.dtype(np.float32), HALF=np.dtype(np.float16),
                                         INT32=np.dtype(np.int32), INT64=np.dtype(np.int64), BOOL=np.dtype(np.bool_))
    trt.LayerType = enum.Enum("LayerType", "CONSTANT SHUFFLE IDENTITY CONVOLUTION ACTIVATION POOLING MATRIX_MULTIPLY "
                                           "ELEMENTWISE SOFTMAX TOPK UNARY")

    class Tensor:
        def __init__(self, name, shape, dtype):
            self.name, self.shape, self.dtype = name, shape, dtype
            self.dynamic_range = None

        def set_dynamic_range(self, low, high):
            self.dynamic_range = (low, high)
            return True

    trt.ITensor = Tensor

    class Layer:
        def __init__(self, type_, name, inputs, outputs, weights=None):
            self.type, self.name, self.inputs, self.outputs = type_, name, inputs, outputs
            if weights is not None:
                self.weights = weights

        num_inputs = property(lambda self: len(self.inputs))
        num_outputs = property(lambda self: len(self.outputs))

        def get_input(self, i):
            return self.inputs[i]

        def get_output(self, i):
            return self.outputs[i]

    class Network:
        def __init__(self, flags):
            self.flags = flags
            self.inputs = []
            self.layers = []

        @property
        def num_inputs(self):
            return len(self.inputs)

        def get_input(self, i):
            return self.inputs[i]

        @property
        def num_layers(self):
            return len(self.layers)

        def get_layer(self, i):
            return self.layers[i]

        def add_layer(self, type_, shown, name, inputs, outputs, weights=None):
            """A layer as TensorRT names it: unnamed layers are '(Unnamed Layer* N) [Type]', outputs
            '<layer>_output' unless given (the ONNX parser names them after the ONNX tensors)."""
            name = name or f"(Unnamed Layer* {len(self.layers)}) [{shown}]"
            outputs = [o if isinstance(o, Tensor) else Tensor(o or f"{name}_output", (), np.dtype(np.float32)) for o in outputs]
            self.layers.append(Layer(type_, name, inputs, outputs, weights))
            return self.layers[-1]

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, low, opt, high):
            self.shapes[name] = (tuple(low), tuple(opt), tuple(high))

    class Config:
        def __init__(self):
            self.flags = set()
            self.int8_calibrator = None
            self.calibration_profile = None
            self.profiles = []
            self.profiling_verbosity = None

        def set_flag(self, flag):
            self.flags.add(BuilderFlag(flag))

        def set_calibration_profile(self, profile):
            self.calibration_profile = profile
            return True

        def add_optimization_profile(self, profile):
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def set_memory_pool_limit(self, pool, size):
            self.workspace = size

    class Builder:
        platform_has_fast_int8 = fast_int8
        platform_has_fast_fp16 = fast_fp16

        def __init__(self, logger):
            self.logger = logger

        def create_network(self, flags=0):
            return Network(flags)

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            trt.builds.append((network, config))
            if config.int8_calibrator is not None:
                shapes = {}
                for t in network.inputs:
                    if config.calibration_profile is not None and t.name in config.calibration_profile.shapes:
                        shapes[t.name] = config.calibration_profile.shapes[t.name][1]
                    else:
                        shapes[t.name] = tuple(t.shape)
                calibrate(trt, config.int8_calibrator, shapes, {t.name: t.dtype for t in network.inputs})
            if "INT8" in getattr(network, "model_ops", ()) or BuilderFlag.INT8 in config.flags:
                precision = "Int8"
            elif BuilderFlag.FP16 in config.flags:
                precision = "Half"
            else:
                precision = "Float"
            layers = [{"Name": "conv", "Inputs": [{"Format/Datatype": f"Row major linear {precision}"}]},
                      {"Name": "out", "Inputs": [{"Format/Datatype": "Row major linear FP32 format"}]}]
            return json.dumps({"Layers": layers}).encode()

    trt.Builder = Builder

    class OnnxParser:
        def __init__(self, network, logger):
            self.network = network
            self.num_errors = 0

        def parse(self, data, path=None):
            model = onnx.load_from_string(bytes(data))
            inits = {i.name for i in model.graph.initializer}
            for vi in model.graph.input:
                if vi.name in inits:
                    continue
                dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim)
                dtype = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
                self.network.inputs.append(Tensor(vi.name, dims, np.dtype(dtype)))
            self.network.model_ops = {n.op_type for n in model.graph.node}
            self.network.onnx_model = model
            if "QuantizeLinear" in self.network.model_ops:
                self.network.model_ops.add("INT8")
            parse_layers(trt, self.network, model)
            return True

        def get_error(self, i):
            return ""

    trt.OnnxParser = OnnxParser

    class Inspector:
        def __init__(self, data):
            self.data = data

        def get_engine_information(self, fmt):
            return self.data.decode()

    class Engine:
        def __init__(self, data):
            self.data = data

        def create_engine_inspector(self):
            return Inspector(self.data)

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            return Engine(bytes(data))

    trt.Runtime = Runtime
    return trt


def calibrate(trt, calibrator, shapes: dict, dtypes: dict) -> dict[str, float]:
    """What TensorRT's builder does with a calibrator; returns {input: max |x|} it saw."""
    names = list(shapes)
    cache = calibrator.read_calibration_cache()
    trt.calls.append(("read_calibration_cache", cache is not None))
    if cache:
        return {}
    batch_size = calibrator.get_batch_size()
    trt.calls.append(("get_batch_size", batch_size))
    seen = {n: 0.0 for n in names}
    trt.batches = []
    while True:
        pointers = calibrator.get_batch(names)
        trt.calls.append(("get_batch", pointers is not None))
        if not pointers:
            break
        batch = {}
        for name, ptr in zip(names, pointers):
            arr = calibrator.backend.download(ptr, shapes[name], dtypes[name])
            batch[name] = arr
            seen[name] = max(seen[name], float(np.abs(arr).max()))
        trt.batches.append(batch)
    algorithm = calibrator.get_algorithm()
    trt.calls.append(("get_algorithm", algorithm))
    header = {0: "LegacyCalibration", 1: "EntropyCalibration", 2: "EntropyCalibration2", 3: "MinMaxCalibration"}[int(algorithm)]
    lines = [f"TRT-100001-{header}"] + [f"{n}: {struct.pack('>f', v / 127).hex()}" for n, v in seen.items()]
    calibrator.write_calibration_cache(memoryview(("\n".join(lines) + "\n").encode()))
    trt.calls.append(("write_calibration_cache", True))
    return seen


# ONNX op -> (TensorRT layer type, the name TensorRT shows in '(Unnamed Layer* N) [...]')
_LAYERS = {
    "Conv": ("CONVOLUTION", "Convolution"), "Relu": ("ACTIVATION", "Activation"), "Clip": ("ACTIVATION", "Activation"),
    "Sigmoid": ("ACTIVATION", "Activation"), "MaxPool": ("POOLING", "Pooling"), "AveragePool": ("POOLING", "Pooling"),
    "GlobalAveragePool": ("POOLING", "Pooling"), "Reshape": ("SHUFFLE", "Shuffle"), "Flatten": ("SHUFFLE", "Shuffle"),
    "Transpose": ("SHUFFLE", "Shuffle"), "MatMul": ("MATRIX_MULTIPLY", "Matrix Multiply"),
    "Gemm": ("MATRIX_MULTIPLY", "Matrix Multiply"), "Softmax": ("SOFTMAX", "Softmax"), "TopK": ("TOPK", "TopK"),
    "Identity": ("IDENTITY", "Identity"),
    **{op: ("ELEMENTWISE", "ElementWise") for op in ("Add", "Sub", "Mul", "Div", "Pow", "Max", "Min")},
}
_CONSTANT_READERS = {"MatMul", "Gemm", "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min"}


def parse_layers(trt, network, model):
    """The layers TensorRT's ONNX parser makes of ``model``, named as the public caches show them.

    One layer per node, its outputs named after the ONNX tensors. A float constant read by a
    MatMul, Gemm or element-wise node becomes a Constant layer first: TensorRT 10 names it after
    the initializer ('<name>_output'), 8.x numbers it ('(Unnamed Layer* N) [Constant]_output'); one
    of lower rank than the other operand is then broadcast by a Shuffle ('ONNXTRT_Broadcast_K_output'
    in 10.x, numbered in 8.x). Other constants (convolution kernels, shapes) are weights, not layers."""
    from onnx import numpy_helper, shape_inference

    tensorrt_10 = int(str(trt.__version__).split(".")[0]) >= 10
    inferred = shape_inference.infer_shapes(model)
    infos = {v.name: v for v in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]}
    constants = {t.name: t for t in model.graph.initializer}
    constants |= {n.output[0]: n.attribute[0].t for n in model.graph.node if n.op_type == "Constant"}
    tensors = {t.name: t for t in network.inputs}
    broadcasts = itertools.count()
    layer_types = trt.LayerType

    def rank(name):
        if name in constants:
            return len(constants[name].dims)
        info = infos.get(name)
        return len(info.type.tensor_type.shape.dim) if info is not None else 0

    def constant_layer(name, other_rank):
        array = numpy_helper.to_array(constants[name])
        layer = network.add_layer(layer_types.CONSTANT, "Constant", name if tensorrt_10 else None, [], [None], weights=array)
        tensor = layer.get_output(0)
        if array.ndim < other_rank:
            k = next(broadcasts)
            shown = ("ONNXTRT_Broadcast" + (f"_{k}" if k else "")) if tensorrt_10 else None
            tensor = network.add_layer(layer_types.SHUFFLE, "Shuffle", shown, [tensor], [None]).get_output(0)
        return tensor

    for node in model.graph.node:
        if node.op_type == "Constant":
            continue
        inputs = []
        for i, name in enumerate(node.input):
            if name in tensors:
                inputs.append(tensors[name])
            elif name in constants and node.op_type in _CONSTANT_READERS and constants[name].data_type == onnx.TensorProto.FLOAT:
                others = [rank(n) for j, n in enumerate(node.input) if j != i and n not in constants]
                inputs.append(constant_layer(name, max(others, default=0)))
        type_name, shown = _LAYERS.get(node.op_type, ("UNARY", "Unary"))
        outputs = []
        for name in node.output:
            info = infos.get(name)
            elem = info.type.tensor_type.elem_type if info is not None else onnx.TensorProto.FLOAT
            outputs.append(trt.ITensor(name, (), np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem))))
        layer = network.add_layer(getattr(layer_types, type_name), shown, node.name or None, inputs, outputs)
        tensors.update({t.name: t for t in layer.outputs})

