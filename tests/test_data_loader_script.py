"""--data-loader-script FILE.py[:func]: Polygraphy-style feed-dict loaders, generated here."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import int8calib
from int8calib.cli import main
from int8calib.errors import Int8CalibError
from int8calib.sources import load_data_loader_script
from int8calib.writers.cache import read_cache


def two_input_model(path: Path, batch="N") -> Path:
    """sum = a + b; out = Relu(sum); inputs a, b of shape [batch, 3]."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["sum"]), helper.make_node("Relu", ["sum"], ["out"])],
        "two",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [batch, 3]) for n in ("a", "b")],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [batch, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def script(tmp_path: Path, body: str, name: str = "loader.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


# Values whose maxima are known by construction: a in [-4, 2], b in [0, 5], a + b peaks at 6.5.
DATA = """
import numpy as np

A = np.array([[-4.0, 1.0, 2.0], [0.5, -1.0, 1.5], [2.0, 0.0, -3.0], [1.0, 1.0, 1.0]], np.float32)
B = np.array([[0.0, 5.0, 1.0], [6.0 - 0.5 - 1.5, 1.0, 5.0], [4.5, 0.0, 0.0], [0.0, 2.0, 0.0]], np.float32)

def load_data():
    for i in range(len(A)):            # batches of one, as most Polygraphy loaders do
        yield {"a": A[i:i + 1], "b": B[i:i + 1]}

def all_at_once():
    yield {"a": A, "b": B}

def without_batch_axis():
    for i in range(len(A)):
        yield {"a": A[i].astype(np.float64), "b": B[i].tolist()}
"""


def expected_amax():
    ns: dict = {}
    exec(textwrap.dedent(DATA), ns)
    a, b = ns["A"], ns["B"]
    return {"a": 4.0, "b": 5.0, "sum": float(np.abs(a + b).max()), "out": float(np.maximum(a + b, 0).max())}


def test_minmax_from_script_equals_hand_computed_maxima(tmp_path):
    model = two_input_model(tmp_path / "m.onnx")
    loader = script(tmp_path, DATA)
    result = int8calib.calibrate(model, load_data_loader_script(str(loader)), method="minmax")
    assert result.amax == pytest.approx(expected_amax(), rel=1e-6)
    assert result.samples == 4
    assert result.statistics.meta["data_sha256"] == load_data_loader_script(str(loader)).fingerprint()


@pytest.mark.parametrize("func", ["all_at_once", "without_batch_axis"])
def test_result_does_not_depend_on_how_the_loader_batches(tmp_path, func):
    model = two_input_model(tmp_path / "m.onnx")
    loader = script(tmp_path, DATA)
    # entropy2 follows TensorRT's batches (a yielded dict is one batch); its stable variant does not.
    per_row = int8calib.calibrate(model, load_data_loader_script(str(loader)), method="entropy2-stable")
    other = int8calib.calibrate(model, load_data_loader_script(f"{loader}:{func}"), method="entropy2-stable")
    assert other.amax == per_row.amax and other.samples == per_row.samples == 4
    for name in per_row.statistics.tensors:
        np.testing.assert_array_equal(per_row.statistics[name].counts, other.statistics[name].counts)


def test_python_generator_function_or_list_as_data(tmp_path):
    model = two_input_model(tmp_path / "m.onnx")

    def feeds():
        yield {"a": np.full((2, 3), -7.0, np.float32), "b": np.ones((2, 3), np.float32)}

    result = int8calib.calibrate(model, feeds, method="minmax")
    assert result.amax == {"a": 7.0, "b": 1.0, "sum": 6.0, "out": 0.0}
    as_list = int8calib.calibrate(model, list(feeds()), method="minmax")
    assert as_list.amax == result.amax and as_list.samples == 2


def test_fixed_batch_model_pads_short_batches_outside_the_statistics(tmp_path):
    model = two_input_model(tmp_path / "m.onnx", batch=4)
    loader = script(tmp_path, DATA)
    result = int8calib.calibrate(model, load_data_loader_script(str(loader)), method="minmax")
    assert result.samples == 4  # four batches of 1 row, each padded to 4 with zeros that are not counted
    assert result.statistics["a"].total == 4 * 3  # 48 if the zero padding had been histogrammed
    assert result.amax == pytest.approx(expected_amax(), rel=1e-6)


def test_cli_writes_cache(tmp_path, capsys):
    model = two_input_model(tmp_path / "m.onnx")
    loader = script(tmp_path, DATA)
    cache = tmp_path / "out.cache"
    code = main(["calibrate", str(model), "--data-loader-script", f"{loader}:load_data", "--method", "minmax", "--cache", str(cache), "-q"])
    assert code == 0
    assert read_cache(cache).amax == pytest.approx(expected_amax(), rel=1e-6)


BAD = {
    "missing function": ("def other():\n    yield {}\n", "loader.py: no function 'load_data' \\(defines other\\)"),
    "not callable": ("load_data = 3\n", "'load_data' is a int, not a function"),
    "syntax error": ("def load_data(:\n", "loader.py:1: syntax error"),
    "raises on import": ("import numpy\nraise RuntimeError('no GPU here')\n", "raised RuntimeError: no GPU here \\(loader.py:2\\) on import"),
    "returns None": ("def load_data():\n    return None\n", "loader.py:load_data: must return an iterable of feed dicts"),
    "yields a list": (
        "def load_data():\n    yield [1, 2]\n", "loader.py:load_data: item 1 is a list, expected a feed dict"
    ),
    "missing input": (
        "import numpy as np\ndef load_data():\n    yield {'a': np.zeros((1, 3), np.float32)}\n",
        "loader.py:load_data item 1: no array for model input\\(s\\) \\['b'\\]",
    ),
    "wrong shape": (
        "import numpy as np\ndef load_data():\n    yield {'a': np.zeros((1, 3)), 'b': np.zeros((1, 3))}\n"
        "    yield {'a': np.zeros((1, 4)), 'b': np.zeros((1, 4))}\n",
        "input 'a': data of shape \\[1, 4\\] does not match the model's \\['N', 3\\] on axis 1 \\(from .*loader.py:load_data item 2\\)",
    ),
    "batch sizes disagree": (
        "import numpy as np\ndef load_data():\n    yield {'a': np.zeros((2, 3)), 'b': np.zeros((1, 3))}\n",
        "item 1: arrays disagree on the batch size",
    ),
    "strings": (
        "def load_data():\n    yield {'a': [['x', 'y', 'z']], 'b': [[1, 2, 3]]}\n", "input 'a' has non-numeric type"
    ),
    "raises while iterating": (
        "import numpy as np\ndef load_data():\n    yield {'a': np.zeros((1, 3)), 'b': np.zeros((1, 3))}\n"
        "    raise FileNotFoundError('frames.bin')\n",
        "loader.py:load_data: raised FileNotFoundError: frames.bin \\(loader.py:4\\) while producing item 2",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_scripts_give_one_line_naming_the_script(tmp_path, capsys, case):
    body, pattern = BAD[case]
    model = two_input_model(tmp_path / "m.onnx")
    loader = script(tmp_path, body)
    code = main(["calibrate", str(model), "--data-loader-script", str(loader), "--cache", str(tmp_path / "c.cache"), "-q"])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("int8calib: error: "), err
    assert re.search(pattern, lines[0]), lines[0]
    assert not (tmp_path / "c.cache").exists()


def test_option_errors(tmp_path, capsys):
    model = two_input_model(tmp_path / "m.onnx")
    loader = script(tmp_path, DATA)
    cases = [
        (["--data-loader-script", str(tmp_path / "nope.py")], "nope.py: data loader script not found"),
        (["--data-loader-script", str(loader), "--data", "x.npz"], "either --data or --data-loader-script"),
        (["--data-loader-script", str(loader), "--preprocess", "imagenet"], "--preprocess does not apply"),
    ]
    for extra, message in cases:
        assert main(["calibrate", str(model), *extra, "-q"]) == 2
        assert message in capsys.readouterr().err


def test_preprocess_with_feed_dicts_rejected_in_python(tmp_path):
    model = two_input_model(tmp_path / "m.onnx")
    with pytest.raises(Int8CalibError, match="a preprocessing spec does not apply"):
        int8calib.calibrate(model, load_data_loader_script(str(script(tmp_path, DATA))), preprocess="imagenet")


def test_spec_parsing(tmp_path):
    from int8calib.sources.feeds import parse_script_spec

    assert parse_script_spec("dir/loader.py") == (Path("dir/loader.py"), "load_data")
    assert parse_script_spec("dir/loader.py:make") == (Path("dir/loader.py"), "make")
    assert parse_script_spec(r"C:\data\loader.py") == (Path(r"C:\data\loader.py"), "load_data")
    assert parse_script_spec(r"C:\data\loader.py:make") == (Path(r"C:\data\loader.py"), "make")
