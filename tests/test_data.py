import shutil

import numpy as np
import pytest
import torch

from mdd import data as D
from mdd.data import DataError


def test_load_fake_grey(make_fake):
    root = make_fake("breastmnist")
    d = D.load("breastmnist", root=root)
    assert d.train.x.shape == (20, 1, 28, 28) and d.train.x.dtype == torch.float32
    assert d.val.y.dtype == torch.int64 and len(d.test) == 8
    assert d.n_channels == 1 and d.num_classes == 2 and d.task == "binary-class"
    assert d.class_names == ["malignant", "normal, benign"] and d.license == "CC BY 4.0"
    # normalization computed on train: train is standardized per channel
    assert abs(d.train.x.mean().item()) < 1e-4 and abs(d.train.x.std(unbiased=False).item() - 1) < 1e-3


def test_pixels_round_trip(make_fake):
    root = make_fake("pathmnist")
    d = D.load("pathmnist", root=root)
    assert d.train.x.shape == (20, 3, 28, 28) and len(d.norm.mean) == 3
    with np.load(root / "pathmnist.npz") as raw:
        assert np.array_equal(d.pixels(d.train.x), raw["train_images"])


def test_root_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv(D.ENV_ROOT, raising=False)
    assert D.resolve_root() == D.Path("data")
    monkeypatch.setenv(D.ENV_ROOT, str(tmp_path))
    assert D.resolve_root() == tmp_path
    assert D.resolve_root("elsewhere") == D.Path("elsewhere")


def test_root_from_env(make_fake, monkeypatch):
    root = make_fake("breastmnist")
    monkeypatch.setenv(D.ENV_ROOT, str(root))
    assert D.load("breastmnist").path == root / "breastmnist.npz"


def test_missing_file_says_where_and_which_md5(tmp_path, patched_info):
    with pytest.raises(DataError) as e:
        D.load("breastmnist", root=tmp_path)
    msg = str(e.value)
    assert "breastmnist.npz" in msg and str(tmp_path.resolve()) in msg
    assert patched_info["breastmnist"]["MD5"] in msg and "zenodo" in msg and "\n" not in msg


def test_wrong_md5(make_fake, patched_info):
    root = make_fake("breastmnist")
    patched_info["breastmnist"]["MD5"] = "0" * 32
    with pytest.raises(DataError, match=r"breastmnist.npz has md5 [0-9a-f]{32}, expected 0{32}"):
        D.load("breastmnist", root=root)


def test_truncated_file(make_fake):
    root = make_fake("breastmnist")
    f = root / "breastmnist.npz"
    f.write_bytes(f.read_bytes()[:200])
    with pytest.raises(DataError, match="truncated, corrupt"):
        D.load("breastmnist", root=root)
    with pytest.raises(DataError, match="breastmnist.npz is not a readable MedMNIST npz"):
        D.load("breastmnist", root=root, verify_md5=False)


def test_wrong_split_sizes(make_fake, patched_info):
    root = make_fake("breastmnist")
    patched_info["breastmnist"]["n_samples"]["train"] = 546
    with pytest.raises(DataError, match="train split has 20 images and 20 labels, medmnist.INFO"):
        D.load("breastmnist", root=root)


def test_missing_arrays(tmp_path, patched_info):
    f = tmp_path / "breastmnist.npz"
    np.savez(f, train_images=np.zeros((2, 28, 28), np.uint8))
    patched_info["breastmnist"]["MD5"] = D.md5sum(f)
    with pytest.raises(DataError, match="lacks arrays .*it is not a MedMNIST file"):
        D.load("breastmnist", root=tmp_path)


def test_pickled_npz_refused(tmp_path, patched_info):
    f = tmp_path / "breastmnist.npz"
    arrays = {f"{s}_{k}": np.array([{"x": 1}], dtype=object) for s in D.SPLITS for k in ("images", "labels")}
    np.savez(f, **arrays)
    patched_info["breastmnist"]["MD5"] = D.md5sum(f)
    with pytest.raises(DataError, match="breastmnist.npz"):
        D.load("breastmnist", root=tmp_path)


@pytest.mark.parametrize("flag, message", [
    ("cifar10", "unknown MedMNIST flag 'cifar10'"),
    ("organmnist3d", "3D MedMNIST dataset"),
    ("chestmnist", "multi-label .* not supported|supports single-label tasks only"),
])
def test_unsupported_flags(flag, message, tmp_path):
    with pytest.raises(DataError, match=message):
        D.load(flag, root=tmp_path)


def test_bad_size(tmp_path):
    with pytest.raises(DataError, match="size 32 is not a MedMNIST size"):
        D.load("breastmnist", size=32, root=tmp_path)


def test_ordinal_retina_is_multiclass(make_fake):
    d = D.load("retinamnist", root=make_fake("retinamnist"))
    assert d.task == "multi-class" and d.num_classes == 5 and d.n_channels == 3


def test_size_64(make_fake):
    d = D.load("breastmnist", size=64, root=make_fake("breastmnist", size=64))
    assert d.train.x.shape == (20, 1, 64, 64) and d.size == 64


def test_size_128_is_memory_mapped(make_fake):
    root = make_fake("breastmnist", size=128, n=(6, 2, 2))
    d = D.load("breastmnist", size=128, root=root)
    assert isinstance(d.train.x, D.MappedImages) and isinstance(d.train.x.raw, np.memmap)
    assert d.train.x.shape == (6, 1, 128, 128) and len(d.train.x) == 6
    batch = d.train.x[torch.tensor([0, 3])]
    assert batch.shape == (2, 1, 128, 128) and batch.dtype == torch.float32
    assert d.train.x[1].shape == (1, 128, 128)
    # a second load reuses the extracted cache
    assert D.load("breastmnist", size=128, root=root).train.x[0].equal(d.train.x[0])


def test_check_root_reports_ok_and_bad(make_fake, tmp_path):
    root = make_fake("breastmnist")
    make_fake("pneumoniamnist", root=root)
    shutil.copy(root / "breastmnist.npz", root / "breastmnist_64.npz")
    (root / "notes.npz").write_bytes(b"x")
    rows = {r["file"]: r for r in D.check_root(root)}
    assert rows["breastmnist.npz"]["ok"] and rows["pneumoniamnist.npz"]["ok"]
    assert not rows["breastmnist_64.npz"]["ok"] and "md5" in rows["breastmnist_64.npz"]["reason"]
    assert rows["notes.npz"]["reason"] == "not a MedMNIST file name"
    with pytest.raises(DataError, match="does not exist"):
        D.check_root(tmp_path / "nowhere")


@pytest.mark.slow
def test_real_breastmnist(real_root):
    d = D.load("breastmnist", root=real_root)
    assert (len(d.train), len(d.val), len(d.test)) == (546, 78, 156)
    assert d.train.x.shape == (546, 1, 28, 28) and set(d.train.y.tolist()) == {0, 1}
