"""The package surface: lazy imports and the names the README uses."""

import subprocess
import sys

import pytest


def test_import_loads_nothing_heavy():
    code = (
        "import sys, int8calib; "
        "print(sorted(m for m in ('onnxruntime', 'numba', 'matplotlib', 'onnx', 'PIL', 'tensorrt') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


@pytest.mark.parametrize(
    "name", ["calibrate", "collect", "inspect", "read_cache", "write_cache", "Preprocess", "EntropyCalibrator2",
             "EntropyCalibrator", "MinMaxCalibrator", "LegacyCalibrator", "Int8CalibError"],
)
def test_public_names_resolve(name):
    import int8calib

    assert getattr(int8calib, name) is not None


def test_subpackages_are_attributes():
    import int8calib

    assert callable(int8calib.zoo.efficientnet_lite0)
    assert callable(int8calib.evaluate.evaluate)
    assert "entropy2" in int8calib.methods.available()
    with pytest.raises(AttributeError):
        int8calib.no_such_thing


def test_malloc_arena_cap_applies_on_glibc():
    import platform

    from int8calib.util.memory import limit_malloc_arenas

    expected = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert limit_malloc_arenas() is expected


def test_progress_bars_only_on_a_terminal_and_not_when_quiet(monkeypatch):
    import io

    from int8calib.util import log

    items = [1, 2, 3]
    monkeypatch.setattr(log.sys, "stderr", io.StringIO())  # not a terminal
    log.configure(quiet=False)
    assert log.progress(items) is items

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(log.sys, "stderr", Terminal())
    bar = log.progress(items, total=3, desc="x")
    assert bar is not items and list(bar) == items
    log.configure(quiet=True)
    assert log.progress(items) is items
    log.configure()
