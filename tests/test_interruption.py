"""An interrupted calibration never damages an existing output.

Processes are killed with SIGKILL exactly inside the atomic write (before the rename,
between the cache's and the sidecar's renames) and at random moments; the cache must
always parse and equal either the old or the new version, and the next run must not
trust a cache/sidecar pair that does not belong together. Ctrl-C exits 130, SIGTERM 143.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time

import pytest

from int8calib.writers.cache import read_cache
from int8calib.writers.provenance import provenance_dict, sidecar_path, write_with_sidecar
from trust_helpers import REPO, make_images, make_model, run_cli, write_spec

OLD = "TRT-8601-MinMaxCalibration\ninput: 3c010204\nconv: 3c010204\nrelu: 3c010204\npool: 3c010204\nlogits: 3c010204\n"

# Runs the CLI after arming a fault: "<function> <n> <signal>" sends the signal on the n-th call.
DRIVER = """
import os, signal, sys
import int8calib.util.atomic as atomic, int8calib.runner.onnxrt as onnxrt
target, n, sig = sys.argv[1], int(sys.argv[2]), getattr(signal, sys.argv[3])
calls = [0]
def armed(real):
    def wrapper(*args, **kwargs):
        calls[0] += 1
        if calls[0] == n:
            os.kill(os.getpid(), sig)
        return real(*args, **kwargs)
    return wrapper
if target == "replace":
    atomic.os.replace = armed(os.replace)
elif target == "fsync":
    atomic.os.fsync = armed(os.fsync)
elif target == "run":  # an ONNX Runtime run of the calibration pass
    onnxrt.ActivationRunner.run = armed(onnxrt.ActivationRunner.run)
from int8calib.cli import main
sys.exit(main(sys.argv[4:]))
"""


@pytest.fixture
def ws(tmp_path):
    make_model(tmp_path / "m.onnx")
    make_images(tmp_path / "imgs", 8)
    write_spec(tmp_path / "spec.json")
    write_old(tmp_path)
    return tmp_path


def write_old(ws):
    """The old cache and its sidecar, from an earlier minmax run."""
    write_with_sidecar(ws / "c.txt", OLD.encode(), provenance_dict("0" * 64, "minmax", {}, None, "0" * 64, "MinMaxCalibration"))


def args(ws):
    return ["calibrate", ws / "m.onnx", "--data", ws / "imgs", "--preprocess", ws / "spec.json",
            "--cache", ws / "c.txt", "--batch-size", "2", "--method", "entropy2", "-q"]


def run_armed(ws, target, n, sig):
    env = {"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin", "NUMBA_CACHE_DIR": "/tmp/numba-cache-trust"}
    return subprocess.run([sys.executable, "-c", DRIVER, target, str(n), sig, *map(str, args(ws))],
                          capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture(scope="module")
def new_cache(tmp_path_factory):
    """The cache an uninterrupted run writes (in an identical generated workspace)."""
    other = tmp_path_factory.mktemp("ref")
    make_model(other / "m.onnx")
    make_images(other / "imgs", 8)
    write_spec(other / "spec.json")
    proc = run_cli(*args(other))
    assert proc.returncode == 0, proc.stderr
    return (other / "c.txt").read_text()


@pytest.mark.parametrize("target, n", [("fsync", 1), ("replace", 1), ("replace", 2)])
def test_sigkill_inside_the_write(ws, new_cache, target, n):
    """fsync 1 / replace 1: the cache's temporary file is complete but not renamed;
    replace 2: the cache is renamed, its sidecar is not (a pair that does not belong together)."""
    proc = run_armed(ws, target, n, "SIGKILL")
    assert proc.returncode == -signal.SIGKILL
    text = (ws / "c.txt").read_text()
    assert text == (new_cache if (target, n) == ("replace", 2) else OLD)
    read_cache(ws / "c.txt")
    if (target, n) == ("replace", 2):
        # The next run sees a cache its sidecar does not describe: it recomputes instead of trusting it.
        proc = run_cli(*args(ws)[:-1])
        assert proc.returncode == 0 and "stale" in proc.stderr, proc.stderr
        record = json.loads(sidecar_path(ws / "c.txt").read_text())
        import hashlib

        assert record["output_sha256"] == hashlib.sha256((ws / "c.txt").read_bytes()).hexdigest()


def test_sigkill_at_random_moments(ws, new_cache):
    """Kill real runs at random times; the cache is always exactly the old or the new one."""
    start = time.perf_counter()
    assert run_cli(*args(ws)).returncode == 0
    duration = time.perf_counter() - start
    assert (ws / "c.txt").read_text() == new_cache
    rng = random.Random(6)
    for _ in range(4):
        write_old(ws)
        env = {"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin", "NUMBA_CACHE_DIR": "/tmp/numba-cache-trust"}
        proc = subprocess.Popen([sys.executable, "-m", "int8calib", *map(str, args(ws))], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.5, 1.1) * duration)
        proc.kill()
        proc.wait()
        text = (ws / "c.txt").read_text()
        assert text in (OLD, new_cache)
        read_cache(ws / "c.txt")
    leftovers = [p.name for p in ws.iterdir() if p.name.endswith(".tmp")]
    assert all(name.startswith(".c.txt.") for name in leftovers)  # only complete, unrenamed temporaries


@pytest.mark.parametrize("sig, code, word", [("SIGINT", 130, "interrupted"), ("SIGTERM", 143, "terminated")])
def test_ctrl_c_and_sigterm_exit_cleanly(ws, sig, code, word):
    proc = run_armed(ws, "run", 2, sig)
    assert proc.returncode == code, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == f"int8calib: {word}{' (SIGTERM)' if sig == 'SIGTERM' else ''}; no file was left half-written"
    assert (ws / "c.txt").read_text() == OLD
    assert not [p for p in ws.iterdir() if p.name.endswith(".tmp")]


def test_sigint_during_the_write_removes_the_temporary(ws):
    proc = run_armed(ws, "replace", 1, "SIGINT")
    assert proc.returncode == 130 and (ws / "c.txt").read_text() == OLD
    assert not [p for p in ws.iterdir() if p.name.endswith(".tmp")]
