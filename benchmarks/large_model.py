"""A model over protobuf's 2 GB: calibrate --qdq end to end, time and peak memory (docs/qdq.md).

    PYTHONPATH=src python benchmarks/large_model.py [--layers 9] [--width 8192] [--folder /tmp/int8calib-large]

Generates an MLP of ``--layers`` MatMul + bias Add + Relu layers, ``--width`` wide (random weights, 9 x 8192 x
8192 float32 = 2.4 GB by default), written with external data the way exporters write large models, and 16
random input rows. Then, each in a process of its own so its peak RSS is its own:

1. ``int8calib calibrate big.onnx --data x.npy --method minmax --qdq big.qdq.onnx`` (bias correction and the
   INT8 + FP16 model as by default): wall time and peak RSS;
2. ONNX Runtime loads the written Q/DQ model (graph + ``big.qdq.onnx.data``) and runs it against the float
   model: output SQNR, peak RSS.

Peak RSS counts the weights mapped from their files (page cache, reclaimable; a file mapped by two ONNX
Runtime sessions counts twice), so the anonymous part (RssAnon: copies in RAM) is sampled beside it.

The weights are generated and written one layer at a time, so generating the model holds one layer in RAM.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def generate(folder: Path, layers: int, width: int, seed: int = 0) -> Path:
    from onnx import TensorProto, helper, numpy_helper

    from int8calib.runner.model import refer_to_file

    rng = np.random.default_rng(seed)
    model_path, data_name = folder / "big.onnx", "big.onnx.data"
    inits, nodes, offset = [], [], 0
    with open(folder / data_name, "wb") as data:
        x = "x"
        for k in range(layers):
            w = (rng.standard_normal((width, width), dtype=np.float32) / np.sqrt(width)).astype(np.float32)
            t = TensorProto(name=f"w{k}", data_type=TensorProto.FLOAT, dims=w.shape)
            refer_to_file(t, data_name, offset, w.nbytes)
            data.write(w.tobytes())
            offset += w.nbytes
            del w
            inits += [t, numpy_helper.from_array((rng.standard_normal(width) * 0.1).astype(np.float32), f"b{k}")]
            out = "y" if k == layers - 1 else f"h{k}"
            nodes += [helper.make_node("MatMul", [x, f"w{k}"], [f"m{k}"], f"fc{k}"),
                      helper.make_node("Add", [f"m{k}", f"b{k}"], [f"a{k}"] if k < layers - 1 else [out], f"bias{k}")]
            if k < layers - 1:
                nodes.append(helper.make_node("Relu", [f"a{k}"], [out], f"relu{k}"))
            x = out
    graph = helper.make_graph(nodes, "big", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", width])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    model_path.write_bytes(model.SerializeToString())
    np.save(folder / "x.npy", rng.standard_normal((16, width)).astype(np.float32))
    return model_path


def peak_rss_child(argv: list[str]) -> tuple[float, dict[str, float], str]:
    """(wall seconds, peak memory in GB, stderr tail) of a child process. Peaks of the child's RSS and
    of its anonymous part (RssAnon: heap, ONNX Runtime's buffers) and file-backed part (RssFile: weights
    mapped from their files, page cache the kernel can reclaim; a file mapped twice counts twice), sampled
    every 50 ms from /proc."""
    import threading

    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peaks = {"VmRSS": 0, "RssAnon": 0, "RssFile": 0}

    def sample():
        while proc.poll() is None:
            try:
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                    key, _, value = line.partition(":")
                    if key in peaks:
                        peaks[key] = max(peaks[key], int(value.split()[0]))
            except (OSError, ValueError):
                pass
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, stderr = proc.communicate()
    sampler.join()
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(argv)}\n{stderr[-2000:]}")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    memory = {"peak_rss_gb": round(usage.ru_maxrss / 2**20, 2), **{f"peak_{k}_gb": round(v / 2**20, 2) for k, v in peaks.items()}}
    return wall, memory, stderr[-1500:]


CHECK = """
import json, sys, resource, numpy as np, onnxruntime as ort
folder = sys.argv[1]
x = np.load(folder + "/x.npy")
options = ort.SessionOptions(); options.add_session_config_entry("session.disable_quant_qdq", "1")
q = ort.InferenceSession(folder + "/big.qdq.onnx", options).run(["y"], {"x": x})[0].astype(np.float64)
f = ort.InferenceSession(folder + "/big.onnx").run(["y"], {"x": x})[0].astype(np.float64)
sqnr = 10 * np.log10((f ** 2).sum() / ((f - q) ** 2).sum())
print(json.dumps({"sqnr_db": sqnr, "finite": bool(np.isfinite(q).all()),
                  "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=9)
    parser.add_argument("--width", type=int, default=8192)
    parser.add_argument("--folder", default="/tmp/int8calib-large")
    args = parser.parse_args()
    folder = Path(args.folder)
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    model = generate(folder, args.layers, args.width)
    weights = (folder / "big.onnx.data").stat().st_size
    print(f"generated {model} + {weights / 1e9:.2f} GB of weights in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    wall, rss, log = peak_rss_child([sys.executable, "-m", "int8calib", "calibrate", str(model), "--data",
                                     str(folder / "x.npy"), "--method", "minmax", "--qdq", str(folder / "big.qdq.onnx")])
    print(log, file=sys.stderr)
    written = {p.name: p.stat().st_size for p in folder.glob("big.qdq.onnx*")}
    check = subprocess.run([sys.executable, "-c", CHECK, str(folder)], capture_output=True, text=True)
    if check.returncode != 0:
        raise SystemExit(check.stderr[-2000:])
    result = json.loads(check.stdout)
    print(json.dumps({"float_weights_gb": weights / 1e9, "calibrate_qdq_seconds": round(wall, 1),
                      "calibrate_memory": rss, "written_bytes": written, "check": result}, indent=1))


if __name__ == "__main__":
    main()
