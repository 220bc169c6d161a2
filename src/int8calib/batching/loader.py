"""Batches of preprocessed samples.

The last partial batch is used as it is: dropping it or padding it with zeros would
bias the statistics. A model whose batch axis is fixed gets its batch padded with
zeros; ``Batch.n`` says how many rows are real so the padding stays out of the
statistics.

Samples are stacked along each input's batch axis (``InputInfo.batch_axis``); an input
without one is fed as it is. Samples of different shapes (or different values of an input
without a batch axis) are batched within groups of equal shape, never padded: a group is
emitted when it holds ``batch_size`` samples, and while more than ``MAX_PENDING_BATCHES``
batches' worth of samples wait in partial groups the largest one is emitted as it is, so
memory stays bounded. Data of one shape gives exactly the batches of consecutive samples.
"""

from __future__ import annotations

import zipfile
import hashlib
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np

from ..errors import Int8CalibError
from ..preprocess import Preprocess
from ..runner.model import InputInfo
from ..sources import Sample, batching_fingerprint, data_fingerprint
from ..sources.resolve import sample_digests
from ..util.log import logger, progress
from ..util.npy import NPY_LOCK
from .prefetch import prefetch


MAX_PENDING_BATCHES = 4  # samples held in partial groups of equal shape, in batches


@dataclass
class Batch:
    feeds: dict[str, np.ndarray]  # input name -> array with the batch on its batch axis
    n: int  # real samples; rows n: are padding
    samples: list[Sample]
    axes: dict[str, int | None] = field(default_factory=dict)  # batch axis of each input (absent: 0; None: none)

    def rows(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """The feeds of samples ``start:stop``; inputs without a batch axis as they are."""
        out = {}
        for name, value in self.feeds.items():
            axis = self.axes.get(name, 0)
            if axis is None:
                out[name] = value
            else:
                index = [slice(None)] * value.ndim
                index[axis] = slice(start, stop)
                out[name] = value[tuple(index)]
        return out


def first_samples(loader, max_samples: int | None, desc: str):
    """(batch, real rows to use) of ``loader``'s batches up to ``max_samples`` samples in all (None: all),
    with a progress bar: the passes that read a sample of the data (bias correction, weight rounding,
    equalization)."""
    seen = 0
    for batch in progress(loader, desc=desc, unit="batch"):
        if max_samples is not None and seen >= max_samples:
            return
        rows = batch.n if max_samples is None else min(batch.n, max_samples - seen)
        yield batch, rows
        seen += rows


def row_steps(batch, rows: int, step: int):
    """(feeds, real rows) of ``batch``'s first ``rows`` samples in runs of at most ``step`` samples, for
    passes whose results are sums over samples (bias correction, comparisons), so that ONNX Runtime's
    intermediate tensors stay small. A batch that cannot be cut (padded to a fixed batch axis, or a
    feed-dict batch without ``rows``) runs whole."""
    if not hasattr(batch, "rows") or any(v.shape[batch.axes.get(k, 0)] != batch.n for k, v in batch.feeds.items()
                                         if batch.axes.get(k, 0) is not None):
        yield batch.feeds, rows
        return
    for start in range(0, rows, step):
        stop = min(start + step, rows)
        yield batch.rows(start, stop), stop - start


class BatchLoader:
    """Iterates over ``samples`` in batches of ``batch_size`` feed dicts."""

    def __init__(
        self,
        samples: Sequence[Sample],
        inputs: Sequence[InputInfo],
        preprocess: Preprocess | None = None,
        batch_size: int = 32,
        skip_bad: bool = False,
        prefetch: int = 1,
    ):
        if batch_size < 1:
            raise Int8CalibError(f"--batch-size must be >= 1, got {batch_size}")
        if not samples:
            raise Int8CalibError("no calibration samples")
        self.samples = list(samples)
        self.inputs = list(inputs)
        self.preprocess = preprocess
        self.skip_bad = skip_bad
        self.prefetch = prefetch  # batches loaded ahead in a background thread
        self.skipped: list[str] = []
        self.fixed_batch = fixed_batch_size(self.inputs)
        if self.fixed_batch is not None and self.fixed_batch != batch_size:
            logger.info("model batch size is fixed at %d; using it instead of %d", self.fixed_batch, batch_size)
            batch_size = self.fixed_batch
        self.batch_size = batch_size
        if any(s.kind == "image" for s in self.samples):
            if preprocess is None:
                raise Int8CalibError("image data needs a preprocessing spec (--preprocess PRESET|FILE.json)")
            if len(self.inputs) != 1:
                raise Int8CalibError(
                    f"the model has {len(self.inputs)} inputs ({', '.join(i.name for i in self.inputs)}); "
                    "images can feed only a single-input model: give .npz files or a data-loader script"
                )
            if self.inputs[0].dtype.kind != "f":
                raise Int8CalibError(
                    f"input '{self.inputs[0].name}' is {self.inputs[0].dtype}, not float: images cannot feed it "
                    "(give .npy/.npz data of that type)"
                )
            preprocess.check_input(self.inputs[0].name, self.inputs[0].shape)

    def __len__(self) -> int:
        return -(-len(self.samples) // self.batch_size)

    @property
    def sample_count(self) -> int | None:
        """Samples to expect (for progress bars)."""
        return len(self.samples)

    def _digests(self) -> list[str]:
        cached = getattr(self, "_digest_cache", None)
        if cached is None or cached[0] is not self.samples:  # a shard replaces the list
            cached = self._digest_cache = (self.samples, sample_digests(self.samples))
        return cached[1]

    def fingerprint(self) -> str:
        return data_fingerprint(self.samples, self._digests())

    def batching(self) -> str:
        """Batch size and the samples in order: what TensorRT's histograms depend on."""
        return batching_fingerprint(self.samples, self.batch_size, self._digests())

    def load_sample(self, sample: Sample) -> dict[str, np.ndarray]:
        """One sample as {input name: array without batch axis}."""
        if sample.kind == "image":
            try:
                return {self.inputs[0].name: self.preprocess(sample.path)}
            except Int8CalibError as exc:
                if not sample.origin:
                    raise
                raise Int8CalibError(f"{exc} (listed at {sample.origin})") from None
        try:
            if sample.kind == "npy":
                with NPY_LOCK:
                    arr = np.load(sample.path, mmap_mode="r", allow_pickle=False)
                arrays = {self.inputs[0].name: arr}
            else:
                with NPY_LOCK, np.load(sample.path, allow_pickle=False) as z:
                    arrays = {i.name: z[i.name] for i in self.inputs}
        except FileNotFoundError:
            raise Int8CalibError(f"{sample}: tensor file not found") from None
        except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise Int8CalibError(f"{sample}: cannot read tensor file ({exc})") from None
        out = {}
        for info in self.inputs:
            a = arrays[info.name]
            if sample.index is not None and info.batch_axis is not None:
                a = np.take(a, sample.index, axis=info.batch_axis)  # row ``index`` of a batch file
            out[info.name] = np.array(a)
        return out

    def __iter__(self) -> Iterator[Batch]:
        return prefetch(self._load_batches(), self.prefetch)

    def _load_batches(self) -> Iterator[Batch]:
        groups: dict[tuple, tuple[list, list]] = {}  # equal-shape groups, in order of first appearance
        pending = 0
        for sample in self.samples:
            try:
                row = self.load_sample(sample)
            except Int8CalibError as exc:
                if not self.skip_bad:
                    raise
                self.skipped.append(str(exc))
                logger.debug("skipped: %s", exc)
                continue
            for info in self.inputs:
                _check_sample_shape(info, row[info.name], sample)
            key = self._group_key(row)
            rows, used = groups.setdefault(key, ([], []))
            rows.append(row)
            used.append(sample)
            pending += 1
            if len(rows) == self.batch_size:
                del groups[key]
            elif pending >= MAX_PENDING_BATCHES * self.batch_size:  # bound memory: emit the largest group
                key = max(groups, key=lambda k: len(groups[k][0]))
                rows, used = groups.pop(key)
            else:
                continue
            pending -= len(rows)
            yield self._stack(rows, used)
        for rows, used in groups.values():
            yield self._stack(rows, used)

    def _group_key(self, row: dict[str, np.ndarray]) -> tuple:
        """Samples batch together when every input has the same shape, and inputs without a
        batch axis the same value."""
        key = []
        for info in self.inputs:
            value = row[info.name]
            key.append(value.shape)
            if info.batch_axis is None:
                key.append(hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest())
        return tuple(key)

    def _stack(self, rows: list[dict[str, np.ndarray]], used: list[Sample]) -> Batch:
        feeds = {}
        for info in self.inputs:
            if info.batch_axis is None:
                arr = rows[0][info.name]  # the same in every row of the group
            else:
                arr = np.stack([r[info.name] for r in rows], axis=info.batch_axis)
            feeds[info.name] = fit_batch(info, arr, self.fixed_batch, used[0])
        return Batch(feeds, len(rows), used, {i.name: i.batch_axis for i in self.inputs})


def fixed_batch_size(inputs: Sequence[InputInfo]) -> int | None:
    """The batch size the model's inputs insist on, or None when the batch axis is dynamic."""
    fixed = {i.fixed_batch for i in inputs} - {None}
    return fixed.pop() if len(fixed) == 1 else None


def fit_batch(info: InputInfo, arr: np.ndarray, fixed_batch: int | None, origin) -> np.ndarray:
    """``arr`` (batch on the input's batch axis) cast to the input's type, checked against its shape
    and zero-padded to ``fixed_batch`` rows; ``origin`` names the data in error messages."""
    arr = arr.astype(info.dtype, copy=False)
    _check_shape(info, arr, origin)
    axis = info.batch_axis
    if fixed_batch is not None and axis is not None and arr.shape[axis] < fixed_batch:
        pad_shape = list(arr.shape)
        pad_shape[axis] = fixed_batch - arr.shape[axis]
        arr = np.concatenate([arr, np.zeros(pad_shape, arr.dtype)], axis=axis)
    return arr


def _check_sample_shape(info: InputInfo, arr: np.ndarray, sample: Sample) -> None:
    """One sample (no batch axis) against the input's fixed dimensions, naming the sample's file,
    so a bad file among many is named even when it is not the first of its batch."""
    if not len(info.shape):
        return
    want_shape = info.sample_shape()
    if arr.ndim != len(want_shape):
        raise Int8CalibError(
            f"input '{info.name}': sample of shape {list(arr.shape)} does not match the model's {list(info.shape)} "
            + (f"without batch axis {info.batch_axis} " if info.batch_axis is not None else "(no batch axis) ")
            + f"(from {sample})"
        )
    for axis, (want, have) in enumerate(zip(want_shape, arr.shape)):
        if isinstance(want, int) and want > 0 and want != have:
            raise Int8CalibError(
                f"input '{info.name}': sample of shape {list(arr.shape)} does not match the model's "
                f"{list(info.shape)} on axis {axis if info.batch_axis is None or axis < info.batch_axis else axis + 1} "
                f"(from {sample})"
            )


def _check_shape(info: InputInfo, arr: np.ndarray, first) -> None:
    if len(info.shape) and arr.ndim != len(info.shape):
        raise Int8CalibError(
            f"input '{info.name}': data of shape {list(arr.shape)} does not match the model's {list(info.shape)} (from {first})"
        )
    for axis, (want, have) in enumerate(zip(info.shape, arr.shape)):
        if axis == info.batch_axis:
            continue
        if isinstance(want, int) and want > 0 and want != have:
            raise Int8CalibError(
                f"input '{info.name}': data of shape {list(arr.shape)} does not match the model's "
                f"{list(info.shape)} on axis {axis} (from {first})"
            )
