"""The HTML report: numbers derived by hand, content of the page, and a real browser render."""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from tinymodels import residual_cnn

from int8calib.errors import Int8CalibError
from int8calib.methods import available, compute_ranges
from int8calib.report import method_ranges, write_report
from int8calib.report.html import READY_MARKER
from int8calib.report.ranking import summarize, summarize_tensor, where_to_look
from int8calib.stats import Statistics, StatsCollector

CONSOLE_ERROR = r"CONSOLE[^\n]*(Uncaught|Error)"  # how --enable-logging=stderr reports page errors
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture
def plots():
    """Pages need matplotlib (the test extra has it): skip locally without it, fail in CI."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        if IN_CI:
            pytest.fail("matplotlib is missing: install int8calib[test]")
        pytest.skip("matplotlib not installed")


def _hist(values):
    collector = StatsCollector()
    collector.collect({"t": np.asarray(values, np.float32)})
    return collector.result().tensors["t"]


# ---- numbers -----------------------------------------------------------------

def test_quantile_matches_numpy_within_a_bin(rng):
    x = rng.standard_normal(200_000).astype(np.float32) * 3
    h = _hist(x)
    for q in (0.5, 0.9, 0.999, 0.9999):
        expected = np.quantile(np.abs(x), q)
        assert h.quantile(q) == pytest.approx(expected, rel=0.005)  # bins are 0.39 % wide
    assert h.quantile(1.0) == pytest.approx(np.abs(x).max(), rel=1e-6)


def test_summary_numbers_by_hand():
    # 500 zeros, 250 x 0.01, 650 x 1.0, 100 x 10.0; chosen amax 5:
    #   clipped = 100 / 1500; half an INT8 step = 5 / 254 = 0.0197 > 0.01, so 250 of the
    #   1000 non-zero values round to 0; spread = 10 / 5 = 2 (not above the 2x flag)
    values = np.concatenate([np.zeros(500), np.full(250, 0.01), np.full(650, 1.0), np.full(100, -10.0)])
    s = summarize_tensor("t", _hist(values), {"a": 5.0, "b": 10.0}, 5.0, None)
    assert s.total == 1500
    assert s.zero_fraction == pytest.approx(500 / 1500)
    assert s.clipped == pytest.approx(100 / 1500)
    assert s.underflow == pytest.approx(0.25)
    assert s.spread == pytest.approx(2.0)
    assert s.tail_ratio == pytest.approx(1.0)
    assert s.max_abs == 10.0
    assert s.reasons == ["clips 6.67% of values at amax 5 (max |x| 10)"]


def test_ranking_reasons_come_from_the_numbers(rng):
    bulk = rng.uniform(-1, 1, 100_000)
    stats = Statistics({
        "quiet": _hist(bulk),
        "outlier": _hist(np.concatenate([bulk, [400.0]])),  # one value 400x the bulk
        "noisy": _hist(bulk),
    })
    ranges = {"minmax": compute_ranges("minmax", stats), "tight": {"quiet": 1.0, "outlier": 1.0, "noisy": 1.0}}
    summaries = summarize(stats, ranges, "minmax", per_layer_sqnr={"quiet": 40.0, "outlier": 35.0, "noisy": 12.0})
    by_name = {s.name: s for s in summaries}
    assert by_name["quiet"].reasons == []
    outlier = by_name["outlier"]
    assert outlier.spread == pytest.approx(400.0, rel=1e-3)
    assert outlier.tail_ratio == pytest.approx(400.0, rel=0.01)
    assert any("methods disagree 400.0x: tight 1 vs minmax 400" in r for r in outlier.reasons)
    assert any("rare outliers" in r for r in outlier.reasons)
    # amax 400: half a step is 1.57, so every bulk value rounds to 0
    assert outlier.underflow == pytest.approx(1.0, abs=1e-4)
    assert by_name["noisy"].reasons[0] == "low per-layer SQNR: 12.0 dB"
    assert [s.name for s in where_to_look(summaries)] == ["outlier", "noisy"]


# ---- the page ----------------------------------------------------------------

@pytest.fixture
def tiny(tmp_path, rng):
    model = tmp_path / "tiny.onnx"
    residual_cnn(model)
    data = tmp_path / "x.npy"
    np.save(data, (rng.standard_normal((48, 3, 8, 8)) * 2).astype(np.float32))
    return model, data


def test_calibrate_writes_a_self_contained_report(plots, tiny, tmp_path):
    from int8calib.api import calibrate

    model, data = tiny
    out = tmp_path / "report.html"
    result = calibrate(model, str(data), method="entropy2", batch_size=16, report=out)
    page = out.read_text()
    tensors = list(result.statistics.tensors)
    assert len(tensors) >= 3
    ranges = {m: compute_ranges(m, result.statistics) for m in available()}
    for name in tensors:
        assert '<a href="#' in page and f">{name}</a>" in page  # table row
        assert f'<div class="name">{name}</div>' in page  # histogram card
        for m in available():
            assert f"{ranges[m][name]:.5g}" in page
    assert re.findall(r"https?:|//cdn|<link|<script src", page, flags=re.I) == []
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == len(tensors)
    from PIL import Image

    assert Image.open(io.BytesIO(base64.b64decode(images[0]))).size == (240, 130)
    assert all(src.startswith(("data:", "#")) for src in re.findall(r'(?:src|href)="([^"]*)"', page))


def test_cli_report_option(plots, tiny, tmp_path):
    from int8calib.cli import main

    model, data = tiny
    out = tmp_path / "r.html"
    assert main(["calibrate", str(model), "--data", str(data), "--method", "minmax", "--report", str(out), "-q"]) == 0
    assert "chosen method <b>minmax</b>" in out.read_text()


def test_sqnr_and_evaluation_appear(plots, rng, tmp_path):
    stats = Statistics({"a": _hist(rng.standard_normal(1000)), "b<&>": _hist(rng.standard_normal(1000))})
    ranges = method_ranges(stats)
    out = tmp_path / "r.html"
    write_report(out, stats, ranges, "minmax", per_layer_sqnr={"a": 31.25, "b<&>": 11.5},
                 evaluation={"top1_agreement": 0.975})
    page = out.read_text()
    assert "SQNR dB" in page and ">31.2<" in page and ">11.5<" in page
    assert "low per-layer SQNR: 11.5 dB" in page
    assert "top1_agreement" in page and "0.975" in page
    assert "b&lt;&amp;&gt;" in page and "b<&>" not in page  # names are escaped


def test_bad_calls_are_user_errors(plots, rng, tmp_path):
    stats = Statistics({"a": _hist(rng.standard_normal(100))})
    with pytest.raises(Int8CalibError, match="chosen method 'entropy2'"):
        write_report(tmp_path / "r.html", stats, {"minmax": {"a": 1.0}}, "entropy2")
    with pytest.raises(Int8CalibError, match="no tensor"):
        write_report(tmp_path / "r.html", Statistics(), {"minmax": {}}, "minmax")
    assert not (tmp_path / "r.html").exists()


# ---- a real browser ----------------------------------------------------------

def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if IN_CI:
            pytest.fail("chromium is missing (CI installs it: apt-get install -y chromium)")
        pytest.skip("chromium not installed")
    return found


def _browse(chromium: str, url: str, *args: str) -> subprocess.CompletedProcess:
    cmd = [chromium, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run", "--disable-dev-shm-usage",
           "--enable-logging=stderr", "--v=0", *args, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_report_renders_in_headless_chromium(plots, rng, tmp_path):
    chromium = _chromium()
    bulk = rng.standard_normal(20_000)
    stats = Statistics({
        "first": _hist(bulk),
        "heavy_clip": _hist(np.concatenate([bulk, np.full(2000, 9.0)])),
        "last": _hist(bulk * 0.1),
    })
    ranges = {"minmax": compute_ranges("minmax", stats), "tight": {"first": 3.0, "heavy_clip": 3.0, "last": 0.3}}
    out = tmp_path / "report.html"
    write_report(out, stats, ranges, "tight")

    # The URL asks the page's script to sort by clipped fraction, largest first.
    run = _browse(chromium, out.as_uri() + "#sort=clipped-desc", "--dump-dom")
    assert run.returncode == 0, run.stderr[-2000:]
    dom = run.stdout
    assert f'data-ready="{READY_MARKER}"' in dom, "the sorting script did not run"
    assert 'data-js-error="' not in dom
    assert not re.search(CONSOLE_ERROR, run.stderr), run.stderr[-2000:]
    body = dom[dom.index("<tbody>"):]
    first_row = re.search(r'<a href="#t\d+">([^<]+)</a>', body).group(1)
    assert first_row == "heavy_clip"
    assert 'aria-sort="descending"' in dom

    # the error trap works: a page with a failing script says so in its DOM
    broken = tmp_path / "broken.html"
    broken.write_text(out.read_text().replace("</body>", "<script>noSuchFunction();</script></body>"))
    run = _browse(chromium, broken.as_uri(), "--dump-dom")
    assert 'data-js-error="' in run.stdout and re.search(CONSOLE_ERROR, run.stderr)

    shot = tmp_path / "shot.png"
    run = _browse(chromium, out.as_uri(), f"--screenshot={shot}", "--window-size=1200,1600", "--hide-scrollbars")
    assert run.returncode == 0 and shot.is_file(), run.stderr[-2000:]
    from PIL import Image

    image = Image.open(shot).convert("RGB")
    assert image.size == (1200, 1600)
    assert len(image.getcolors(1 << 20)) > 50  # text and plots, not a blank page
