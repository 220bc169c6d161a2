"""The benchmarks' common split of ../shared: EfficientNet-Lite0, the 500 even-class photos to
calibrate on and the 500 odd-class ones to evaluate on (labels.tsv order)."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

PRESET = "efficientnet-lite"


def arguments(description: str) -> argparse.Namespace:
    """--shared (default: ../shared beside the checkout) and --batch-size (default 32)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--shared", default=str(Path(__file__).resolve().parents[1].parent / "shared"))
    parser.add_argument("--batch-size", type=int, default=32)
    return parser.parse_args()


def split(shared: "str | Path") -> tuple[Path, Path, list[str], list[str]]:
    """(model, labels.tsv, even-class photos, odd-class photos)."""
    shared = Path(shared)
    folder = shared / "data" / "imagenet-sample"
    with open(folder / "labels.tsv", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    even = [str(folder / r["file"]) for r in rows if int(r["class_index"]) % 2 == 0]
    odd = [str(folder / r["file"]) for r in rows if int(r["class_index"]) % 2 == 1]
    return shared / "models" / "efficientnet_lite0.onnx", folder / "labels.tsv", even, odd
