"""The statistics file: one .npz that loads with ``numpy.load(allow_pickle=False)``.

Arrays: ``names`` (unicode), ``mantissa_bits``, ``mins``, ``maxs`` (float64),
``offsets`` / ``lengths`` (the non-empty key range of each tensor) and ``counts``
(those ranges concatenated, int64), and ``meta`` (a JSON string). Trimming to the
non-empty range keeps a file for EfficientNet-Lite0 at a few MB.

TensorRT's histograms (:class:`TrtHistogram`), where present: ``trt_first`` and
``trt_range`` (float32 per tensor, NaN for a tensor without one) and ``trt_counts``
(int64 [tensors, 2048]). Files without them (older ones) load with ``trt`` None.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np

from ..errors import StatisticsFormatError
from ..util.atomic import write_bytes
from ..util.npy import NPY_LOCK
from .histogram import Statistics, TensorHistogram
from .trt_histogram import BINS, TrtHistogram

FORMAT = "int8calib-statistics/1"


def save(stats: Statistics, path: str | Path) -> None:
    names, offsets, lengths, chunks, mins, maxs = [], [], [], [], [], []
    for name, h in stats.tensors.items():
        nz = np.flatnonzero(h.counts)
        lo, hi = (int(nz[0]), int(nz[-1]) + 1) if nz.size else (0, 0)
        names.append(name)
        offsets.append(lo)
        lengths.append(hi - lo)
        chunks.append(h.counts[lo:hi])
        mins.append(h.min)
        maxs.append(h.max)
    trt = [h.trt for h in stats.tensors.values()]
    extra = {}
    if any(t is not None for t in trt):
        extra = {
            "trt_first": np.array([np.nan if t is None else t.first_max for t in trt], np.float32),
            "trt_range": np.array([np.nan if t is None else t.range for t in trt], np.float32),
            "trt_counts": np.stack([np.zeros(BINS, np.int64) if t is None else t.counts for t in trt]),
        }
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        **extra,
        format=np.array(FORMAT),
        meta=np.array(json.dumps(stats.meta, sort_keys=True)),
        names=np.array(names, dtype=str),
        mantissa_bits=np.array(stats.mantissa_bits, np.int64),
        offsets=np.array(offsets, np.int64),
        lengths=np.array(lengths, np.int64),
        counts=np.concatenate(chunks) if chunks else np.zeros(0, np.int64),
        mins=np.array(mins, np.float64),
        maxs=np.array(maxs, np.float64),
    )
    write_bytes(path, buf.getvalue())


def load(path: str | Path) -> Statistics:
    path = Path(path)
    try:
        with NPY_LOCK, np.load(path, allow_pickle=False) as z:
            if "format" not in z.files or str(z["format"]) != FORMAT:
                raise StatisticsFormatError(f"{path}: not an int8calib statistics file")
            meta = json.loads(str(z["meta"]))
            bits = int(z["mantissa_bits"])
            names = [str(n) for n in z["names"]]
            offsets, lengths, counts = z["offsets"], z["lengths"], z["counts"]
            mins, maxs = z["mins"], z["maxs"]
            trt = (z["trt_first"], z["trt_range"], z["trt_counts"]) if "trt_counts" in z.files else None
    except FileNotFoundError:
        raise StatisticsFormatError(f"{path}: statistics file not found") from None
    except StatisticsFormatError:
        raise
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        raise StatisticsFormatError(f"{path}: not a readable statistics file ({exc})") from None
    size = 256 << bits
    tensors = {}
    start = 0
    for i, name in enumerate(names):
        full = np.zeros(size, np.int64)
        off, n = int(offsets[i]), int(lengths[i])
        if off < 0 or off + n > size or start + n > counts.size:
            raise StatisticsFormatError(f"{path}: tensor '{name}' has an inconsistent histogram")
        full[off : off + n] = counts[start : start + n]
        start += n
        tensors[name] = TensorHistogram(full, float(mins[i]), float(maxs[i]), bits, _trt_histogram(path, name, trt, i))
    return Statistics(tensors, meta)


def _trt_histogram(path: Path, name: str, arrays, i: int) -> TrtHistogram | None:
    if arrays is None or np.isnan(arrays[0][i]):
        return None
    first, upper, counts = arrays
    if counts.shape != (len(first), BINS) or not np.all(counts[i] >= 0) or not upper[i] >= first[i] >= 0:
        raise StatisticsFormatError(f"{path}: tensor '{name}' has an inconsistent TensorRT histogram")
    return TrtHistogram(counts[i].astype(np.int64), float(first[i]), float(upper[i]))
