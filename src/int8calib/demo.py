"""``int8calib demo``: calibrate a real network on real photos, offline, and show what INT8 costs.

The network is EfficientNet-Lite0 with its ImageNet weights (:mod:`int8calib.zoo`);
the photos are the ones that ship inside the scikit-image, scikit-learn and matplotlib
wheels (``pip install 'int8calib[demo]'``). Nothing is downloaded.

Nine photos are too few for stable statistics, so the calibration set is nine photos
times six deterministic views each (three crops, each also mirrored). The FP32 vs INT8
table shows the plain centre crop of every photo (seen by the calibration); the comparison
with TensorRT's entropy2 is scored on ``EVAL_RESIZES`` other crops of every photo, each also
mirrored, which the calibration never saw, and says what 9 photos can tell apart: views of
one photo are alike, so the intervals come from a bootstrap over photos, not views. A
demonstration, not an accuracy benchmark.
"""

from __future__ import annotations

import hashlib
import importlib.util
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import onnx

from .errors import Int8CalibError
from .evaluate.metrics import array_sqnr_db as sqnr_db
from .methods import compute_ranges, get as get_method
from .preprocess import PRESETS, Preprocess, load_image
from .sources import FeedDictSource
from .util.atomic import write_bytes
from .util.log import logger

# (package, folder inside it, file, name shown): photos bundled in the wheels, no download.
PHOTOS = (
    ("skimage", "data", "astronaut.png", "astronaut"),
    ("skimage", "data", "camera.png", "camera"),
    ("skimage", "data", "chelsea.png", "chelsea"),
    ("skimage", "data", "coffee.png", "coffee"),
    ("skimage", "data", "motorcycle_left.png", "motorcycle"),
    ("skimage", "data", "rocket.jpg", "rocket"),
    ("sklearn", "datasets/images", "china.jpg", "china"),
    ("sklearn", "datasets/images", "flower.jpg", "flower"),
    ("matplotlib", "mpl-data/sample_data", "grace_hopper.jpg", "grace_hopper"),
)
PACKAGE_NAMES = {"skimage": "scikit-image", "sklearn": "scikit-learn", "matplotlib": "matplotlib"}

PRESET = "efficientnet-lite"
# TensorRT's own default, shown beside the method calibrated with (minmax when that is entropy2 itself).
BASELINE_METHOD = "entropy2"
# Calibration views: the preset's centre crop, the whole shorter side, a closer crop.
VIEW_RESIZES = (256, 224, 320)
# Scoring views, none of them a calibration view: crops at four other scales, each also mirrored.
EVAL_RESIZES = (240, 272, 288, 352)
BOOTSTRAP = 2000  # resamples of the photos for the intervals of the differences (seeded)


@dataclass(frozen=True)
class Photo:
    name: str
    path: Path
    package: str


def demo_photos() -> list[Photo]:
    """The bundled photos that are installed, located without importing their packages."""
    photos, missing = [], set()
    for package, folder, filename, name in PHOTOS:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            missing.add(PACKAGE_NAMES[package])
            continue
        path = Path(list(spec.submodule_search_locations)[0]) / folder / filename
        if path.is_file():
            photos.append(Photo(name, path, PACKAGE_NAMES[package]))
        else:
            logger.warning("demo: %s not found in the installed %s", filename, PACKAGE_NAMES[package])
    if missing:
        logger.warning("demo: %s not installed; fewer photos (pip install 'int8calib[demo]')", ", ".join(sorted(missing)))
    if not photos:
        raise Int8CalibError("the demo needs photos from scikit-image, scikit-learn or matplotlib: pip install 'int8calib[demo]'")
    return photos


def views_of(image, resizes=VIEW_RESIZES) -> list[np.ndarray]:
    """The preset's crop after resizing the shorter side to each of ``resizes``, each followed by its mirror image."""
    rows = []
    for size in resizes:
        x = Preprocess.from_dict({**PRESETS[PRESET], "resize": size}, f"view {size}")(image)
        rows += [x, np.ascontiguousarray(x[..., ::-1])]  # mirror: flip the width axis
    return rows


def calibration_views(photos: list[Photo], batch_size: int = 6) -> FeedDictSource:
    """Every photo in ``len(VIEW_RESIZES)`` crops, each also mirrored, as feed dicts."""

    def load_data() -> Iterator[dict[str, np.ndarray]]:
        for photo in photos:
            rows = views_of(load_image(photo.path))
            for start in range(0, len(rows), batch_size):
                yield {"input": np.stack(rows[start : start + batch_size])}

    return FeedDictSource(load_data, "demo photos", fingerprint=_photos_fingerprint(photos))


def _photos_fingerprint(photos: list[Photo]) -> str:
    h = hashlib.sha256(repr(VIEW_RESIZES).encode())
    for photo in photos:
        h.update(photo.path.read_bytes())
    return h.hexdigest()


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


@dataclass
class DemoResult:
    photos: list[Photo]
    classes: list[str]
    fp32_logits: np.ndarray
    int8_logits: np.ndarray
    method: str
    calibration_samples: int
    outputs: dict[str, Path] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    baselines: dict[str, np.ndarray] = field(default_factory=dict)  # other method -> its INT8 logits
    # the unseen views' logits [photos, views, classes]: "fp32", the method's ("int8"), and each baseline's
    views: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def agreement(self) -> float:
        return float(np.mean(self.fp32_logits.argmax(1) == self.int8_logits.argmax(1)))

    @property
    def sqnr(self) -> float:
        return sqnr_db(self.fp32_logits, self.int8_logits)

    def table(self) -> str:
        """Per photo: FP32 and INT8 top-1 class with probability; then agreement and SQNR."""
        p32, p8 = softmax(self.fp32_logits), softmax(self.int8_logits)
        width = max(len(p.name) for p in self.photos)
        lines = [f"{'photo':<{width}}  {'FP32 top-1':<30}  {'INT8 top-1':<30}"]
        for i, photo in enumerate(self.photos):
            a, b = int(p32[i].argmax()), int(p8[i].argmax())
            mark = "" if a == b else "  <- differs"
            lines.append(
                f"{photo.name:<{width}}  {_cell(self.classes[a], p32[i, a])}  {_cell(self.classes[b], p8[i, b])}{mark}"
            )
        same = int(np.sum(p32.argmax(1) == p8.argmax(1)))
        lines.append("")
        lines.append(f"top-1 agreement FP32 vs INT8: {same}/{len(self.photos)} ({self.agreement:.0%})")
        lines.append(f"output SQNR (logits): {self.sqnr:.1f} dB")
        for name, logits in self.baselines.items():
            agree = int(np.sum(self.fp32_logits.argmax(1) == logits.argmax(1)))
            lines.append(
                f"  {name}{' (TensorRT default)' if name == 'entropy2' else ''} ranges from the same statistics, "
                f"biases as exported: top-1 agreement {agree}/{len(self.photos)}, "
                f"output SQNR {sqnr_db(self.fp32_logits, logits):.1f} dB"
            )
        if self.views:
            lines += ["", *self.view_lines()]
        return "\n".join(lines)

    def view_lines(self) -> list[str]:
        """Agreement and SQNR on the unseen views, and what the photos can tell apart."""
        fp32, int8 = self.views["fp32"], self.views["int8"]
        photos, views = fp32.shape[:2]
        lines = [f"on {photos * views} views of these {photos} photos the calibration never saw ({views // 2} other crops, "
                 "each mirrored):"]
        scored = {self.method: int8, **{name: self.views[name] for name in self.baselines if name in self.views}}
        for name, logits in scored.items():
            agree = int(np.sum(fp32.argmax(-1) == logits.argmax(-1)))
            lines.append(f"  {name:<24} top-1 agreement {agree}/{photos * views} ({agree / (photos * views):.0%}), "
                         f"output SQNR {sqnr_db(fp32, logits):.1f} dB")
        for name in self.baselines:
            if name not in self.views:
                continue
            agree, sqnr = photo_bootstrap(fp32, int8, self.views[name])
            lines.append(
                f"  {self.method} minus {name}, 95 % interval over resampled photos: agreement {agree[0]:+.1f} points "
                f"({agree[1]:+.1f} to {agree[2]:+.1f}: {_verdict(agree)}), SQNR {sqnr[0]:+.1f} dB "
                f"({sqnr[1]:+.1f} to {sqnr[2]:+.1f}: {_verdict(sqnr)})"
            )
        lines.append(f"  (the views of one photo are alike: the evidence is {photos} photos, and on the centre crops above "
                     f"one photo is {100 / photos:.0f} points of agreement)")
        return lines


def photo_bootstrap(fp32: np.ndarray, a: np.ndarray, b: np.ndarray, resamples: int = BOOTSTRAP):
    """(difference, low, high) of a minus b in top-1 agreement (points) and in output SQNR (dB), with the
    95 % interval from resampling the photos (axis 0) with replacement: views of one photo move together."""
    photos = fp32.shape[0]
    picks = np.random.default_rng(0).integers(0, photos, size=(resamples, photos))
    axes = tuple(range(1, fp32.ndim))
    noise = {k: np.sum(np.square(x.astype(np.float64) - fp32), axis=axes) for k, x in (("a", a), ("b", b))}
    agree = {k: np.mean(fp32.argmax(-1) == x.argmax(-1), axis=1) * 100.0 for k, x in (("a", a), ("b", b))}

    def interval(stat):
        whole = stat(np.arange(photos))
        draws = np.array([stat(p) for p in picks])
        return float(whole), float(np.quantile(draws, 0.025)), float(np.quantile(draws, 0.975))

    def sqnr_gap(p):  # the signal is the same for both: the SQNR difference is the ratio of the noises
        return 10.0 * np.log10(noise["b"][p].sum() / max(noise["a"][p].sum(), 1e-300))

    return interval(lambda p: agree["a"][p].mean() - agree["b"][p].mean()), interval(sqnr_gap)


def _verdict(interval) -> str:
    return "within noise" if interval[1] <= 0 <= interval[2] else "beyond noise"


def _cell(name: str, probability: float) -> str:
    name = name if len(name) <= 22 else name[:21] + "~"
    return f"{name:<22} {probability:6.1%} "


def quantize_model(model: onnx.ModelProto, amax: dict[str, float], log: bool = True) -> onnx.ModelProto:
    """The Q/DQ model (INT8 + FP16, as ``--qdq`` writes it); ``log`` prints its "Q/DQ: N activation
    tensors" line (once per written model, not per baseline)."""
    from .passes import quantized_model

    built = quantized_model(model, amax)
    if log:
        built.qdq.log()
    return built.model


def write_demo_report(path: Path, result, evaluation: dict) -> bool:
    """Write the HTML report; False when matplotlib (the ``report`` extra) is missing."""
    try:
        from .report import method_ranges, write_report
    except ImportError as exc:
        logger.warning("demo: no report written (%s)", exc)
        return False
    from .api import auto_candidate

    chosen = auto_candidate(result.chosen_method)[0] if result.auto is not None else result.method
    ranges = method_ranges(result.statistics, chosen, result.amax)
    write_report(path, result.statistics, ranges, chosen, evaluation=evaluation,
                 auto=result.auto.to_dict() if result.auto is not None else None)
    return True


def _run(model: "Path | onnx.ModelProto", x: np.ndarray, rows: int = 8) -> np.ndarray:
    """The logits of ``x``, ``rows`` images per run: 72 views at once held 4 GB of activations."""
    from .runner import ActivationRunner  # (sets up INT8 + FP16 models as ONNX Runtime computes them right)

    runner = ActivationRunner(model, None, ["logits"])
    return np.concatenate([runner.run({"input": x[i:i + rows]})["logits"] for i in range(0, len(x), rows)])


def run_demo(out_dir: "str | Path" = "int8calib-demo", method: str = "auto", report: bool = True) -> DemoResult:
    """Calibrate EfficientNet-Lite0 on the bundled photos; write cache, Q/DQ model and report to ``out_dir``."""
    from .api import AUTO, calibrate
    from .zoo import efficientnet_lite0, imagenet_classes

    if method != AUTO:
        get_method(method)  # an unknown name fails before anything is created
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise Int8CalibError(f"{out}: cannot create the output folder ({exc.strerror})") from None
    model_path = efficientnet_lite0()
    photos = demo_photos()
    seconds["model"] = time.perf_counter() - start

    t = time.perf_counter()
    views = calibration_views(photos)
    outputs = {"cache": out / "calibration.cache", "model": out / "efficientnet_lite0.onnx", "qdq": out / "efficientnet_lite0_qdq.onnx",
               "statistics": out / "statistics.npz"}
    # The Q/DQ model comes with its biases corrected (the default with --qdq); auto ranks corrected candidates.
    # the statistics are shown, so they are always collected, and kept (TensorRT's histograms with them:
    # its entropy2 is shown beside auto, which does not read them)
    result = calibrate(model=model_path, data=views, method=method, cache=outputs["cache"], qdq=outputs["qdq"],
                       histograms=outputs["statistics"], reuse_cache="never")
    write_bytes(outputs["model"], model_path.read_bytes())  # beside the cache, for trtexec --calib
    seconds["calibrate"] = time.perf_counter() - t

    t = time.perf_counter()
    model = onnx.load(str(model_path))
    x = Preprocess.load(PRESET).batch([p.path for p in photos])
    fp32, int8 = _run(model_path, x), _run(outputs["qdq"], x)
    baselines = {}
    # For scale, how much the method matters here: TensorRT's default from the same statistics, as
    # TensorRT would use it (no bias correction).
    other = BASELINE_METHOD if method != BASELINE_METHOD else "minmax"
    ranges = result.by_method.get(other) or compute_ranges(other, result.statistics)
    baseline_model = quantize_model(model, ranges, log=False)
    baselines[other] = _run(baseline_model, x)
    unseen = np.stack([np.stack(views_of(load_image(p.path), EVAL_RESIZES)) for p in photos])  # [photos, views, ...]
    flat = unseen.reshape(-1, *unseen.shape[2:])
    views = {name: _run(m, flat).reshape(*unseen.shape[:2], -1)
             for name, m in (("fp32", model_path), ("int8", outputs["qdq"]), (other, baseline_model))}
    seconds["compare"] = time.perf_counter() - t
    shown = f"auto ({result.chosen_method})" if result.auto is not None else method
    demo = DemoResult(photos, imagenet_classes(), fp32, int8, shown, result.samples, outputs, seconds, baselines, views)

    if report:
        t = time.perf_counter()
        evaluation = {
            "photos": len(photos), "top-1 agreement": f"{demo.agreement:.0%}", "output SQNR (dB)": round(demo.sqnr, 1),
        }
        if write_demo_report(out / "report.html", result, evaluation):
            outputs["report"] = out / "report.html"
        seconds["report"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - start
    return demo
