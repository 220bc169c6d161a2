"""Calibration cost next to plain inference: int8calib vs onnxruntime.quantization.

    python benchmarks/calibration_speed.py [--model M.onnx] [--images LIST] [--batch-size 32]

Defaults: ../shared/models/efficientnet_lite0.onnx and the 500 shared ImageNet photos
with an even class index. Every row runs in a fresh subprocess, so its peak RSS
(``ru_maxrss`` of that process) is its own; a watchdog kills a run whose resident
memory passes ``--mem-cap`` (onnxruntime's Entropy and Percentile calibrators keep
every activation of every image) so a shared machine is never taken down.

Plain and int8calib rows run in ``--repeat`` rounds (default 3), each round running
every row once, side by side, and each row's fastest run counts: the speed of a shared
VM drifts by +-15 % from one run to the next and during the benchmark, and the fastest
run is the one least disturbed.

"wall s" is measured inside the subprocess around the work (model load, data
fingerprint, decode, inference, statistics, thresholds, outputs), after importing the
libraries both rows use; int8calib's numba kernel loads inside its measured time.
The baseline (a) decodes and preprocesses with the same loader (background
prefetch included) and runs the unmodified model in ONNX Runtime at the same batch
size. Another section measures histogram throughput on real activations.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _shared() -> Path:
    for candidate in (REPO.parent / "shared", Path("/work/shared")):
        if candidate.is_dir():
            return candidate
    return REPO.parent / "shared"


def _default_images(limit: int | None = None) -> list[str]:
    folder = _shared() / "data" / "imagenet-sample"
    rows = (folder / "labels.tsv").read_text().splitlines()[1:]
    images = [str(folder / r.split("\t")[0]) for r in rows if int(r.split("\t")[2]) % 2 == 0]
    return images[:limit] if limit else images


# ---- the measured work, one per subprocess -----------------------------------------------
def _work_plain(a) -> dict:
    import onnxruntime as ort

    from int8calib.batching import BatchLoader
    from int8calib.preprocess import Preprocess
    from int8calib.runner import load_model, model_inputs
    from int8calib.sources import resolve

    start = time.perf_counter()
    inputs = model_inputs(load_model(a.model, load_external_data=False))
    loader = BatchLoader(resolve(a.images), inputs, Preprocess.load(a.preprocess), a.batch_size)
    session = ort.InferenceSession(a.model, providers=["CPUExecutionProvider"])
    n = 0
    for batch in loader:
        session.run(None, batch.feeds)
        n += batch.n
    return {"seconds": time.perf_counter() - start, "images": n}


def _work_int8calib(a) -> dict:
    # The same libraries as (a) are imported before the clock starts (onnxruntime, onnx,
    # numpy, PIL and int8calib's own modules); numba, which (a) does not need, loads inside.
    import onnxruntime  # noqa: F401

    import int8calib.calibrator  # noqa: F401
    from int8calib.api import calibrate

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        # A cache needs every tensor; a Q/DQ model alone needs only its activation inputs.
        outputs = {"qdq": Path(tmp) / "model.qdq.onnx"} if a.output == "qdq" else {"cache": Path(tmp) / "calibration.cache"}
        result = calibrate(
            a.model, a.images, a.preprocess, method=None if a.method == "default" else a.method, batch_size=a.batch_size,
            workers=a.workers, max_memory=a.max_memory, **outputs,
        )
    return {"seconds": time.perf_counter() - start, "images": result.samples, "tensors": len(result.amax)}


def _work_ort(a) -> dict:
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, quantize_static

    from int8calib.batching import BatchLoader
    from int8calib.preprocess import Preprocess
    from int8calib.runner import load_model, model_inputs
    from int8calib.sources import resolve

    class Reader(CalibrationDataReader):
        def __init__(self):
            inputs = model_inputs(load_model(a.model, load_external_data=False))
            self.batches = iter(BatchLoader(resolve(a.images), inputs, Preprocess.load(a.preprocess), a.batch_size))
            self.images = 0

        def get_next(self):
            batch = next(self.batches, None)
            if batch is None:
                return None
            self.images += batch.n
            return batch.feeds

    start = time.perf_counter()
    reader = Reader()
    with tempfile.TemporaryDirectory() as tmp:
        quantize_static(
            a.model, Path(tmp) / "int8.onnx", reader, quant_format=QuantFormat.QDQ,
            calibrate_method=getattr(CalibrationMethod, a.method),
        )
    return {"seconds": time.perf_counter() - start, "images": reader.images}


def _work_histogram(a) -> dict:
    """Throughput on the activations collection histograms (4 images): kernel vs numpy on the same arrays."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from int8calib.batching import BatchLoader
    from int8calib.preprocess import Preprocess
    from int8calib.runner import ActivationRunner
    from int8calib.sources import resolve
    from int8calib.stats.kernels import accumulate

    runner = ActivationRunner(a.model, derive=True, any_layout=True)  # what collection reads
    batch = next(iter(BatchLoader(resolve(a.images)[:4], runner.inputs, Preprocess.load(a.preprocess), 4)))
    arrays = list(runner.run(batch.feeds).values())
    values = sum(x.size for x in arrays)
    counts = [np.zeros(256 << 8, np.int64) for _ in arrays]

    def best(fn, repeat=3):
        fn()
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return min(times)

    kernel = best(lambda: [accumulate(x, c, 8) for x, c in zip(arrays, counts)])
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        threaded = best(lambda: list(pool.map(lambda xc: accumulate(xc[0], xc[1], 8), zip(arrays, counts))))
    np_hist = best(lambda: [np.histogram(np.abs(x), bins=2048, range=(0, float(np.abs(x).max()) or 1.0)) for x in arrays], 2)

    def np_bits():
        for x in arrays:
            keys = (x.reshape(-1).view(np.uint32) & np.uint32(0x7FFFFFFF)) >> np.uint32(15)
            np.bincount(keys, minlength=256 << 8)
            x.min(), x.max()

    np_bincount = best(np_bits, 2)
    return {
        "values": values,
        "kernel_gps": values / kernel / 1e9,
        "kernel_threads_gps": values / threaded / 1e9,
        "numpy_histogram_gps": values / np_hist / 1e9,
        "numpy_bincount_gps": values / np_bincount / 1e9,
    }


WORK = {"plain": _work_plain, "int8calib": _work_int8calib, "ort": _work_ort, "histogram": _work_histogram}


# ---- the parent: one subprocess per row, RSS watchdog -----------------------------------------
def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_row(args: list[str], mem_cap: int, timeout: float) -> dict:
    """Run one measurement in a fresh process; kill it past ``mem_cap`` bytes of RSS."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with tempfile.NamedTemporaryFile("r", suffix=".json") as out:
        proc = subprocess.Popen(
            [sys.executable, __file__, "--child", out.name, *args], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        killed: list[str] = []
        done = threading.Event()

        def watch():  # never reaps the child: os.wait4 below must get its rusage
            start = time.monotonic()
            while not done.wait(0.05):
                if _rss_kb(proc.pid) * 1024 > mem_cap:
                    killed.append(f"killed at the {mem_cap / 2**30:.0f} GB memory cap")
                    proc.kill()
                    break
                elif time.monotonic() - start > timeout:
                    killed.append(f"killed after {timeout:.0f} s")
                    proc.kill()
                    break

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        _, status, usage = os.wait4(proc.pid, 0)
        done.set()
        proc.returncode = os.waitstatus_to_exitcode(status)
        watcher.join()
        stderr = proc.stderr.read()
        row = {"peak_rss_gb": usage.ru_maxrss * 1024 / 1e9, "cpu_s": usage.ru_utime + usage.ru_stime}
        if killed:
            row["error"] = killed[0]
        elif proc.returncode != 0:
            row["error"] = (stderr.strip().splitlines() or ["failed"])[-1][:120]
        else:
            row.update(json.loads(Path(out.name).read_text()))
        return row


def _machine() -> str:
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("model name")), platform.processor())
    import onnxruntime

    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GB RAM, {platform.system()}, Python {platform.python_version()}, onnxruntime {onnxruntime.__version__}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(_shared() / "models" / "efficientnet_lite0.onnx"))
    p.add_argument("--images", help="calibration list file (default: the 500 even-class shared photos)")
    p.add_argument("--preprocess", default="efficientnet-lite")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--methods", nargs="+", help="int8calib methods (default: all registered)")
    p.add_argument("--ort-subset", type=int, default=100, help="images for onnxruntime's Entropy/Percentile, rounded down to whole batches (default 100 -> 96)")
    p.add_argument("--small", type=int, default=100, help="also run entropy2 on this many images, for memory vs image count")
    p.add_argument("--workers", type=int, default=1, help="also run entropy2 with --workers N when N > 1")
    p.add_argument("--skip-ort", action="store_true", help="leave out onnxruntime.quantization")
    p.add_argument("--repeat", type=int, default=3, help="rounds of the plain and int8calib rows; each row's fastest counts (default 3)")
    p.add_argument("--mem-cap", type=float, default=8.0, help="GB of RSS at which a run is killed (default 8)")
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--markdown", help="also write the table to this file")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--kind", help=argparse.SUPPRESS)
    p.add_argument("--method", help=argparse.SUPPRESS)
    p.add_argument("--max-memory", help="int8calib's --max-memory for its rows (default: its own default)")
    p.add_argument("--output", default="cache", help=argparse.SUPPRESS)
    a = p.parse_args()

    if a.child:  # inside a measurement subprocess
        a.workers = a.workers or 1
        Path(a.child).write_text(json.dumps(WORK[a.kind](a)))
        return

    from int8calib.methods import available

    tmp = tempfile.TemporaryDirectory()
    if a.images is None:
        images = _default_images()
        a.images = str(Path(tmp.name) / "all.txt")
        Path(a.images).write_text("\n".join(images) + "\n")
    else:
        images = [l for l in Path(a.images).read_text().splitlines() if l.strip() and not l.startswith("#")]
    n = len(images)

    def subset(k: int) -> str:
        path = Path(tmp.name) / f"first{k}.txt"
        path.write_text("\n".join(images[:k]) + "\n")
        return str(path)

    common = ["--model", a.model, "--preprocess", a.preprocess, "--batch-size", str(a.batch_size)]
    common += ["--max-memory", a.max_memory] if a.max_memory else []
    rows: list[tuple[str, int, dict]] = []

    def run(kind: str, images_file: str, *extra: str) -> dict:
        return run_row([*common, "--kind", kind, "--images", images_file, *extra], int(a.mem_cap * 2**30), a.timeout)

    def report(label: str, count: int, result: dict) -> dict:
        rows.append((label, count, result))
        shown = f"{result['seconds']:.1f} s" if "seconds" in result else result["error"]
        print(f"  {label:48s} {count:4d} img  {shown:>10s}  CPU {result['cpu_s']:6.1f} s  peak RSS {result['peak_rss_gb']:.2f} GB", flush=True)
        return result

    def fastest(results: list[dict]) -> dict:
        return min(results, key=lambda r: r.get("seconds", float("inf")))

    print(f"machine: {_machine()}\nmodel: {a.model}, {n} images, batch {a.batch_size}; best of {a.repeat} rounds", flush=True)
    # The plain baseline and every int8calib row run once per round, side by side, so a
    # drift of the machine's speed during the benchmark hits them alike; the fastest counts.
    specs = [("(a) plain decode + preprocess + ORT FP32 inference", n, "plain", a.images)]
    specs += [(f"(b) int8calib calibrate --method {m}", n, "int8calib", a.images, "--method", m) for m in a.methods or available()]
    specs.append(("(b) int8calib calibrate --method entropy2 --qdq (Q/DQ model only)", n, "int8calib", a.images,
                  "--method", "entropy2", "--output", "qdq"))
    specs.append(("(b) int8calib calibrate --qdq (default: --method auto, bias correction)", n, "int8calib", a.images,
                  "--method", "default", "--output", "qdq"))
    if a.small and a.small < n:
        specs.append(("(b) int8calib calibrate --method entropy2", a.small, "int8calib", subset(a.small), "--method", "entropy2"))
    if a.workers > 1:
        specs.append((f"(b) int8calib calibrate entropy2 --workers {a.workers}", n, "int8calib", a.images,
                      "--method", "entropy2", "--workers", str(a.workers)))
    results: list[list[dict]] = [[] for _ in specs]
    for _ in range(a.repeat):
        for spec, kept in zip(specs, results):
            kept.append(run(*spec[2:]))
    base = None
    for spec, kept in zip(specs, results):
        best = report(spec[0], spec[1], fastest(kept))
        base = base or best
    if not a.skip_ort:  # minutes per run, and 5-20x slower: one run each
        report("(c) onnxruntime quantize_static MinMax", n, run("ort", a.images, "--method", "MinMax"))
        # onnxruntime's Entropy/Percentile calibrators fail on a short last batch
        # ("inhomogeneous shape"): give them whole batches only.
        k = max(a.batch_size, min(a.ort_subset, n) // a.batch_size * a.batch_size)
        small = base
        if k < n:
            label = f"(a) plain inference (baseline for {k} images)"
            small = report(label, k, fastest([run("plain", subset(k)) for _ in range(a.repeat)]))
        for method in ("Entropy", "Percentile"):
            r = report(f"(c) onnxruntime quantize_static {method}", k, run("ort", subset(k), "--method", method))
            r["baseline"] = small
    hist = run_row([*common, "--kind", "histogram", "--images", a.images], int(a.mem_cap * 2**30), a.timeout)

    lines = [
        f"Machine: {_machine()}.",
        f"Model: {Path(a.model).name}; batch size {a.batch_size}.",
        "",
        "| run | images | wall s | ratio to (a) | CPU s | CPU ratio | peak RSS GB |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, count, r in rows:
        ref = r.get("baseline", base)
        if "seconds" in r and "seconds" in ref:
            per_image = (r["seconds"] / count) / (ref["seconds"] / ref["images"])
            cpu = (r["cpu_s"] / count) / (ref["cpu_s"] / ref["images"])
            lines.append(
                f"| {label} | {count} | {r['seconds']:.1f} | {per_image:.2f}x | {r['cpu_s']:.1f} | {cpu:.2f}x | {r['peak_rss_gb']:.2f} |"
            )
        else:
            lines.append(f"| {label} | {count} | {r.get('error', '-')} | - | {r['cpu_s']:.1f} | - | {r['peak_rss_gb']:.2f} |")
    lines.append("")
    lines.append(
        "Ratios compare time per image with the plain-inference run on the same number of images. CPU s is the "
        "process's user + system time (all threads, worker processes included): on a shared machine it is steadier "
        "than wall time."
    )
    if "values" in hist:
        lines.append(
            f"Histogram throughput on {hist['values'] / 1e6:.0f} M real activation values (4 images): "
            f"int8calib kernel {hist['kernel_gps']:.2f} G values/s on 1 thread, {hist['kernel_threads_gps']:.2f} G/s "
            f"on {os.cpu_count()} threads; numpy.histogram(|x|, 2048 bins) {hist['numpy_histogram_gps']:.3f} G/s; "
            f"numpy bit-pattern bincount {hist['numpy_bincount_gps']:.3f} G/s "
            f"(kernel / numpy.histogram = {hist['kernel_gps'] / hist['numpy_histogram_gps']:.0f}x)."
        )
    table = "\n".join(lines)
    print("\n" + table)
    if a.markdown:
        Path(a.markdown).write_text(table + "\n")


if __name__ == "__main__":
    main()
