"""Shared fixtures: tiny MedMNIST-format files with a patched ``medmnist.INFO``."""
from __future__ import annotations

import copy
import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

import mdd.data
from mdd.experts import ExpertRecipe, train_experts

if TYPE_CHECKING:
    from mdd.distill import DistillConfig

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


@pytest.fixture(autouse=True)
def private_mode_cache(tmp_path_factory, monkeypatch):
    """Runs remember their timed mode choice (mdd.mode_choice): in a test, not in ~/.cache."""
    monkeypatch.setenv("MDD_CACHE", str(tmp_path_factory.getbasetemp() / "mdd-cache"))


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


# ---------------------------------------------------------------- distillation
@pytest.fixture(scope="module")
def distill_env(tmp_path_factory):
    """A 40/10/10-image breastmnist-format file (INFO patched) and two width-16 experts."""
    tmp = tmp_path_factory.mktemp("distill")
    rng = np.random.default_rng(0)
    sizes = {"train": 40, "val": 10, "test": 10}
    arrays = {}
    for split, n in sizes.items():
        labels = (np.arange(n) % 2).astype(np.uint8).reshape(n, 1)
        arrays[f"{split}_images"] = (rng.integers(0, 150, (n, 28, 28)) + 100 * labels[:, :, None]).astype(np.uint8)
        arrays[f"{split}_labels"] = labels
    root = tmp / "data"
    root.mkdir()
    np.savez(root / "breastmnist.npz", **arrays)
    info = copy.deepcopy(mdd.data.INFO)
    info["breastmnist"]["n_samples"] = sizes
    info["breastmnist"]["MD5"] = mdd.data.md5sum(root / "breastmnist.npz")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mdd.data, "INFO", info)
        experts = tmp / "experts"
        train_experts("breastmnist", experts, 2, ExpertRecipe(epochs=4, width=16, batch_size=16),
                      root=root, workers=0, threads=1, progress=False)
        yield {"root": root, "experts": experts, "tmp": tmp}


def distill_cfg(env, out: Path, **kw) -> "DistillConfig":
    """A tiny, fast DistillConfig on ``distill_env`` (α fixed: no calibration search)."""
    from mdd.distill import DistillConfig
    base = dict(flag="breastmnist", ipc=2, method="ptm", experts=str(env["experts"]), out=str(out),
                root=str(env["root"]), iterations=6, steps=3, num_stages=2, eval_every=3,
                val_models=1, val_epochs=3, test_models=1, test_epochs=3, snapshot_every=2,
                dom_every=2, retrain_iterations=2, dom_pool=16, max_start=2, span=1,
                progress=False, threads=1, checkpoint_every_s=1e9, alpha_init_rule="fixed")
    if "tau" in kw:   # a fixed τ asked for: the data-relative rule would ignore it
        kw.setdefault("tau_rule", "fixed")
    base.update(kw)
    return DistillConfig(**base)


