"""Figure/table helpers (mdd.viz) and expert-trajectory tables (mdd.trajectories)."""
from __future__ import annotations

import stat

import numpy as np
import pandas as pd
import pytest
import torch

from mdd import data as D, trajectories, viz
from mdd.experts import ExpertRecipe, ExpertSet, train_experts
from mdd.io import read_json, write_json

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- files
def test_save_figure_stable_name_atomic_and_readable(tmp_path):
    fig, axes = viz.new_figure(1, 2)
    axes[0, 0].plot([0, 1])
    path = viz.save_figure(fig, "01_example", tmp_path / "figs")
    assert path == tmp_path / "figs" / "01_example.png"
    assert path.read_bytes()[:8] == PNG_MAGIC
    first = path.stat().st_size
    viz.save_figure(fig, "01_example", tmp_path / "figs")  # overwrite in place
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == ["01_example.png"]
    assert abs(path.stat().st_size - first) < first * 0.05
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


@pytest.mark.parametrize("name", ["a/b", "x.png", "", "../up", "t.csv"])
def test_bad_names_are_refused(tmp_path, name):
    fig, _ = viz.new_figure()
    with pytest.raises(ValueError, match="plain file stem"):
        viz.save_figure(fig, name, tmp_path)


def test_failed_save_leaves_nothing(tmp_path):
    class Broken:
        def savefig(self, *a, **k):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        viz.save_figure(Broken(), "x", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_save_table_csv_and_markdown(tmp_path):
    df = pd.DataFrame({"method": ["random", "a|b"], "acc": [0.5, float("nan")], "n": [1, 2]})
    paths = viz.save_table(df, "t", tmp_path)
    back = pd.read_csv(paths["csv"])
    assert list(back.columns) == ["method", "acc", "n"] and back["n"].tolist() == [1, 2]
    md = paths["md"].read_text().splitlines()
    assert md[0] == "| method | acc | n |" and md[1] == "|---|---|---|"
    assert md[2] == "| random | 0.5000 | 1 |"
    assert md[3] == "| a\\|b |  | 2 |"  # pipes escaped, NaN empty


# ---------------------------------------------------------------- figures
def _image_axes(fig):
    return [ax for ax in fig.get_axes() if ax.get_images()]


def test_image_grid_rows_per_class_and_cap():
    pixels = np.arange(7 * 4 * 4, dtype=np.uint8).reshape(7, 4, 4)
    labels = np.array([0, 0, 0, 1, 1, 0, 0])  # 5 of class 0, 2 of class 1, 0 of class 2
    fig = viz.image_grid(pixels, labels, ["a", "b", "c"], per_class=4)
    assert len(fig.get_axes()) == 3 * 4
    shown = _image_axes(fig)
    assert len(shown) == 4 + 2
    np.testing.assert_array_equal(shown[0].get_images()[0].get_array(), pixels[0])
    assert [ax.get_ylabel() for ax in fig.get_axes()[::4]] == ["a", "b", "c"]
    with pytest.raises(ValueError, match="labels"):
        viz.image_grid(pixels, labels[:3], ["a", "b"])


def test_montage_shows_real_pixels_per_class(make_fake):
    data = D.load("breastmnist", root=make_fake("breastmnist"))
    fig = viz.montage(data, per_class=3, seed=1)
    shown = _image_axes(fig)
    assert len(shown) == data.num_classes * 3
    idx = viz.sample_indices(data.train.y.numpy(), 3, data.num_classes, seed=1)
    assert data.train.y[idx].tolist() == [0, 0, 0, 1, 1, 1]
    np.testing.assert_array_equal(shown[0].get_images()[0].get_array(),
                                  data.pixels(data.train.x[idx[:1]])[0])


def test_class_counts_and_balance(make_fake):
    data = D.load("breastmnist", root=make_fake("breastmnist", n=(20, 6, 8)))
    counts = viz.class_counts(data)
    per_split = counts.groupby("split")["count"].sum().to_dict()
    assert per_split == {"train": 20, "val": 6, "test": 8}
    assert counts.groupby("split")["fraction"].sum().round(9).eq(1).all()
    assert set(counts["class"]) == set(data.class_names)
    two = pd.concat([counts, counts.assign(flag="other")])
    fig = viz.class_balance(two)
    assert [ax.get_title() for ax in fig.get_axes()] == ["breastmnist", "other"]
    with pytest.raises(ValueError):
        viz.class_balance(counts.iloc[:0])


# ---------------------------------------------------------------- trajectories
def test_param_distance():
    traj = torch.tensor([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]]) + 1.0
    np.testing.assert_allclose(trajectories.param_distance(traj), [0.0, 5.0, 10.0])
    with pytest.raises(ValueError):
        trajectories.param_distance(torch.zeros(3))


@pytest.fixture
def fake_experts(make_fake, tmp_path):
    root = make_fake("breastmnist")
    folder = tmp_path / "experts"
    train_experts("breastmnist", folder, 2, ExpertRecipe(epochs=2, width=8, batch_size=8),
                  root=root, device="cpu", progress=False, workers=0)
    return ExpertSet(folder), D.load("breastmnist", root=root)


def test_trajectory_table_computes_per_epoch_accuracy(fake_experts):
    experts, data = fake_experts
    table = trajectories.trajectory_table(experts, data)
    assert len(table) == 2 * 3 and set(table["source"]) == {"computed"}
    assert table.groupby("expert")["epoch"].apply(list).tolist() == [[0, 1, 2], [0, 1, 2]]
    assert (table[table["epoch"] == 0]["param_distance"] == 0).all()
    assert (table[table["epoch"] > 0]["param_distance"] > 0).all()
    # the last epoch's accuracy is the expert's own final val accuracy from training
    last = table[table["epoch"] == 2].set_index("expert")
    for e in experts.manifest["experts"]:
        assert last.loc[e["id"], "val_acc"] == pytest.approx(e["val_acc"])
        assert last.loc[e["id"], "val_auc"] == pytest.approx(e["val_auc"])
    summary = trajectories.summary(table)
    assert summary["epoch"].tolist() == [0, 1, 2] and (summary["experts"] == 2).all()
    fig = viz.trajectory_figure(table)
    assert [len(ax.get_lines()) for ax in fig.get_axes()] == [2, 2]


def test_trajectory_table_prefers_manifest_history(fake_experts):
    experts, data = fake_experts
    manifest = read_json(experts.folder / "manifest.json")
    manifest["experts"][0]["val_acc_per_epoch"] = [0.1, 0.2, 0.3]
    write_json(experts.folder / "manifest.json", manifest)
    table = trajectories.trajectory_table(ExpertSet(experts.folder), data)
    first = table[table["expert"] == 0]
    assert first["val_acc"].tolist() == [0.1, 0.2, 0.3] and set(first["source"]) == {"manifest"}
    assert set(table[table["expert"] == 1]["source"]) == {"computed"}


def test_manifest_history_formats():
    hist = [{"epoch": 1, "val_acc": 0.5}, {"epoch": 0, "val_acc": 0.25}]
    assert trajectories.manifest_history({"history": hist}) == [0.25, 0.5]
    assert trajectories.manifest_history({"history": hist[:1]}) is None  # does not start at 0
    assert trajectories.manifest_history({"val_acc": 0.7}) is None


def test_trajectory_table_refuses_other_dataset(fake_experts, make_fake, tmp_path):
    experts, _ = fake_experts
    other = D.load("pneumoniamnist", root=make_fake("pneumoniamnist", root=tmp_path / "p"))
    with pytest.raises(ValueError, match="are for breastmnist"):
        trajectories.trajectory_table(experts, other)
