"""Time and size of the HTML report on EfficientNet-Lite0 (target: a few seconds, well under 1 MB).

    python benchmarks/report_generation.py [--images 64] [--out report.html]

Collects statistics on the first N calibration photos (even class index) of ../shared,
computes every method's ranges, then times ``write_report`` alone.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from int8calib.calibrator import Calibrator
from int8calib.collection import collect_statistics
from int8calib.methods import compute_ranges
from int8calib.report import method_ranges, write_report
from int8calib.runner import ActivationRunner

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    for candidate in (REPO.parent / "shared", Path("/work/shared")):
        if (candidate / "models" / "efficientnet_lite0.onnx").is_file():
            return candidate
    raise SystemExit("../shared not found")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    shared = shared_dir()
    folder = shared / "data" / "imagenet-sample"
    rows = [r.split("\t") for r in (folder / "labels.tsv").read_text().splitlines()[1:]]
    images = [str(folder / r[0]) for r in rows if int(r[2]) % 2 == 0][: args.images]
    with tempfile.TemporaryDirectory() as tmp:
        listing = Path(tmp) / "calib.txt"
        listing.write_text("\n".join(images) + "\n")
        runner = ActivationRunner(shared / "models" / "efficientnet_lite0.onnx")
        calibrator = Calibrator(str(listing), runner.inputs, "efficientnet-lite", 32)
        t0 = time.perf_counter()
        stats = collect_statistics(calibrator.loader, runner)
        t1 = time.perf_counter()
        ranges = method_ranges(stats, "entropy2", compute_ranges("entropy2", stats))
        t2 = time.perf_counter()
        out = args.out or Path(tmp) / "report.html"
        write_report(out, stats, ranges, "entropy2")
        t3 = time.perf_counter()
        print(f"{len(stats)} tensors, {args.images} images, methods {list(ranges)}")
        print(f"statistics {t1 - t0:.1f} s, ranges of all methods {t2 - t1:.1f} s, "
              f"write_report {t3 - t2:.2f} s, file {out.stat().st_size / 1024:.0f} KB")


if __name__ == "__main__":
    main()
