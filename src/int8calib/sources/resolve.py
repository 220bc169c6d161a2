"""Resolving calibration data into samples.

* a list file (``calibration_list_imagenet.txt``): one path per line, relative paths
  against the list's folder, blank lines and ``#`` comments ignored, CRLF tolerated;
* a directory, searched recursively: images, or ``.npy`` / ``.npz`` files (both kinds in one
  directory is an error, so is a directory with neither);
* a glob pattern (``images/*.jpg``, ``tensors/*.npy``);
* a single image, ``.npy`` (one sample, or a batch along axis 0) or ``.npz``
  (one array per model input name, each one sample or a batch).

Directory and glob files are sorted by their path as a string (plain ``sorted()``, no natural
sort: ``b10.npy`` comes before ``b2.npy``), so ``DIR`` and ``DIR/*.npy`` give the same files in
the same order when ``DIR`` has no subfolders (``DIR/**/*.npy`` when it has), except that a
directory includes hidden files and a glob does not. Every tensor file, whichever way it was
named, goes through :func:`_expand_tensor_file`: an array of the input's rank is a batch whose
rows (along the input's batch axis, docs/inputs.md) become samples in row order, an array one
rank short is one sample; an input without a batch axis takes its whole array, the same for
every sample of the file.
The order is deterministic (as listed or sorted); ``shuffle=SEED`` permutes it reproducibly.
"""

from __future__ import annotations

import glob as globlib
import hashlib
import random
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import Int8CalibError
from ..util.npy import NPY_LOCK

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
TENSOR_EXTENSIONS = {".npy", ".npz"}


@dataclass(frozen=True)
class Sample:
    """One calibration sample: an image, or row ``index`` of a tensor file (None: the whole file)."""

    path: Path
    index: int | None = None
    origin: str = ""  # "list.txt:12" when it came from a list line, for error messages

    @property
    def kind(self) -> str:
        suffix = self.path.suffix.lower()
        return suffix[1:] if suffix in TENSOR_EXTENSIONS else "image"

    def __str__(self) -> str:
        where = f"{self.path}" + (f"[{self.index}]" if self.index is not None else "")
        return f"{where} ({self.origin})" if self.origin else where


def _read_list(path: Path) -> list[tuple[Path, str]]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise Int8CalibError(f"{path}: cannot read calibration list ({exc.strerror})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise Int8CalibError(f"{path}:{line}: calibration list is not UTF-8 text") from None
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        p = Path(line).expanduser()
        entries.append((p if p.is_absolute() else path.parent / p, f"{path}:{number}"))
    if not entries:
        raise Int8CalibError(f"{path}: calibration list has no entries")
    return entries


def _is_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def _expand_tensor_file(path: Path, origin: str, input_ranks: dict[str, int]) -> list[Sample]:
    """Samples in a .npy/.npz file: one per row when it holds a batch."""
    try:
        if path.suffix.lower() == ".npy":
            if len(input_ranks) != 1:
                raise Int8CalibError(
                    f"{path}: the model has inputs {sorted(input_ranks)}; give one .npz per sample or batch "
                    "with an array named after each input"
                )
            with NPY_LOCK:
                arr = np.load(path, mmap_mode="r", allow_pickle=False)
            shapes = {next(iter(input_ranks)): arr.shape}
        else:
            with NPY_LOCK, np.load(path, allow_pickle=False) as z:
                missing = sorted(set(input_ranks) - set(z.files))
                if missing:
                    raise Int8CalibError(f"{path}: no array for model input(s) {missing} (has {sorted(z.files)})")
                shapes = {name: z[name].shape for name in input_ranks}
    except Int8CalibError:
        raise
    except FileNotFoundError:
        raise Int8CalibError(f"{path}: tensor file not found" + (f" ({origin})" if origin else "")) from None
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as exc:
        raise Int8CalibError(f"{path}: cannot read tensor file ({exc})") from None
    counts = set()
    for name, shape in shapes.items():
        rank, axis = _layout(input_ranks[name])
        if axis is None:  # no batch axis: the same value for every sample of the file
            if len(shape) != rank:
                raise Int8CalibError(
                    f"{path}: array for input '{name}' has shape {list(shape)}; the input has no batch axis, "
                    f"so give its value of rank {rank}"
                )
        elif len(shape) == rank:
            counts.add(shape[axis])
        elif len(shape) == rank - 1:
            counts.add(None)
        else:
            raise Int8CalibError(
                f"{path}: array for input '{name}' has shape {list(shape)}; the input has rank {rank} "
                f"(give one sample of rank {rank - 1} or a batch of rank {rank}, batch on axis {axis})"
            )
    counts = counts or {None}
    if len(counts) != 1:
        raise Int8CalibError(f"{path}: arrays disagree on the number of samples ({sorted(map(str, counts))})")
    count = counts.pop()
    if count is None:
        return [Sample(path, None, origin)]
    return [Sample(path, i, origin) for i in range(count)]


def _layout(value: "int | tuple[int, int | None]") -> tuple[int, int | None]:
    """(rank, batch axis) of an input; a bare rank means the batch is on axis 0."""
    return (value, 0) if isinstance(value, int) else (value[0], value[1])


def _directory_files(path: Path) -> list[Path]:
    """The images, or else the tensor files, under ``path`` (recursively), sorted like a glob's matches."""
    found = sorted(
        (p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS | TENSOR_EXTENSIONS and p.is_file()), key=str
    )
    images = [p for p in found if p.suffix.lower() in IMAGE_EXTENSIONS]
    tensors = [p for p in found if p.suffix.lower() in TENSOR_EXTENSIONS]
    if images and tensors:
        raise Int8CalibError(
            f"{path}: directory mixes images ({len(images)}, e.g. {images[0].relative_to(path)}) and tensor files "
            f"({len(tensors)}, e.g. {tensors[0].relative_to(path)}); keep one kind per directory"
        )
    if not found:
        raise Int8CalibError(
            f"{path}: directory has no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) "
            f"and no tensor files ({', '.join(sorted(TENSOR_EXTENSIONS))})"
        )
    return found


def resolve(
    data: "str | Path | Sequence[str | Path]",
    input_ranks: "dict[str, int | tuple[int, int | None]] | None" = None,
    shuffle: int | None = None,
) -> list[Sample]:
    """Expand ``data`` into samples; ``input_ranks`` ({input: rank} or {input: (rank, batch axis or
    None)}, ``InputInfo.layout``) is needed for tensor files."""
    input_ranks = input_ranks or {}
    entries: list[tuple[Path, str]] = []
    if isinstance(data, (list, tuple)):
        entries = [(Path(p), "") for p in data]
    else:
        text = str(data)
        path = Path(text).expanduser()
        if path.is_dir():
            entries = [(p, "") for p in _directory_files(path)]
        elif _is_glob(text) and not path.exists():
            entries = [(Path(p), "") for p in sorted(globlib.glob(text, recursive=True)) if Path(p).is_file()]
            if not entries:
                raise Int8CalibError(f"{text}: glob pattern matches no files")
        elif path.suffix.lower() in IMAGE_EXTENSIONS | TENSOR_EXTENSIONS:
            entries = [(path, "")]
        elif path.is_file():
            entries = _read_list(path)
        else:
            raise Int8CalibError(f"{text}: calibration data not found (expected a list file, directory, glob, image, .npy or .npz)")
    samples: list[Sample] = []
    for p, origin in entries:
        if p.suffix.lower() in TENSOR_EXTENSIONS:
            samples.extend(_expand_tensor_file(p, origin, input_ranks))
        else:
            samples.append(Sample(p, None, origin))
    if shuffle is not None:
        random.Random(shuffle).shuffle(samples)
    return samples


def sample_digests(samples: Sequence[Sample]) -> list[str]:
    """'<SHA-256 of the file>|<row>' for every sample, in order; each file read once."""
    digests = []
    file_hashes: dict[Path, str] = {}
    for s in samples:
        if s.path not in file_hashes:
            h = hashlib.sha256()
            try:
                with open(s.path, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
            except OSError:
                h.update(b"<unreadable>" + str(s.path).encode("utf-8", "surrogateescape"))
            file_hashes[s.path] = h.hexdigest()
        digests.append(f"{file_hashes[s.path]}|{s.index}")
    return digests


def data_fingerprint(samples: Sequence[Sample], digests: Sequence[str] | None = None) -> str:
    """SHA-256 over the content of every sample (file content and row index), order-independent.

    Only what reaches the model counts: the same images under another folder, name or
    order give the same statistics and so the same fingerprint; one changed byte does not.
    Files are hashed, never decoded, so this is cheap next to running the model.
    """
    digests = sample_digests(samples) if digests is None else digests
    return hashlib.sha256("\n".join(sorted(digests)).encode()).hexdigest()


def batching_fingerprint(samples: Sequence[Sample], batch_size: int, digests: Sequence[str] | None = None) -> str:
    """'<batch size>:<SHA-256 over the samples in order>': what TensorRT's order-dependent
    histograms (entropy2) depend on beyond :func:`data_fingerprint`."""
    digests = sample_digests(samples) if digests is None else digests
    return f"{batch_size}:" + hashlib.sha256("\n".join(digests).encode()).hexdigest()
