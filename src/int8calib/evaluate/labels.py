"""Ground-truth labels: a TSV or CSV file whose header names ``file`` and ``class_index`` columns."""

from __future__ import annotations

import csv
from pathlib import Path

from ..errors import Int8CalibError


def read_labels(path: str | Path) -> dict[str, int]:
    """{file name: class index}; the ``file`` column is matched on its last path component."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise Int8CalibError(f"{path}: labels file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise Int8CalibError(f"{path}: cannot read labels file ({exc})") from None
    lines = text.splitlines()
    if not lines:
        raise Int8CalibError(f"{path}: labels file is empty")
    delimiter = "\t" if "\t" in lines[0] else ","
    rows = csv.reader(lines, delimiter=delimiter)
    header = [h.strip() for h in next(rows)]
    missing = [c for c in ("file", "class_index") if c not in header]
    if missing:
        raise Int8CalibError(f"{path}:1: header has no {' or '.join(missing)} column (found {', '.join(header)})")
    col_file, col_class = header.index("file"), header.index("class_index")
    labels: dict[str, int] = {}
    for number, row in enumerate(rows, start=2):
        if not row or not any(cell.strip() for cell in row):
            continue
        if len(row) <= max(col_file, col_class):
            raise Int8CalibError(f"{path}:{number}: expected {len(header)} columns, got {len(row)}")
        name = Path(row[col_file].strip()).name
        try:
            labels[name] = int(row[col_class].strip())
        except ValueError:
            raise Int8CalibError(f"{path}:{number}: class_index {row[col_class]!r} is not an integer") from None
    if not labels:
        raise Int8CalibError(f"{path}: labels file has no rows")
    return labels
