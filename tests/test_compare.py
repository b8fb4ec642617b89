"""The comparison callbacks of notebook 06 (mdd.compare), without a browser."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from mdd import baselines, compare, data as D
from mdd.artifact import save_distilled
from mdd.io import write_json


def baseline_json(flag="breastmnist", ipc=2, kind="random", acc=0.5, seed=0, **extra) -> dict:
    """The shape of what `mdd baseline` prints (mdd.baseline_cli.run_baseline)."""
    return {"flag": flag, "size": 28, "ipc": ipc if kind == "random" else None, "kind": kind,
            "seed": seed, "split": "test", "acc_mean": acc, "acc_std": 0.01, "auc_mean": 0.6,
            "auc_std": 0.02, "accs": [acc], "aucs": [0.6], "lr": 0.01, "n_train": 4,
            "models": 1, "epochs": 2, "seconds": 0.1, "device": "cpu", **extra}


@pytest.fixture
def results_dir(tmp_path):
    folder = tmp_path / "results"
    write_json(folder / "baselines" / "breastmnist_ipc2_random.json", baseline_json(acc=0.5))
    write_json(folder / "baselines" / "breastmnist_ipc5_random.json", baseline_json(ipc=5, acc=0.6))
    write_json(folder / "baselines" / "breastmnist_full.json", baseline_json(kind="full", acc=0.8))
    (folder / "baselines" / "x.json.tmp").write_text("")  # a run in progress: ignored
    return folder


@pytest.fixture(autouse=True)
def _fresh_cache():
    compare._load.cache_clear()
    yield
    compare._load.cache_clear()


# ---------------------------------------------------------------- reading
def test_load_results_from_baselines_only(results_dir):
    res = compare.load_results(results_dir)
    assert list(res.columns) == list(compare.COLUMNS)
    assert sorted(zip(res["method"], res["ipc"].astype(object).where(res["ipc"].notna(), None))) == [
        ("full", None), ("random", 2), ("random", 5)]
    assert compare.flag_options(res) == ["breastmnist"]
    assert compare.ipc_options(res, "breastmnist") == [2, 5]
    assert compare.method_options(res, "breastmnist", 2) == ["random", "full"]
    assert compare.load_results(results_dir / "missing").empty


def test_benchmark_csv_wins_and_is_validated(results_dir):
    pd.DataFrame([{"flag": "breastmnist", "ipc": 2, "method": "random", "acc_mean": 0.9,
                   "acc_std": 0, "auc_mean": 0.9, "auc_std": 0},
                  {"flag": "breastmnist", "ipc": 2, "method": "ptm", "acc_mean": 0.7,
                   "acc_std": 0.02, "auc_mean": 0.7, "auc_std": 0.01}]
                 ).to_csv(results_dir / "benchmark.csv", index=False)
    res = compare.load_results(results_dir)
    at2 = compare.select(res, "breastmnist", 2)
    assert at2["method"].tolist() == ["random", "ptm", "full"]  # display order
    assert at2.set_index("method").loc["random", "acc_mean"] == 0.9  # csv over json
    (results_dir / "benchmark.csv").write_text("flag,ipc,method\nbreastmnist,2,ptm\n")
    with pytest.raises(ValueError, match=r"benchmark.csv lacks columns \['acc_mean'"):
        compare.load_results(results_dir)


def test_bad_baseline_json_names_the_file(results_dir):
    (results_dir / "baselines" / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="broken.json is not valid JSON"):
        compare.load_results(results_dir)
    (results_dir / "baselines" / "broken.json").write_text(json.dumps({"flag": "x"}))
    with pytest.raises(ValueError, match="broken.json is not the output of `mdd baseline`"):
        compare.load_results(results_dir)


def test_accuracy_table_gain_over_random(results_dir):
    compare.upsert_benchmark([{"flag": "breastmnist", "ipc": 2, "method": "ptm", "acc_mean": 0.65,
                               "acc_std": 0.03, "auc_mean": 0.7, "auc_std": 0.01}],
                             results_dir / "benchmark.csv")
    table = compare.accuracy_table(compare.load_results(results_dir), "breastmnist", 2)
    t = table.set_index("method")
    assert t.loc["ptm", "gain_vs_random"] == pytest.approx(0.15)
    assert t.loc["full", "gain_vs_random"] == pytest.approx(0.3)
    assert t.loc["ptm", "acc"] == "0.650 ± 0.030"
    assert t.loc["random", "images"] == "random real subset" and t.loc["ptm", "images"] == ""
    only = compare.accuracy_table(compare.load_results(results_dir), "breastmnist", 2, ["ptm"])
    assert only["method"].tolist() == ["ptm"]


def test_upsert_replaces_same_key(tmp_path):
    path = tmp_path / "benchmark.csv"
    row = {"flag": "breastmnist", "ipc": 1, "method": "ptm", "acc_mean": 0.5, "acc_std": 0,
           "auc_mean": 0.5, "auc_std": 0}
    compare.upsert_benchmark([row, {**row, "method": "random"}], path)
    out = compare.upsert_benchmark([{**row, "acc_mean": 0.7}], path)
    assert out["method"].tolist() == ["random", "ptm"]
    assert out.set_index("method").loc["ptm", "acc_mean"] == 0.7
    assert len(compare.read_benchmark(path)) == 2


# ---------------------------------------------------------------- images and the view
def _shown_pixels(fig) -> list[np.ndarray]:
    return [np.asarray(ax.get_images()[0].get_array()) for ax in fig.get_axes() if ax.get_images()]


def test_view_with_only_baselines_shows_the_baselines_images(make_fake, results_dir):
    root = make_fake("breastmnist")
    res = compare.load_results(results_dir)
    view = compare.compare_view(res, "breastmnist", 2, root=root)
    assert view["table"]["method"].tolist() == ["random", "full"]
    data = D.load("breastmnist", root=root)
    x, _, _ = baselines.random_subset(data, 2, seed=0)  # what the baseline trained on
    shown = _shown_pixels(view["figure"])
    assert len(shown) == 2 * data.num_classes
    np.testing.assert_array_equal(np.stack(shown), data.pixels(x))


def test_view_uses_saved_artifact_and_survives_a_broken_one(make_fake, results_dir, tmp_path):
    root = make_fake("breastmnist")
    data = D.load("breastmnist", root=root)
    x = torch.linspace(-1, 1, 2 * 28 * 28).reshape(2, 1, 28, 28).repeat(2, 1, 1, 1)
    y = torch.tensor([0, 0, 1, 1])
    art = save_distilled(tmp_path / "run" / "distilled", x, y, data.norm, grid=False,
                         info={"flag": "breastmnist", "size": 28, "ipc": 2, "method": "ptm",
                               "alpha": 0.01})
    rows = [{"flag": "breastmnist", "ipc": 2, "method": "ptm", "acc_mean": 0.7, "acc_std": 0.0,
             "auc_mean": 0.7, "auc_std": 0.0, "artifact": str(art)},
            {"flag": "breastmnist", "ipc": 2, "method": "mtt", "acc_mean": 0.6, "acc_std": 0.0,
             "auc_mean": 0.6, "auc_std": 0.0, "artifact": str(tmp_path / "gone")},
            {"flag": "breastmnist", "ipc": 2, "method": "ptm_dom", "acc_mean": 0.6,
             "acc_std": 0.0, "auc_mean": 0.6, "auc_std": 0.0}]
    compare.upsert_benchmark(rows, results_dir / "benchmark.csv")
    res = compare.load_results(results_dir)
    view = compare.compare_view(res, "breastmnist", 2, ["ptm", "mtt", "ptm_dom"], root=root)
    assert view["table"]["images"].tolist() == ["saved artifact", "saved artifact", ""]
    np.testing.assert_array_equal(np.stack(_shown_pixels(view["figure"])), data.pixels(x))
    texts = [t.get_text() for ax in view["figure"].get_axes() for t in ax.texts]
    assert any("artifact unreadable" in t and "gone" in t for t in texts)
    assert "no distilled images saved" in texts


def test_view_without_rows_says_what_is_saved(make_fake, results_dir):
    res = compare.load_results(results_dir)
    with pytest.raises(ValueError, match=r"saved for breastmnist: ipc \[2, 5\]"):
        compare.compare_view(res, "breastmnist", 2, ["ptm"], root=make_fake("breastmnist"))


def test_ensure_random_baseline_computes_once(make_fake, tmp_path, monkeypatch):
    root = make_fake("breastmnist")
    own = tmp_path / "own"
    res = compare.ensure_random_baseline(compare.load_results(tmp_path / "none"), "breastmnist",
                                         2, "smoke", own, root=root)
    saved = json.loads((own / "baselines" / "breastmnist_ipc2_random.json").read_text())
    assert saved["models"] == 1 and saved["epochs"] == 2 and saved["n_train"] == 4
    assert compare.select(res, "breastmnist", 2, ["random"])["acc_mean"].iloc[0] == saved["acc_mean"]

    def boom(*a, **k):
        raise AssertionError("must not recompute")

    monkeypatch.setattr("mdd.baseline_cli.run_baseline", boom)
    again = compare.ensure_random_baseline(compare.load_results(own), "breastmnist", 2, "smoke",
                                           own, root=root)
    assert len(again) == 1


# ---------------------------------------------------------------- the widget
def test_widget_options_follow_the_choices(make_fake, results_dir, tmp_path):
    root = make_fake("breastmnist")
    pneu = make_fake("pneumoniamnist", root=root)
    write_json(results_dir / "baselines" / "pneumoniamnist_ipc1_random.json",
               baseline_json("pneumoniamnist", ipc=1))
    res = compare.load_results(results_dir)
    box = compare.compare_widget(res, root=pneu, flag="breastmnist", ipc=5)
    c = box.controls
    assert list(c["flag"].options) == ["breastmnist", "pneumoniamnist"]
    assert c["ipc"].value == 5 and list(c["ipc"].options) == [2, 5]
    assert c["methods"].value == ("random", "full")
    kinds = [o["output_type"] for o in c["output"].outputs]
    assert kinds == ["display_data", "display_data"]
    assert "image/png" in c["output"].outputs[0]["data"]

    c["flag"].value = "pneumoniamnist"  # ipc and methods follow, then it redraws
    assert list(c["ipc"].options) == [1] and c["methods"].value == ("random",)
    assert len(c["output"].outputs) == 2
    c["methods"].value = ()  # nothing chosen → all methods
    assert len(c["output"].outputs) == 2


def test_widget_without_results_explains():
    box = compare.compare_widget(compare.load_results([]))
    assert "No saved results" in box.children[0].value and box.controls == {}


def test_sources_are_shown_relative_to_the_project(tmp_path):
    from mdd.notebooks import project_root, shown_path
    assert shown_path(tmp_path / "b.csv") == str(tmp_path / "b.csv")
    if project_root() is not None:   # a checkout: committed tables carry no machine folders
        assert shown_path("results/benchmark.csv") == "results/benchmark.csv"
        assert shown_path(project_root() / "results" / "x.json") == "results/x.json"
