"""The code samples of docs/data-loader-script.md and docs/demo-and-zoo.md, executed.

Python blocks run in order in one namespace (a block whose first line is ``# NAME.py`` is
also written to that file); ``console`` blocks run each ``$ int8calib ...`` line through the
CLI. ``sh`` blocks are installation / demo commands covered by test_demo.py.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from int8calib.cli import main

DOCS = Path(__file__).resolve().parents[1] / "docs"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def blocks(page: str) -> list[tuple[str, str]]:
    return FENCE.findall((DOCS / page).read_text())


def conv_model(path: Path) -> None:
    """model.onnx for the samples: input [N, 3, 224, 224] -> 1x1 Conv -> Relu."""
    w = numpy_helper.from_array(np.full((2, 3, 1, 1), 0.5, np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w"], ["conv"]), helper.make_node("Relu", ["conv"], ["out"])],
        "doc",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 224, 224])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 2, 224, 224])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def run_page(page: str, namespace: dict) -> str:
    printed = io.StringIO()
    for lang, code in blocks(page):
        if lang == "python":
            first = code.splitlines()[0]
            if re.fullmatch(r"# [\w.-]+\.py", first):
                Path(first[2:]).write_text(code)
            with contextlib.redirect_stdout(printed):
                exec(compile(code, f"{page} sample", "exec"), namespace)
        elif lang == "console":
            for line in code.splitlines():
                if line.startswith("$ int8calib "):
                    assert main([*shlex.split(line[len("$ int8calib "):]), "-q"]) == 0, line
    return printed.getvalue()


def test_data_loader_script_page(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    conv_model(tmp_path / "model.onnx")
    langs = [lang for lang, _ in blocks("data-loader-script.md")]
    assert langs.count("python") == 2 and langs.count("console") == 1
    namespace: dict = {}
    run_page("data-loader-script.md", namespace)
    assert (tmp_path / "calibration.cache").is_file() and (tmp_path / "ranges.json").is_file()
    assert set(namespace["result"].amax) == {"input", "conv", "out"}


def test_demo_and_zoo_page(tmp_path, monkeypatch):
    monkeypatch.setenv("INT8CALIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    assert [lang for lang, _ in blocks("demo-and-zoo.md")] == ["sh", "python"]
    printed = run_page("demo-and-zoo.md", {})
    assert printed.strip() == "espresso"
