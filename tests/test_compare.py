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
    assert t.loc["ptm", "gain_points"] == pytest.approx(15.0)   # points, not a fraction
    assert t.loc["full", "gain_points"] == pytest.approx(30.0)
    assert t.loc["ptm", "ΔACC vs random"] == "+15.0" and t.loc["random", "ΔACC vs random"] == ""
    assert t.loc["ptm", "ACC %"] == "65.0 ± 3.0" and t.loc["ptm", "AUC"] == "0.700 ± 0.010"
    assert t.loc["random", "images"] == "random real subset"
    assert t.loc["ptm", "images"] == "not saved" and t.loc["full", "images"] == ""
    assert list(table[compare.SHOWN].columns) == ["method", "seeds", "ACC %", "AUC",
                                                  "ΔACC vs random", "images"]
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
    # a missing artifact is "not saved", in the table and in its panel, never "saved artifact"
    t = view["table"].set_index("method")["images"]
    assert t.to_dict() == {"ptm": "saved artifact", "mtt": "not saved", "ptm_dom": "not saved"}
    np.testing.assert_array_equal(np.stack(_shown_pixels(view["figure"])), data.pixels(x))
    texts = [t.get_text() for ax in view["figure"].get_axes() for t in ax.texts]
    assert any(t.startswith("distilled images not saved") and "gone" in t for t in texts)
    assert "distilled images not saved\n(no artifact recorded)" in texts
    assert not any("unreadable" in t for t in texts)

    (art / "distilled.npz").write_bytes(b"broken")   # there, but damaged
    view = compare.compare_view(compare.load_results(results_dir), "breastmnist", 2, ["ptm"],
                                root=root)
    texts = [t.get_text() for ax in view["figure"].get_axes() for t in ax.texts]
    assert any("artifact unreadable" in t and "sha256" in t for t in texts)


def test_readable_numbers_and_labels(make_fake, results_dir):
    assert [compare.signed_points(g) for g in (13.333, -1.94, 0.0, float("nan"))] == [
        "+13.3", "-1.9", "+0.0", ""]
    res = compare.load_results(results_dir)
    ov = compare.overview(res)
    assert ov[["ipc", "method", "ACC %"]].values.tolist() == [
        [2, "random", "50.0 ± 1.0"], [5, "random", "60.0 ± 1.0"], ["all", "full", "80.0 ± 1.0"]]
    fig = compare.compare_view(res, "breastmnist", 2, root=make_fake("breastmnist"))["figure"]
    bars = [ax for ax in fig.get_axes() if ax.get_ylabel() == "test ACC %"][0]
    labels = [t for t in bars.texts]   # bar labels: % with one decimal, legible size
    assert [t.get_text() for t in labels] == ["50.0", "80.0"]
    assert min(t.get_fontsize() for t in labels) >= 10
    assert min(t.get_fontsize() for t in bars.get_xticklabels()) >= 10
    assert fig.get_figwidth() <= 15   # shown about 1:1 in a notebook, not scaled down


def test_seeds_are_summarised_and_controls_share_the_random_images(make_fake, tmp_path):
    """The grid's rows (one per seed, random@<method> controls): mean ± std over seeds,
    the gain paired by seed, the images of the first seed with a saved artifact."""
    root = make_fake("breastmnist")
    data = D.load("breastmnist", root=root)
    x = torch.linspace(-1, 1, 4 * 28 * 28).reshape(4, 1, 28, 28)
    art = save_distilled(tmp_path / "s1", x, torch.tensor([0, 0, 1, 1]), data.norm, grid=False,
                         info={"flag": "breastmnist", "size": 28, "ipc": 2, "method": "ptm",
                               "alpha": 0.01, "seed": 1})
    base = {"flag": "breastmnist", "size": 28, "ipc": 2, "acc_std": 0.05, "auc_mean": 0.6,
            "auc_std": 0.0}
    rows = [{**base, "method": m, "seed": s, "acc_mean": a, "artifact": p}
            for m, s, a, p in (("random", 0, 0.5, None), ("random", 1, 0.6, None),
                               ("ptm", 0, 0.7, str(tmp_path / "gone")), ("ptm", 1, 0.9, str(art)),
                               ("random@ptm", 0, 0.55, None), ("random@ptm", 1, 0.65, None))]
    csv = tmp_path / "results" / "benchmark.csv"
    compare.upsert_benchmark(rows, csv)
    res = compare.load_results(tmp_path / "results")
    assert len(res) == 6   # every seed kept
    t = compare.accuracy_table(res, "breastmnist", 2)
    assert t["method"].tolist() == ["random", "ptm", "random@ptm"]
    t = t.set_index("method")
    assert t.loc["ptm", "seeds"] == 2 and t.loc["ptm", "ACC %"] == "80.0 ± 14.1"
    assert t.loc["ptm", "ΔACC vs random"] == "+25.0" and t.loc["random@ptm", "ΔACC vs random"] == "+5.0"
    assert t.loc["ptm", "images"] == "saved artifact"
    assert t.loc["random@ptm", "images"] == "random real subset"
    fig = compare.compare_view(res, "breastmnist", 2, root=root)["figure"]
    titles = [sf._suptitle.get_text() for sf in fig.subfigs[0].subfigs if sf._suptitle]
    assert titles == ["random real (seed 0)", "ptm (distilled, seed 1)"]   # random@ptm: once
    np.testing.assert_array_equal(np.stack(_shown_pixels(fig)[4:]), compare.load_artifact(art, data)[0])


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


# ---------------------------------------------------------------- artifacts of record
def _artifact(folder, data, flag="breastmnist", ipc=2, method="ptm", value=0.5):
    x = torch.full((2 * ipc, 1, 28, 28), value)
    y = torch.arange(2).repeat_interleave(ipc)
    return save_distilled(folder, x, y, data.norm, class_names=data.class_names,
                          info={"flag": flag, "size": 28, "ipc": ipc, "method": method,
                                "alpha": 0.01, "seed": 0})


def test_save_record_copies_atomically_and_returns_a_row_path(make_fake, tmp_path, monkeypatch):
    from mdd import records
    data = D.load("breastmnist", root=make_fake("breastmnist"))
    run = tmp_path / "runs" / "breastmnist-ipc2-ptm"
    _artifact(run / "distilled", data)
    where = records.save_record(run, "breastmnist", 2, "ptm", 0, root=tmp_path / "rec")
    dest = tmp_path / "rec" / "breastmnist-ipc2-ptm-s0"
    assert where == str(dest)   # outside the project: absolute
    assert sorted(p.name for p in dest.iterdir()) == ["distilled.npz", "grid.png", "manifest.json"]
    assert records.is_saved(where) and not records.is_saved(tmp_path / "nope")
    assert not records.is_saved(None) and not records.is_saved(float("nan"))
    np.testing.assert_array_equal(compare.load_artifact(where, data)[0],
                                  compare.load_artifact(run, data)[0])
    # inside the project the path is relative to its root, as the CSV stores it
    import mdd.notebooks
    proj = tmp_path / "proj"
    with monkeypatch.context() as m:
        m.setattr(mdd.notebooks, "project_root", lambda: proj)
        assert records.save_record(run, "breastmnist", 2, "ptm", 0) == \
            "results/artifacts/breastmnist-ipc2-ptm-s0"
        assert records.is_saved("results/artifacts/breastmnist-ipc2-ptm-s0")
    assert (proj / "results" / "artifacts" / "breastmnist-ipc2-ptm-s0" / "manifest.json").is_file()

    # a changed artifact replaces the record whole; a failed copy leaves the old one
    _artifact(run / "distilled", data, value=-0.5)
    assert records.save_record(run, "breastmnist", 2, "ptm", 0, root=tmp_path / "rec") == where
    np.testing.assert_array_equal(compare.load_artifact(where, data)[0],
                                  compare.load_artifact(run, data)[0])
    before = (dest / "distilled.npz").read_bytes()
    _artifact(run / "distilled", data, value=0.9)

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(records.shutil, "copyfile", boom)
    with pytest.raises(OSError, match="disk full"):
        records.save_record(run, "breastmnist", 2, "ptm", 0, root=tmp_path / "rec")
    assert (dest / "distilled.npz").read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "rec").iterdir()) == ["breastmnist-ipc2-ptm-s0"]


def test_save_record_refuses_wrong_or_damaged_artifacts(make_fake, tmp_path):
    from mdd import records
    data = D.load("breastmnist", root=make_fake("breastmnist"))
    art = _artifact(tmp_path / "a", data)
    with pytest.raises(ValueError, match="not {'flag': 'breastmnist', 'ipc': 10"):
        records.save_record(art, "breastmnist", 10, "ptm", 0, root=tmp_path / "rec")
    with pytest.raises(FileNotFoundError):
        records.save_record(tmp_path / "none", "breastmnist", 2, "ptm", 0, root=tmp_path / "rec")
    (art / "distilled.npz").write_bytes(b"x")
    with pytest.raises(ValueError, match="sha256"):
        records.save_record(art, "breastmnist", 2, "ptm", 0, root=tmp_path / "rec")
    assert not (tmp_path / "rec" / "breastmnist-ipc2-ptm-s0").exists()


def test_adopt_points_the_csv_at_records(make_fake, tmp_path):
    from mdd import records
    data = D.load("breastmnist", root=make_fake("breastmnist"))
    art = _artifact(tmp_path / "runs" / "x" / "distilled", data)
    csv = tmp_path / "results" / "benchmark.csv"
    row = {"flag": "breastmnist", "ipc": 2, "acc_mean": 0.7, "acc_std": 0.0, "auc_mean": 0.7,
           "auc_std": 0.0, "seed": 0}
    compare.upsert_benchmark([{**row, "method": "ptm", "artifact": str(art)},
                              {**row, "method": "mtt", "artifact": str(tmp_path / "gone")},
                              {**row, "method": "random"}], csv)
    report = records.adopt(csv)
    assert [(r["method"], r["status"]) for r in report] == [("mtt", "missing"), ("ptm", "recorded")]
    table = compare.read_benchmark(csv).set_index("method")
    assert table.loc["ptm", "artifact"] == str(tmp_path / "results" / "artifacts" /
                                               "breastmnist-ipc2-ptm-s0")
    assert [r["status"] for r in records.adopt(csv)] == ["missing", "kept"]


def test_committed_results_have_their_artifacts(tmp_path):
    """The results of record: every saved artifact is a relative path under
    results/artifacts that loads and matches its row; results/ stays small."""
    from mdd import records
    from mdd.notebooks import project_root
    root = project_root()
    if root is None or not (root / "results" / "benchmark.csv").is_file():
        pytest.skip("not a checkout with results/benchmark.csv")
    size = sum(p.stat().st_size for p in (root / "results").rglob("*") if p.is_file())
    assert size <= 20e6, f"results/ holds {size / 1e6:.1f} MB; keep it under 20 MB"
    res = compare.read_benchmark(root / "results" / "benchmark.csv")
    distilled = res[[not (m in ("random", "full") or m.startswith("random@")) for m in res["method"]]]
    recorded = [a for a in distilled["artifact"] if a and a.startswith(records.RECORDS)]
    if not recorded:
        pytest.skip("no artifacts of record committed yet under results/artifacts "
                    "(issue 15): every distilled row says 'not saved'")
    for r in distilled.itertuples():
        assert r.artifact and not r.artifact.startswith("/"), f"{r.flag} ipc {r.ipc} {r.method}"
        assert r.artifact == f"{records.RECORDS}/{records.record_name(r.flag, r.ipc, r.method, r.seed)}"
        from mdd.artifact import load_distilled
        ds = load_distilled(root / r.artifact)
        assert (ds.flag, ds.ipc, ds.method) == (r.flag, r.ipc, r.method)
