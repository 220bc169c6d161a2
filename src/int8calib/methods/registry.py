"""The table of methods by name, and the cache algorithm each one writes."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from ..errors import Int8CalibError
from ..stats.histogram import Statistics, TensorHistogram
from ..util.log import progress


@dataclass(frozen=True)
class Method:
    name: str
    fn: Callable[..., float]  # (TensorHistogram, **params) -> amax
    algorithm: str  # the TensorRT cache header's algorithm name
    params: dict = field(default_factory=dict)  # parameter name -> default
    doc: str = ""
    prepare: Callable[[], object] | None = None  # loads what fn compiles (collection calls it early, in a thread)
    ordered: bool = False  # depends on batch size and order (TensorRT's histograms), not only on the data


METHODS: dict[str, Method] = {}


def register(name: str, algorithm: str, prepare: Callable[[], object] | None = None, ordered: bool = False, **params):
    """Decorator: add ``fn(hist, **params) -> amax`` to the table under ``name``."""

    def wrap(fn):
        doc = (fn.__doc__ or "").strip().splitlines()[0]
        METHODS[name] = Method(name, fn, algorithm, dict(params), doc, prepare, ordered)
        return fn

    return wrap


def available() -> list[str]:
    return list(METHODS)


def get(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise Int8CalibError(f"unknown method '{name}'; choose from {', '.join(METHODS)}") from None


def compute_amax(name: str, hist: TensorHistogram, **params) -> float:
    method = get(name)
    unknown = set(params) - set(method.params)
    if unknown:
        raise Int8CalibError(f"method '{name}' takes no parameter(s) {sorted(unknown)}")
    return float(method.fn(hist, **{**method.params, **params}))


def compute_ranges(name: str, stats: Statistics, **params) -> dict[str, float]:
    """amax of every tensor in ``stats`` by ``name``'s method."""
    if stats.meta.get("bit_histograms") is False and not get(name).ordered:
        raise Int8CalibError(f"method '{name}' needs the bit-pattern histograms, which this collection left out "
                             "(collected for entropy2 / entropy only)")
    tensors = progress(stats.tensors.items(), total=len(stats.tensors), desc=f"{name} thresholds", unit="tensor")
    ranges = {}
    for tensor, h in tensors:
        try:
            ranges[tensor] = compute_amax(name, h, **params)
        except Int8CalibError as exc:
            raise Int8CalibError(f"tensor '{tensor}': {exc}") from None
    return ranges


def compute_all(
    stats: Statistics, names: list[str] | None = None, **params
) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Ranges of every method in ``names`` (default: all) from the same statistics.

    Each parameter goes to the methods that take it (``percentile=`` to percentile only).
    Returns ({method: {tensor: amax}}, {method: seconds of threshold search}).
    """
    names = available() if names is None else list(names)
    methods = [get(n) for n in names]
    unknown = set(params) - {p for m in methods for p in m.params}
    if unknown:
        raise Int8CalibError(f"no method takes parameter(s) {sorted(unknown)}")
    ranges, seconds = {}, {}
    for m in methods:
        start = time.perf_counter()
        ranges[m.name] = compute_ranges(m.name, stats, **{k: v for k, v in params.items() if k in m.params})
        seconds[m.name] = time.perf_counter() - start
    return ranges, seconds
