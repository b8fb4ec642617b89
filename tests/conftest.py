"""Shared fixtures: tiny MedMNIST-format files with a patched ``medmnist.INFO``."""
from __future__ import annotations

import copy
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

import mdd.data

#: The real, md5-verified MedMNIST files beside the project (CI and these machines).
REAL_ROOT = Path(os.environ.get("MDD_SHARED_MEDMNIST",
                                Path(__file__).resolve().parents[2] / "shared" / "medmnist"))


def write_fake_npz(path: Path, n: dict[str, int], size: int = 28, channels: int = 1,
                   classes: int = 2, seed: int = 0) -> str:
    """Write a MedMNIST-format npz (right keys, dtypes, shapes); return its md5."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in n.items():
        shape = (count, size, size) if channels == 1 else (count, size, size, channels)
        labels = (np.arange(count) % classes).astype(np.uint8)[:, None]
        # class-dependent brightness so that a network can learn something
        base = rng.integers(0, 120, size=shape, dtype=np.uint8)
        arrays[f"{split}_images"] = (base + (labels.reshape(-1, *[1] * (len(shape) - 1)) * 100)).astype(np.uint8)
        arrays[f"{split}_labels"] = labels
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def patched_info(monkeypatch):
    """A private deep copy of INFO that tests may edit; mdd.data reads through it."""
    info = copy.deepcopy(mdd.data.INFO)
    monkeypatch.setattr(mdd.data, "INFO", info)
    return info


@pytest.fixture
def make_fake(tmp_path, patched_info):
    """``make_fake(flag, size=28, n=(20, 6, 8))`` → root holding a tiny file for ``flag``,
    with INFO's md5 and split sizes patched to match it."""

    def make(flag: str = "breastmnist", size: int = 28, n=(20, 6, 8), root: Path | None = None,
             seed: int = 0) -> Path:
        root = root or tmp_path / "medmnist"
        entry = patched_info[flag]
        counts = dict(zip(mdd.data.SPLITS, n))
        md5 = write_fake_npz(root / mdd.data.file_name(flag, size), counts, size=size,
                             channels=entry["n_channels"], classes=len(entry["label"]), seed=seed)
        entry["MD5" if size == 28 else f"MD5_{size}"] = md5
        entry["n_samples"] = counts
        return root

    return make


@pytest.fixture
def real_root() -> Path:
    if not (REAL_ROOT / "breastmnist.npz").is_file():
        pytest.skip(f"real MedMNIST files not found in {REAL_ROOT}")
    return REAL_ROOT
