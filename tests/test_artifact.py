"""The distilled-set artifact (mdd.artifact): save, load, grid, evaluate."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mdd import data as mdata
from mdd.artifact import GRID, MANIFEST, NPZ, load_distilled, save_distilled, to_pixels
from mdd.data import Normalization


def sample(channels: int = 1, n: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, channels, 28, 28, generator=g) * 1.5      # some values off the pixel range
    y = torch.arange(n) % 2
    norm = Normalization(tuple([0.3] * channels), tuple([0.2] * channels))
    info = {"flag": "breastmnist", "size": 28, "ipc": n // 2, "method": "ptm+dom", "alpha": 0.0123,
            "num_classes": 2, "seed": 7, "experts": {"digest": "abc"}, "results": {}}
    return x, y, norm, info


@pytest.mark.parametrize("channels", [1, 3])
def test_round_trip_is_bit_for_bit(tmp_path: Path, channels: int) -> None:
    x, y, norm, info = sample(channels)
    save_distilled(tmp_path / "a", x, y, norm, info, ["benign", "malignant"])
    ds = load_distilled(tmp_path / "a")
    assert torch.equal(ds.x, x) and torch.equal(ds.y, y) and ds.y.dtype == torch.int64
    assert ds.lr == 0.0123 and ds.norm == norm and ds.ipc == 3 and ds.flag == "breastmnist"
    shape = (6, 28, 28) if channels == 1 else (6, 28, 28, 3)
    assert ds.pixels.shape == shape and ds.pixels.dtype == np.uint8
    assert np.array_equal(ds.pixels, to_pixels(x, norm))
    with np.load(tmp_path / "a" / NPZ, allow_pickle=False) as z:
        assert z["train_labels"].shape == (6, 1) and z["train_labels"].dtype == np.uint8
    # saving what was loaded gives the same bytes (fixed zip timestamps, same arrays)
    save_distilled(tmp_path / "b", ds.x, ds.y, ds.norm, info, ["benign", "malignant"])
    assert (tmp_path / "a" / NPZ).read_bytes() == (tmp_path / "b" / NPZ).read_bytes()
    ma, mb = (json.loads((tmp_path / d / MANIFEST).read_text()) for d in "ab")
    assert ma == mb and ma["normalization"] == norm.to_dict() and ma["alpha"] == 0.0123
    png = (tmp_path / "a" / GRID).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_quantized_load_is_the_medmnist_view(tmp_path: Path) -> None:
    x, y, norm, info = sample()
    save_distilled(tmp_path, x, y, norm, info, grid=False)
    q = load_distilled(tmp_path, quantized=True)
    want = norm.normalize(torch.from_numpy(to_pixels(x, norm)[:, None].astype(np.float32) / 255))
    assert torch.equal(q.x, want)
    assert not (tmp_path / GRID).exists()


def test_found_through_a_run_folder_and_checked(tmp_path: Path) -> None:
    x, y, norm, info = sample()
    save_distilled(tmp_path / "run" / "distilled", x, y, norm, info)
    assert torch.equal(load_distilled(tmp_path / "run").x, x)
    assert torch.equal(load_distilled(tmp_path / "run" / "distilled" / NPZ).x, x)
    with pytest.raises(FileNotFoundError, match="no distilled set"):
        load_distilled(tmp_path / "nowhere")
    npz = tmp_path / "run" / "distilled" / NPZ
    npz.write_bytes(npz.read_bytes()[:-10])
    with pytest.raises(ValueError, match="sha256"):
        load_distilled(tmp_path / "run")


def test_trains_a_torch_model_directly(tmp_path: Path) -> None:
    x, y, norm, info = sample()
    save_distilled(tmp_path, x, y, norm, info, grid=False)
    ds = load_distilled(tmp_path)
    loader = torch.utils.data.DataLoader(ds.dataset(), batch_size=4)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 2))
    opt = torch.optim.SGD(model.parameters(), lr=ds.lr)
    for xb, yb in loader:
        torch.nn.functional.cross_entropy(model(xb), yb).backward()
        opt.step()


def test_evaluate_cli_prints_the_baseline_fields(tmp_path: Path, make_fake, capsys) -> None:
    from mdd.cli import main
    root = make_fake("breastmnist", n=(20, 6, 8))
    data = mdata.load("breastmnist", root=root)
    x, y = data.train.x[:4], data.train.y[:4]
    save_distilled(tmp_path / "art", x, y, data.norm, {"flag": "breastmnist", "size": 28, "ipc": 2,
                                                        "method": "ptm", "alpha": 0.01, "seed": 0})
    assert main(["evaluate", "--distilled", str(tmp_path / "art"), "--models", "2", "--epochs", "2",
                 "--root", str(root)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert main(["baseline", "--flag", "breastmnist", "--ipc", "2", "--models", "1", "--epochs", "1",
                 "--root", str(root)]) == 0
    base = json.loads(capsys.readouterr().out)
    assert set(base) <= set(out)
    assert out["kind"] == "distilled" and out["models"] == 2 and out["lr"] == 0.01
    assert 0 <= out["acc_mean"] <= 1 and len(out["accs"]) == 2
