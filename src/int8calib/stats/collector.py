"""Accumulates histograms batch by batch (the calibrator contract: collect, reset, result)."""

from __future__ import annotations

import functools
from dataclasses import replace
from concurrent.futures import Executor, Future
from typing import Collection, Mapping, Sequence

import numpy as np

from ..errors import Int8CalibError
from .histogram import DEFAULT_MANTISSA_BITS, Statistics, TensorHistogram, ordered_max, ordered_min
from .derive import derive_clipped, unsigned_counts
from .trt_histogram import TrtHistogram, f32


@functools.lru_cache(maxsize=1)
def _kernels():
    """stats.kernels, imported on first use: numba loads in a histogram thread while ONNX
    Runtime runs the next step, instead of delaying the first run by 0.2-0.5 s."""
    from . import kernels

    return kernels


_TASKS = 8  # tasks per batch: enough to balance a few threads, few enough to stay cheap


def _balanced_groups(activations: Mapping[str, np.ndarray], count: int) -> list[list[str]]:
    """Tensor names in ``count`` groups of similar total size (largest first, into the lightest group)."""
    groups: list[list[str]] = [[] for _ in range(min(count, len(activations)))]
    loads = [0] * len(groups)
    for name in sorted(activations, key=lambda n: -activations[n].size):
        lightest = loads.index(min(loads))
        groups[lightest].append(name)
        loads[lightest] += activations[name].size
    return groups


class StatsCollector:
    """Histograms |x| of every tensor it is given; never keeps the activations.

    ``collect`` histograms in the calling thread. ``submit`` spreads the tensors of a
    batch over ``executor`` threads (the kernel releases the GIL) and returns at once,
    so the caller can run the next batch meanwhile; a tensor is only ever updated by
    one task at a time because ``submit`` first waits for the previous batch.
    Counts are integers and min/max are exact, so the result does not depend on the
    order in which tensors or batches are added.

    Tensors in ``signed`` are counted by sign as well (:func:`kernels.accumulate_signed`,
    same cost), so :meth:`result` can derive the histograms of Relu / Clip(0, hi) outputs
    of them that were never exposed (:mod:`stats.derive`).

    Beside them it keeps TensorRT's own histogram of every tensor (:class:`TrtHistogram`,
    which depends on the order of batches): each ``collect`` / ``submit`` call with
    ``new_batch`` begins a calibration batch; a batch may come in several calls (steps). Its
    range starts at the first batch's max |x|: from :meth:`set_first_batch` when the first
    batch comes in several steps, else from the first call's values. ``derived`` outputs
    ``{name: (input, hi)}`` get theirs from their input's values.
    """

    def __init__(
        self,
        mantissa_bits: int = DEFAULT_MANTISSA_BITS,
        signed: Collection[str] = (),
        derived: Mapping[str, tuple[str, float]] | None = None,
        trt_histograms: bool = True,
        bit_histograms: bool = True,
    ):
        if not 0 <= mantissa_bits <= 12:
            raise ValueError("mantissa_bits must be in 0..12")
        self.mantissa_bits = mantissa_bits
        self.signed = frozenset(signed)
        self.derived = dict(derived or {})
        self.trt_histograms = trt_histograms  # False: only the order-free statistics (faster)
        # False: no bit-pattern counts (min and max stay); only TensorRT's histograms, for entropy2 / entropy
        self.bit_histograms = bit_histograms or not trt_histograms
        self._outputs_of: dict[str, list[tuple[str, float]]] = {}
        for name, (source, hi) in self.derived.items():
            self._outputs_of.setdefault(source, []).append((name, f32(hi)))
        self.reset()

    def reset(self) -> None:
        self._hists: dict[str, TensorHistogram] = {}
        self._signed_counts: dict[str, np.ndarray] = {}  # name -> counts keyed with the sign bit
        self._trt: dict[str, TrtHistogram] = {}
        self._first: dict[str, float] = {}  # first batch's max |x| per tensor, from set_first_batch
        self._pending: list[Future] = []
        self.batches = 0
        self.samples = 0

    def set_first_batch(self, ranges: Mapping[str, tuple[float, float]]) -> None:
        """The first batch's (min, max) of every tensor, before any of it is collected:
        where TensorRT's histograms start (see :class:`TrtHistogram`)."""
        for name, (lo, hi) in ranges.items():
            if lo > hi:  # no values
                continue
            self._first[name] = max(abs(lo), abs(hi))
            for output, clip_hi in self._outputs_of.get(name, ()):
                self._first[output] = min(max(hi, 0.0), clip_hi)

    def _trt_of(self, name: str, new_batch: bool, step_max) -> "TrtHistogram | None":
        """``name``'s TensorRT histogram, begun and with a range > 0 if it can have one (None:
        only zeros so far). ``step_max()`` gives the step's max for a histogram that has no
        range yet: it starts from the first batch's max, or from this step's."""
        trt = self._trt.get(name)
        if trt is None:
            trt = self._trt[name] = TrtHistogram.starting_at(self._first[name] if name in self._first else step_max())
        if new_batch:
            trt.new_batch()
        if trt.range == 0.0:
            trt.fit(step_max())
        return trt if trt.range > 0 else None

    def _add_all(self, name: str, value: np.ndarray, counts, signed: bool, new_batch: bool):
        """The kernel pass of :func:`kernels.accumulate_all` over one tensor: bit-pattern counts
        (``counts`` None: not wanted), TensorRT's histogram of it and of the first Relu / Clip
        output derived from it; further derived outputs (rare) get a pass each."""
        kernels = _kernels()
        step: list = []

        def step_range():  # (lo, hi) of the step, read once and only where a range must start
            if not step:
                step.append(kernels.min_max(value))
            return step[0]

        def abs_max():
            lo, hi = step_range()
            return max(abs(lo), abs(hi)) if lo <= hi else 0.0

        outputs = self._outputs_of.get(name, ())
        hists = [self._trt_of(name, new_batch, abs_max)]
        for output, clip_hi in outputs:
            hists.append(self._trt_of(output, new_batch, lambda: min(max(step_range()[1], 0.0), clip_hi)))
        first = (hists[1], outputs[0][1]) if outputs and hists[1] is not None else None
        lo, hi, finite = kernels.accumulate_all(value, counts, self.mantissa_bits, signed, hists[0], first)
        if not finite:
            return lo, hi, finite
        for (output, clip_hi), trt in zip(outputs, hists[1:]):
            if trt is None:  # only zeros so far
                self._trt[output].counts[0] += value.size
            elif first is None or trt is not first[0]:
                trt.fit(min(max(hi, 0.0), clip_hi))
                trt.count_clamped(kernels.bin_linear(value, trt.counts, trt.width, clip_hi))
        if hists[0] is None:
            self._trt[name].counts[0] += value.size
        return lo, hi, finite

    def _histogram(self, name: str) -> TensorHistogram:
        h = self._hists.get(name)
        if h is None:
            h = self._hists[name] = TensorHistogram.empty(self.mantissa_bits)
            if name in self.signed:
                self._signed_counts[name] = np.zeros(512 << self.mantissa_bits, np.int64)
        return h

    def _add(self, name: str, h: TensorHistogram, value: np.ndarray, batch: int, new_batch: bool = True) -> None:
        signed = self._signed_counts.get(name)
        counts = h.counts if signed is None else signed
        if self.trt_histograms and value.size:
            lo, hi, finite = self._add_all(name, value, counts if self.bit_histograms else None, signed is not None, new_batch)
        else:
            lo, hi, finite = _kernels().accumulate_checked(value, counts, self.mantissa_bits, signed is not None)
        if not finite:
            bad = int(value.size - np.count_nonzero(np.isfinite(value)))
            raise Int8CalibError(
                f"tensor '{name}': {bad} NaN/Inf value(s) in calibration batch {batch} "
                "(check the input data and preprocessing)"
            )
        h.min, h.max = ordered_min(h.min, lo), ordered_max(h.max, hi)

    def collect(self, activations: Mapping[str, np.ndarray], samples: int = 0, new_batch: bool = True) -> None:
        """Add one batch of activations (``new_batch`` False: more of the current batch);
        NaN or Inf in a tensor is an error naming it."""
        self.wait()
        for name, value in activations.items():
            self._add(name, self._histogram(name), value, self.batches, new_batch)
        self.batches += 1
        self.samples += samples

    def submit(
        self, activations: Mapping[str, np.ndarray], executor: Executor, samples: int = 0, new_batch: bool = True
    ) -> None:
        """Like ``collect``, on ``executor``'s threads; returns before the work is done.

        Tensors go to a few tasks of about equal size: one task per tensor cost more in
        thread hand-offs than the histograms of a model with 1,000 small tensors.
        """
        self.wait()
        batch = self.batches
        hists = {name: self._histogram(name) for name in activations}  # created in the caller's order
        groups = _balanced_groups(activations, _TASKS)
        self._pending = []
        for group in groups:
            task = [(name, hists[name], activations[name]) for name in group]
            self._pending.append((executor.submit(self._add_group, task, batch, new_batch), task, batch, new_batch))
        self.batches += 1
        self.samples += samples

    def _add_group(self, group: list, batch: int, new_batch: bool = True) -> None:
        for name, h, value in group:
            self._add(name, h, value, batch, new_batch)

    def wait(self) -> None:
        """Block until every submitted batch is histogrammed; re-raise the first error.

        Tasks no thread has started yet run in the calling thread instead of waiting
        for one: the caller (the thread that runs the model) would otherwise sit idle.
        """
        pending, self._pending = self._pending, []
        errors = []
        for future, task, batch, new_batch in reversed(pending):  # the smallest groups were queued last
            if future.cancel():
                try:
                    self._add_group(task, batch, new_batch)
                except Exception as exc:  # re-raised below, before those of tasks the threads ran
                    errors.append(exc)
        errors += [f.exception() for f, *_ in pending if not f.cancelled()]
        for exc in errors:
            if exc is not None:
                raise exc

    def result(
        self,
        meta: dict | None = None,
        derived: Mapping[str, tuple[str, float]] | None = None,
        order: Sequence[str] | None = None,
    ) -> Statistics:
        """The statistics so far, plus each ``derived`` output ``{name: (input, hi)}`` of
        Clip(0, hi) (hi = inf: Relu) whose input was collected in ``signed``; tensors in
        ``order`` (default: the order collected, derived ones last)."""
        self.wait()
        tensors = {name: replace(h, trt=self._trt.get(name)) for name, h in self._hists.items()}
        for name, signed in self._signed_counts.items():
            h = tensors[name]
            tensors[name] = TensorHistogram(unsigned_counts(signed), h.min, h.max, h.mantissa_bits, h.trt)
        for name, (source, hi) in (self.derived if derived is None else derived).items():
            if source in self._signed_counts:
                h = tensors[source]
                d = derive_clipped(self._signed_counts[source], h.min, h.max, hi, self.mantissa_bits)
                tensors[name] = replace(d, trt=self._trt.get(name) if name in self.derived else None)
        if order is not None:
            tensors = {name: tensors[name] for name in order if name in tensors}
        if not self.bit_histograms:  # compute_ranges refuses the order-free methods on these
            meta = {**(meta or {}), "bit_histograms": False}
        return Statistics(tensors, {**(meta or {}), "samples": self.samples})
