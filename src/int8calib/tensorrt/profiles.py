"""Optimization profiles for networks with dynamic input shapes.

TensorRT calibrates at one shape: the OPT shape of the calibration profile (its MIN and MAX
are overwritten by OPT). The adapter's batches have the shape (batch size, *sample shape),
so that is the calibration profile; the engine's own profile can span smaller batches.
"""

from __future__ import annotations

from typing import Mapping

from ..errors import Int8CalibError


def sample_shapes(host) -> dict[str, tuple[int, ...]]:
    """{input name: shape of one sample} from the first sample a host ``Calibrator`` would serve."""
    first = host.loader.load_sample(host.loader.samples[0])
    return {name: tuple(int(d) for d in a.shape) for name, a in first.items()}


def network_inputs(network) -> dict[str, tuple[int, ...]]:
    """{name: shape} of the network's inputs, -1 for dynamic dimensions."""
    out = {}
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        out[tensor.name] = tuple(int(d) for d in tensor.shape)
    return out


def is_dynamic(network) -> bool:
    return any(-1 in shape for shape in network_inputs(network).values())


def check_shapes(network, shapes: Mapping[str, tuple[int, ...]]) -> None:
    """Fail when the data's shapes cannot feed the network (rank or a fixed dimension differs)."""
    for name, want in network_inputs(network).items():
        if name not in shapes:
            raise Int8CalibError(f"the data has no input '{name}' (it has {', '.join(shapes)})")
        have = shapes[name]
        if len(have) != len(want) or any(w not in (-1, h) for w, h in zip(want, have)):
            raise Int8CalibError(f"input '{name}': calibration batches of shape {list(have)} do not fit the network's {list(want)}")


def fixed_profile(builder, shapes: Mapping[str, tuple[int, ...]]):
    """A profile with MIN = OPT = MAX = ``shapes``: the calibration profile."""
    profile = builder.create_optimization_profile()
    for name, shape in shapes.items():
        profile.set_shape(name, shape, shape, shape)
    return profile


def inference_profile(builder, network, shapes: Mapping[str, tuple[int, ...]]):
    """The engine's profile: dynamic batch axes span 1..batch, other dynamic axes take the data's size."""
    profile = builder.create_optimization_profile()
    for name, want in network_inputs(network).items():
        opt = tuple(shapes[name])
        low = tuple(1 if axis == 0 and w == -1 else d for axis, (w, d) in enumerate(zip(want, opt)))
        profile.set_shape(name, low, opt, opt)
    return profile
