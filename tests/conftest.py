"""Shared fixtures: tiny generated models and images, and the real data in ../shared.

Acceptance tests use ``shared_dir``: when ../shared is missing they skip on a
developer's machine but fail in CI (CI=true), so CI can never pass without them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def _find_shared() -> Path | None:
    for candidate in (REPO.parent / "shared", Path("/work/shared")):
        if (candidate / "models" / "efficientnet_lite0.onnx").is_file():
            return candidate
    return None


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    found = _find_shared()
    if found is None:
        message = f"../shared (real model and images) not found beside {REPO}"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message + "; acceptance tests must run in CI")
        pytest.skip(message)
    return found


@pytest.fixture(scope="session")
def effnet_model(shared_dir) -> Path:
    return shared_dir / "models" / "efficientnet_lite0.onnx"


@pytest.fixture(scope="session")
def imagenet_labels(shared_dir) -> list[tuple[str, int]]:
    """(file path, class index) of the 1,000 shared photos, in file order."""
    folder = shared_dir / "data" / "imagenet-sample"
    rows = (folder / "labels.tsv").read_text().splitlines()[1:]
    out = []
    for row in rows:
        fields = row.split("\t")
        out.append((str(folder / fields[0]), int(fields[2])))
    return out


@pytest.fixture(scope="session")
def even_images(imagenet_labels) -> list[str]:
    """The 500 calibration photos (even class index), by convention."""
    return [p for p, c in imagenet_labels if c % 2 == 0]


@pytest.fixture(scope="session")
def odd_images(imagenet_labels) -> list[str]:
    """The 500 evaluation photos (odd class index), by convention."""
    return [p for p, c in imagenet_labels if c % 2 == 1]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
