"""Regret of ``--method auto``'s selection rules on unseen data (docs/methods.md, "How auto decides").

    PYTHONPATH=src:tests:benchmarks python benchmarks/auto_regret.py [--shared ../shared] [--cache DIR]
        [--models efficientnet-lite0 ppocr-det ppocr-rec minilm] [--splits 2000]

A rule sees every candidate's per-sample error on the samples auto would rank on and picks one; its
regret on a split is how many dB of output SQNR the pick trails the candidate best on the scoring data.
Running every candidate's Q/DQ model on every random split would take hours on this VM, so each model's
data is cut in two disjoint pools and the model runs once per (range set, candidate):

* pool A (ranges): statistics of its first 16, 24, 48, 100, 200, 500 samples (nested prefixes of a fixed
  shuffle, merged exactly with ``stats.merge``), every candidate's ranges from each, the weights rounded
  (``--rounding``, the default as in the CLI) and the shifts of bias correction measured once on A (they
  do not depend on the ranges, as in auto);
* pool B (scoring): every candidate's Q/DQ model (biases corrected: ``calibrate --qdq``'s default) of every
  range set run once on every sample of B, against the float model: per sample the output's signal and
  noise power and, for a classifier, the flip probability (the "bank", cached on disk).

A split of size s then costs nothing: a random subset V of B stands for the samples auto ranks on (all s
of them below ``auto.CROSS_VALIDATE_BELOW`` x 5 samples, where auto cross-validates and every sample is
held out once; s / 5 above, its one split), the rest of B is the unseen data, and the ranges are those of
the s-sample range set. What this leaves out, and says so in the docs: auto's cross-validation computes
each fold's ranges from 4/5 of the data (here all s), and its screening on 32 samples.

Models (tests/real_models.py): EfficientNet-Lite0 (A: the 500 even-class photos, B: the 500 odd ones);
PP-OCRv4 detector (photos of ../shared, shorter side 320 instead of the preset's 736 to keep it under
an hour here: A 48, B 120); PP-OCRv4 recogniser (generated lines: A 200, B 300); MiniLM-L3 (generated
token ids: A 200, B 300).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import onnx

from int8calib.auto import AUTO_CANDIDATES, CROSS_VALIDATE_BELOW
from int8calib.batching import BatchLoader
from int8calib.collection.calibration_pass import collect_statistics
from int8calib.evaluate import compare_models
from int8calib.evaluate.mixed import HOLDOUT_EVERY
from int8calib.evaluate.selection import DEFAULT, PRIOR_DB, RULES, shrunk
from int8calib.evaluate.outputs import choose_output
from int8calib.methods import compute_ranges, get as get_method
from int8calib.passes import correct_biases, measure_shifts, round_weights, spread
from int8calib.passes.weight_rounding import DEFAULT as ROUNDING_DEFAULT, ROUNDING_SAMPLES, spread_batches
from int8calib.preprocess import Preprocess
from int8calib.runner import ActivationRunner, model_inputs
from int8calib.sources import resolve
from int8calib.stats import load, merge, save
from int8calib.util.log import logger
from int8calib.writers.qdq import activation_tensors, build_qdq
from imagenet_split import PRESET, split
from real_models import model_file, text_lines, token_files

RANGE_SIZES = (16, 24, 48, 100, 200, 500)
CANDIDATES = [(label, name, params) for label, name, params in AUTO_CANDIDATES if not get_method(name).ordered]
DET_PREPROCESS = {"resize": {"shorter": 320}, "multiple": 32, "interpolation": "bilinear", "color": "BGR",
                  "mean": [127.5] * 3, "std": [127.5] * 3, "layout": "NCHW"}


def cases(shared: Path, cache: Path, names):
    """(name, model, pool A, pool B, preprocessing, batch size) of each model asked for."""
    rng = np.random.default_rng(23)
    if "efficientnet-lite0" in names:
        model, _, even, odd = split(shared)
        yield "efficientnet-lite0", model, [even[i] for i in rng.permutation(len(even))], odd, PRESET, 32
    if "ppocr-det" in names:
        photos = sorted(str(p) for p in (shared / "data" / "imagenet-sample").glob("*.jpg"))
        order = [photos[i] for i in np.random.default_rng(4).permutation(len(photos))]
        yield "ppocr-det", model_file("ppocr-det"), order[:48], order[48:168], DET_PREPROCESS, 1
    if "ppocr-rec" in names:
        yield ("ppocr-rec", model_file("ppocr-rec"), [str(p) for p in text_lines(cache / "rec-a", 200, 0)],
               [str(p) for p in text_lines(cache / "rec-b", 300, 1)], "ppocr-rec", 8)
    if "minilm" in names:
        yield ("minilm", model_file("minilm"), [str(p) for p in token_files(cache / "tok-a", 200, 0)],
               [str(p) for p in token_files(cache / "tok-b", 300, 1)], None, 8)


def loader(model: onnx.ModelProto, samples, preprocess, batch: int) -> BatchLoader:
    inputs = model_inputs(model)
    return BatchLoader(resolve(samples, {i.name: i.layout for i in inputs}), inputs,
                       Preprocess.load(preprocess) if preprocess is not None else None, batch)


def range_sets(name, path, pool_a, preprocess, batch, folder: Path) -> dict[int, dict[str, dict[str, float]]]:
    """{size: {candidate: ranges}} from nested prefixes of pool A (statistics cached per size)."""
    model = onnx.load(str(path))
    sizes = [s for s in RANGE_SIZES if s <= len(pool_a)]
    out, stats, start = {}, None, 0
    runner = None
    for size in sizes:
        file = folder / f"stats-{size}.npz"
        if file.exists():
            stats = load(file)
        else:
            runner = runner or ActivationRunner(path, None, activation_tensors(model), derive=True, any_layout=True)
            part = collect_statistics(loader(model, pool_a[start:size], preprocess, batch), runner, {}, trt_histograms=False)
            stats = part if stats is None else merge(stats, part)
            save(stats, file)
        start = size
        out[size] = {label: compute_ranges(method, stats, **params) for label, method, params in CANDIDATES}
    return out


def bank(name, path, pool_a, pool_b, preprocess, batch, folder: Path, rounding: bool = ROUNDING_DEFAULT) -> dict:
    """Per range set and candidate, the per-sample signal / noise / flips on pool B (cached). With
    ``rounding`` (the default's weight rounding), the weights rounded once on pool A, as the shifts."""
    file = folder / ("bank-rounded.npz" if rounding else "bank.npz")
    if file.exists():
        return dict(np.load(file, allow_pickle=False))
    folder.mkdir(parents=True, exist_ok=True)
    model = onnx.load(str(path))
    ranges = range_sets(name, path, pool_a, preprocess, batch, folder)
    spread_a = loader(model, spread(pool_a), preprocess, batch)
    weights = round_weights(model, spread_batches(spread_a, ROUNDING_SAMPLES), max_samples=ROUNDING_SAMPLES) if rounding else None
    shifts = measure_shifts(model, spread_a, max_samples=None, weights=weights)
    output = choose_output(model).name
    batches = [(b.feeds, b.n, None) for b in loader(model, pool_b, preprocess, batch)]
    ref_runner = ActivationRunner(model, None, [output])
    reference = [ref_runner.run(feeds)[output] for feeds, _, _ in batches]
    arrays: dict[str, np.ndarray] = {}
    for size, by_candidate in ranges.items():
        done: dict[str, str] = {}
        for label, amax in by_candidate.items():
            twin = next((d for d in done if by_candidate[d] == amax), None)
            if twin is None:
                start = time.perf_counter()
                qdq, _ = build_qdq(model, amax, weights=weights)
                correct_biases(qdq, shifts)
                comparison = compare_models(model, qdq, batches, output, reference=reference).output
                logger.warning("%s: %d samples, %s, %.1f s", name, size, label, time.perf_counter() - start)
                for key in ("signal", "noise", "flips"):
                    arrays[f"{size}/{label}/{key}"] = comparison.per_sample(key)
            else:
                for key in ("signal", "noise", "flips"):
                    arrays[f"{size}/{label}/{key}"] = arrays[f"{size}/{twin}/{key}"]
            done[label] = label
    np.savez(file, **arrays)
    return arrays


def errors(arrays: dict, size: int) -> dict[str, dict[str, np.ndarray]]:
    """{candidate: {"signal", "noise", "flips" (None: not a classifier)}} of one range set."""
    out = {}
    for label, _, _ in CANDIDATES:
        flips = arrays[f"{size}/{label}/flips"]
        out[label] = {"signal": arrays[f"{size}/{label}/signal"], "noise": arrays[f"{size}/{label}/noise"],
                      "flips": flips if flips.size else None}
    return out


def sqnr(e: dict, rows: np.ndarray) -> float:
    return 10.0 * np.log10(e["signal"][rows].sum() / max(e["noise"][rows].sum(), 1e-300))


def record(arrays: dict) -> dict[str, float]:
    """Per candidate, its output-SQNR gain over mse in dB on all of pool B, averaged over the range sets: what
    the model tells about the candidates (selection.PRIOR_DB is the capped mean of the four models')."""
    sizes = sorted({int(k.split("/")[0]) for k in arrays})
    gains = {label: [] for label, _, _ in CANDIDATES}
    for size in sizes:
        by = errors(arrays, size)
        rows = np.arange(len(by[DEFAULT]["signal"]))
        for label, e in by.items():
            gains[label].append(sqnr(e, rows) - sqnr(by[DEFAULT], rows))
    return {label: float(np.mean(g)) for label, g in gains.items()}


def prior(records: dict[str, dict[str, float]], leave_out: str | None = None, cap: bool = True) -> dict[str, float]:
    """The mean record of the models other than ``leave_out``, capped at 0 (no candidate starts ahead of the
    default) unless ``cap`` is off; entropy2 (not benchmarked) takes entropy2-stable's."""
    others = [r for model, r in records.items() if model != leave_out]
    out = {label: float(np.mean([r[label] for r in others])) for label in others[0]}
    out = {label: min(v, 0.0) if cap else v for label, v in out.items()}
    out["entropy2"] = out["entropy2-stable"]
    return out


def rules_for(model: str, records: dict[str, dict[str, float]]) -> dict:
    """RULES, ``shrunk`` with the record of the other models only (leave one model out: a model's own record
    would tell the rule its answer), and two variants: the record uncapped, and PRIOR_DB (all four, in-sample)."""
    rules = dict(RULES)
    left_out, uncapped = prior(records, model), prior(records, model, cap=False)
    rules["shrunk"] = lambda e: shrunk(e, prior=left_out)
    rules["shrunk, uncapped record"] = lambda e: shrunk(e, prior=uncapped)
    rules["shrunk, PRIOR_DB (in-sample)"] = lambda e: shrunk(e, prior=PRIOR_DB)
    return rules


def regrets(arrays: dict, splits: int, rules: dict, seed: int = 0, every_sample: bool = False) -> dict[int, dict[str, np.ndarray]]:
    """{split size: {rule: regret in dB per random split}}; ``every_sample``: the rules see every calibration
    sample (cross-validation at any size, leaving at least 100 of pool B unseen) instead of auto's split."""
    out = {}
    count = len(next(iter(arrays.values())))
    for size in sorted({int(k.split("/")[0]) for k in arrays}):
        by = errors(arrays, size)
        seen = size if size < CROSS_VALIDATE_BELOW * HOLDOUT_EVERY else size // HOLDOUT_EVERY
        if every_sample:
            seen = min(size, count - 100)
        if count - seen < 48:
            continue
        rng = np.random.default_rng(seed + size)
        out[size] = {rule: np.empty(splits) for rule in rules}
        for k in range(splits):
            order = rng.permutation(count)
            visible, unseen = order[:seen], order[seen:]
            truth = {label: sqnr(e, unseen) for label, e in by.items()}
            best = max(truth.values())
            view = {label: {key: (None if v is None else v[visible]) for key, v in e.items()} for label, e in by.items()}
            for rule, choose in rules.items():
                out[size][rule][k] = best - truth[choose(view).chosen]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default=str(Path(__file__).resolve().parents[1].parent / "shared"))
    parser.add_argument("--cache", default="/tmp/int8calib-auto-regret")
    parser.add_argument("--models", nargs="+", default=["efficientnet-lite0", "ppocr-det", "ppocr-rec", "minilm"])
    parser.add_argument("--splits", type=int, default=2000)
    parser.add_argument("--json", help="write every cell's numbers here")
    parser.add_argument("--quiet", action="store_true", help="no per-range-set SQNR lines")
    parser.add_argument("--every-sample", action="store_true",
                        help="rules see every calibration sample at any size (cross-validation always), not auto's split")
    parser.add_argument("--rounding", action=argparse.BooleanOptionalAction, default=ROUNDING_DEFAULT,
                        help="the candidates' weights rounded as the default --qdq rounds them (default: as the CLI)")
    args = parser.parse_args()
    cache = Path(args.cache)
    banks = {name: bank(name, path, pool_a, pool_b, preprocess, batch, cache / name, args.rounding)
             for name, path, pool_a, pool_b, preprocess, batch in cases(Path(args.shared), cache, args.models)}
    records = {name: record(arrays) for name, arrays in banks.items()}
    print("record (gain over mse, dB, pool B, mean of the range sets): "
          + "; ".join(f"{m}: " + ", ".join(f"{c} {v:+.2f}" for c, v in r.items()) for m, r in records.items()))
    print("capped mean of all models (selection.PRIOR_DB): " + ", ".join(f"{c} {v:+.2f}" for c, v in prior(records).items()))
    table: dict[str, dict] = {}
    for name, arrays in banks.items():
        table[name] = regrets(arrays, args.splits, rules_for(name, records), every_sample=args.every_sample)
        for size in [] if args.quiet else sorted({int(k.split("/")[0]) for k in arrays}):
            by = errors(arrays, size)
            all_rows = np.arange(len(by["mse"]["signal"]))
            print(f"{name} ranges from {size}: " + ", ".join(f"{c} {sqnr(e, all_rows):.2f}" for c, e in by.items()))
    print_table(table)
    if args.json:
        Path(args.json).write_text(json.dumps({m: {str(s): {r: v.tolist() for r, v in c.items()} for s, c in t.items()}
                                               for m, t in table.items()}))


def print_table(table: dict, floor: int = 24) -> None:
    """Per model and split size, each rule's mean / largest regret (dB) over the random splits; then, over the
    cells of split sizes >= ``floor``, the worst cell's mean, the mean of all and the largest of any split."""
    rules = list(next(iter(next(iter(table.values())).values())))
    print("| model | split size | " + " | ".join(rules) + " |")
    print("| --- | ---: | " + " | ".join("---:" for _ in rules) + " |")
    for model, cells in table.items():
        for size, by_rule in cells.items():
            print(f"| {model} | {size} | " + " | ".join(f"{by_rule[r].mean():.2f} / {by_rule[r].max():.2f}" for r in rules) + " |")
    cells = [c for t in table.values() for s, c in t.items() if s >= floor]
    for label, value in (("worst cell's mean", lambda r: max(c[r].mean() for c in cells)),
                         ("mean", lambda r: np.mean([c[r].mean() for c in cells])),
                         ("95th percentile", lambda r: np.percentile(np.concatenate([c[r] for c in cells]), 95)),
                         ("largest", lambda r: max(c[r].max() for c in cells))):
        print(f"| all, sizes >= {floor} | {label} | " + " | ".join(f"{value(r):.2f}" for r in rules) + " |")


if __name__ == "__main__":
    main()
