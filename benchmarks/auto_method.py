"""``--method auto --qdq`` against ``--method mse --qdq`` on EfficientNet-Lite0 (docs/methods.md, "auto").

    PYTHONPATH=src python benchmarks/auto_method.py [--shared ../shared] [--batch-size 32]

Both calibrate on the 500 even-class photos of ../shared and write a Q/DQ model (wall time of the
whole ``calibrate`` call, as the CLI runs it); auto holds 1 photo in 5 out of its ranges to rank
its candidates. Each written model is scored with ``evaluate`` on the 500 odd-class photos:
top-1 agreement and output SQNR against the float model.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from int8calib import api
from int8calib.evaluate import evaluate
from imagenet_split import PRESET, arguments, split



def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    model, labels, even, odd = split(args.shared)
    with tempfile.TemporaryDirectory() as tmp:
        for method in ("mse", "auto"):
            qdq = Path(tmp) / f"{method}.onnx"
            start = time.perf_counter()
            result = api.calibrate(model, even, PRESET, method=method, batch_size=args.batch_size, qdq=qdq)
            seconds = time.perf_counter() - start
            if result.auto is not None:
                print(result.auto.format_table())
            out = evaluate(model, qdq, odd, PRESET, labels=labels, batch_size=50).output.to_dict()
            print(f"{method:<5} ({result.chosen_method or method}): calibrate --qdq {seconds:6.1f} s; on the 500 odd photos "
                  f"top-1 agreement {out['top1_agreement']:.1f} %, SQNR {out['sqnr_db']:.2f} dB, "
                  f"int8 top-1 {out['int8_top1']:.1f} % (fp32 {out['fp32_top1']:.1f} %)", flush=True)


if __name__ == "__main__":
    main()
