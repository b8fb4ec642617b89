"""Stability statistics and bands (mdd.diagnostics), DOM/snapshot readers
(mdd.dom_diagnostics), nearest-image search (mdd.image_diagnostics) — one file, as they
share the fake run folder — and the figures of notebooks 02–05 (mdd.viz), on small
hand-made inputs: fake logs, fake run folders, tiny tensors."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

from mdd import benchmark_viz as bv, data as D, diagnostics as dg, dom_diagnostics as dd, image_diagnostics as imd, run_viz, viz
from mdd.data import Normalization
from mdd.matching import Student
from mdd.nets import ConvNet, flatten_params

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- statistics
def test_rolling_variance_by_hand():
    v = [1, 1, 1, 5, 1]
    np.testing.assert_allclose(dg.rolling_variance(v, 2), [np.nan, 0, 0, 8, 8])
    # window 3: var(1, 1, 5) = var(1, 5, 1) = 16/3 (ddof 1); the first window has 2 values
    np.testing.assert_allclose(dg.rolling_variance(v, 3), [np.nan, 0, 0, 16 / 3, 16 / 3])
    with pytest.raises(ValueError, match="window"):
        dg.rolling_variance(v, 1)


def test_loss_jumps_count_and_size():
    # ratios 1.2, 2.5, 0.97, 0.345, 1: two changes beyond a factor 1.5
    j = dg.loss_jumps([1, 1.2, 3, 2.9, 1, 1], rel=0.5)
    assert (j["jumps"], j["changes"]) == (2, 5)
    assert j["mean_jump"] == pytest.approx((1.8 + 1.9) / 2)
    assert j["max_change"] == pytest.approx(1.9)
    assert j["jump_rate"] == pytest.approx(2 / 5) and j["threshold"] == 1.5
    # a stricter threshold (factor 3) finds only the drop 2.9 → 1
    assert dg.loss_jumps([1, 1.2, 3, 2.9, 1, 1], rel=1.8)["jumps"] == 1
    # non-finite and non-positive values are dropped before comparing neighbours
    assert dg.loss_jumps([1, float("nan"), 0.0, 3])["jumps"] == 1
    empty = dg.loss_jumps([float("nan"), 2.0])
    assert empty["jumps"] == 0 and math.isnan(empty["max_change"])
    with pytest.raises(ValueError):
        dg.loss_jumps([1, 2], rel=0)


def test_default_window():
    assert dg.default_window(8) == 2 and dg.default_window(120) == 20
    assert dg.default_window(50) == 10 and dg.default_window(1000) == 20


def test_seed_band_mean_std_across_seeds():
    df = pd.DataFrame({"method": ["a"] * 6 + ["b"] * 2,
                       "seed": [0, 1, 2, 0, 1, 2, 0, 0],
                       "iteration": [0, 0, 0, 4, 4, 4, 0, 4],
                       "acc_mean": [0.5, 0.6, 0.7, 0.8, 0.8, 0.8, 0.4, float("nan")]})
    band = dg.seed_band(df, "acc_mean")
    a0 = band[(band.method == "a") & (band.iteration == 0)].iloc[0]
    assert a0["mean"] == pytest.approx(0.6) and a0["std"] == pytest.approx(0.1)
    assert (a0["min"], a0["max"], a0["n"]) == (0.5, 0.7, 3)
    a4 = band[(band.method == "a") & (band.iteration == 4)].iloc[0]
    assert a4["std"] == pytest.approx(0.0)
    b = band[band.method == "b"]
    assert len(b) == 1 and b.iloc[0]["std"] == 0.0 and b.iloc[0]["n"] == 1   # NaN row dropped
    assert list(band.columns) == ["method", "iteration", "mean", "std", "min", "max", "n"]
    assert dg.seed_band(df.iloc[:0], "acc_mean").empty


def _fake_logs() -> pd.DataFrame:
    """Two methods × two seeds × four iterations; mtt jumpy, ptm smooth."""
    rows = []
    losses = {("mtt", 0): [1.0, 4.0, 1.0, 4.0], ("mtt", 1): [2.0, 2.0, 8.0, 2.0],
              ("ptm", 0): [1.0, 0.9, 0.8, 0.7], ("ptm", 1): [1.0, 0.9, 0.8, 0.9]}
    for (method, seed), ls in losses.items():
        skips = 0
        for it, loss in enumerate(ls):
            skipped = method == "mtt" and seed == 1 and it == 2
            skips += skipped
            rows.append({"method": method, "seed": seed, "iteration": it, "phase": "main",
                         "loss": loss, "alpha": 0.01 * (1 + it) if method == "ptm" else 0.01 / (1 + it),
                         "skipped": skipped, "skips": skips, "nonfinite": skips,
                         "start": it % 2 if method == "mtt" else 0, "target": 1 + it % 2,
                         "overlap_ratio": 0.0 if method == "ptm" else 0.5,
                         "mean_similarity": 0.5 + 0.1 * it, "replaced": 0})
    return pd.DataFrame(rows)


def _fake_evals() -> pd.DataFrame:
    return pd.DataFrame({"method": ["mtt"] * 4 + ["ptm"] * 4, "seed": [0, 0, 1, 1] * 2,
                         "iteration": [0, 4] * 4,
                         "acc_mean": [0.5, 0.9, 0.5, 0.5, 0.5, 0.7, 0.5, 0.8]})


def test_run_statistics_and_stability_table_by_hand():
    logs, evals = _fake_logs(), _fake_evals()
    runs = pd.DataFrame({"method": ["mtt", "mtt", "ptm", "ptm"], "seed": [0, 1, 0, 1],
                         "acc_mean": [0.6, 0.8, 0.7, 0.7], "auc_mean": [0.5] * 4})
    per = dg.run_statistics(logs, evals, runs, window=2, rel=0.5).set_index(["method", "seed"])
    m0 = per.loc[("mtt", 0)]
    assert m0["iterations"] == 4 and m0["window"] == 2
    assert m0["loss_jumps"] == 3 and m0["jump_size"] == pytest.approx(3.0)
    assert m0["rolling_var_mean"] == pytest.approx(4.5)            # var of (1, 4) = 4.5 each time
    assert m0["val_acc_final"] == 0.9 and m0["val_acc_best"] == 0.9 and m0["test_acc"] == 0.6
    assert m0["alpha_final"] == pytest.approx(0.0025) and m0["alpha_min"] == pytest.approx(0.0025)
    m1 = per.loc[("mtt", 1)]
    assert (m1["loss_jumps"], m1["skipped"], m1["nonfinite"]) == (2, 1, 1)
    assert m1["max_loss_change"] == pytest.approx(6.0)
    p0 = per.loc[("ptm", 0)]
    assert p0["loss_jumps"] == 0 and math.isnan(p0["jump_size"])
    assert p0["rolling_var_mean"] == pytest.approx(0.005)           # (0.1)² / 2

    table = dg.stability_table(per.reset_index(), logs).set_index("method")
    mtt, ptm = table.loc["mtt"], table.loc["ptm"]
    assert mtt["seeds"] == 2
    assert mtt["val_acc_final_mean"] == pytest.approx(0.7)
    assert mtt["val_acc_final_std"] == pytest.approx(np.std([0.9, 0.5], ddof=1))
    assert ptm["val_acc_final_std"] == pytest.approx(np.std([0.7, 0.8], ddof=1))
    assert mtt["test_acc_std"] == pytest.approx(np.std([0.6, 0.8], ddof=1)) and ptm["test_acc_std"] == 0
    assert mtt["loss_jumps_mean"] == 2.5 and ptm["loss_jumps_mean"] == 0
    assert mtt["jump_size_mean"] == pytest.approx((3 * 3.0 + 2 * 6.0) / 5)
    assert math.isnan(ptm["jump_size_mean"])
    assert (mtt["skipped"], mtt["nonfinite"], ptm["skipped"]) == (1, 1, 0)
    # std across seeds of the loss at each iteration, averaged: mtt |1-2|,|4-2|,|1-8|,|4-2| / √2
    assert mtt["loss_seed_std"] == pytest.approx(np.mean([1, 2, 7, 2]) / math.sqrt(2))
    assert ptm["alpha_final_mean"] == pytest.approx(0.04) and ptm["alpha_final_std"] == 0


def test_add_rolling_variance_stays_within_a_run():
    out = dg.add_rolling_variance(_fake_logs(), 2)
    first = out.groupby(["method", "seed"])["rolling_var"].apply(lambda s: s.iloc[0])
    assert first.isna().all()                    # no window reaches into the previous run
    assert out[(out.method == "mtt") & (out.seed == 0)]["rolling_var"].iloc[1] == pytest.approx(4.5)


def test_overlap_summary():
    logs = _fake_logs()
    events = pd.DataFrame({"method": ["ptm", "ptm"], "seed": [0, 0], "iteration": [1, 3],
                           "replaced": [2, 0], "max_similarity": [0.95, 0.5]})
    s = dd.overlap_summary(logs, events).set_index(["method", "seed"])
    assert s.loc[("ptm", 0), "dom_checks"] == 2 and s.loc[("ptm", 0), "replaced"] == 2
    assert s.loc[("ptm", 0), "max_similarity_at_checks"] == 0.95
    assert s.loc[("mtt", 1), "dom_checks"] == 0
    assert s.loc[("mtt", 0), "similarity_first"] == 0.5
    assert s.loc[("mtt", 0), "similarity_last"] == pytest.approx(0.8)


def test_pair_stats():
    m = {0: np.array([[1, 0.95, 0.2], [0.95, 1, 0.4], [0.2, 0.4, 1]]), 1: np.ones((1, 1))}
    s = dd.pair_stats(m, 0.9)
    assert s["pairs"] == 3 and s["max_similarity"] == 0.95
    assert s["overlap_ratio"] == pytest.approx(1 / 3)
    assert s["mean_similarity"] == pytest.approx((0.95 + 0.2 + 0.4) / 3)
    assert dd.pair_stats({0: np.ones((1, 1))}, 0.9)["pairs"] == 0


def test_threads_helpers():
    assert dg.preset_threads("smoke") == 1 and dg.preset_threads("cpu") is None
    assert dg.preset_threads("cpu", 3) == 3 and dg.preset_threads("smoke", None) is None
    assert dg.safe_name("ptm+dom") == "ptm_dom" and dg.run_name("b", 2, "ptm", 1) == "b-ipc2-ptm-s1"
    assert dg.run_name("b", 2, "ptm+dom", 0, "tau0.8") == "b-ipc2-ptm+dom-tau0.8-s0"


# ---------------------------------------------------------------- nearest real image
def test_nearest_real_finds_the_planted_exact_match():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(50, 1, 8, 8, generator=g)
    query = real[torch.tensor([7, 23, 41])].clone()
    idx, dist = imd.nearest_real(query, real)
    assert idx.tolist() == [7, 23, 41]
    np.testing.assert_allclose(dist, 0, atol=1e-6)
    # read in small batches: the same answer
    idx2, _ = imd.nearest_real(query, real, batch=7)
    assert idx2.tolist() == [7, 23, 41]
    # a slightly moved copy is still nearest; the distance is the per-pixel RMS difference
    idx3, dist3 = imd.nearest_real(query + 0.01, real)
    assert idx3.tolist() == [7, 23, 41]
    np.testing.assert_allclose(dist3, 0.01, rtol=1e-4)


def test_nearest_real_stays_within_the_class():
    g = torch.Generator().manual_seed(1)
    real = torch.randn(20, 1, 6, 6, generator=g)
    labels = torch.arange(20) % 2
    query = real[4:5].clone()                      # real 4 is class 0
    idx, dist = imd.nearest_real(query, real, [1], labels)
    assert int(labels[idx[0]]) == 1 and idx[0] != 4 and dist[0] > 0
    idx, _ = imd.nearest_real(query, real, [0], labels)
    assert idx[0] == 4
    with pytest.raises(ValueError, match="no real image"):
        imd.nearest_real(query, real, [2], labels)
    with pytest.raises(ValueError, match="space"):
        imd.nearest_real(query, real, space="cosine")
    with pytest.raises(ValueError, match="student"):
        imd.nearest_real(query, real, space="feature")


def test_nearest_real_in_feature_space():
    torch.manual_seed(0)
    net = ConvNet(1, 2, 8, width=8, depth=2)
    student, theta = Student(net), flatten_params(net)
    real = torch.randn(30, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    idx, dist = imd.nearest_real(real[[3, 17]], real, space="feature", student=student, theta=theta)
    assert idx.tolist() == [3, 17]
    np.testing.assert_allclose(dist, 0, atol=1e-3)


def test_nearest_table():
    t = imd.nearest_table("ptm", [0, 1], np.array([5, 9]), np.array([0.1, 0.2]), init=np.array([5, 3]))
    assert t["nearest_is_init"].tolist() == [True, False]
    assert list(t.columns) == ["method", "index", "label", "nearest", "distance", "space", "init",
                               "nearest_is_init"]


# ---------------------------------------------------------------- fake run folders
def _fake_run(folder, m=4, c=1, s=6):
    """A run folder with what distill writes for the readers used here: config, logs,
    two snapshots (the second with similarity matrices), one DOM event that replaced
    image 1 by train image 11 and one that replaced nothing."""
    rng = np.random.default_rng(0)
    (folder / "snapshots").mkdir(parents=True)
    (folder / "dom").mkdir()
    y = np.array([0, 0, 1, 1])
    x0 = rng.normal(size=(m, c, s, s)).astype(np.float32)
    x1 = x0 + 1
    sims = {"sim_class0": np.array([[1, 0.95], [0.95, 1]], dtype=np.float32),
            "sim_class1": np.array([[1, 0.3], [0.3, 1]], dtype=np.float32)}
    np.savez(folder / "snapshots" / "iter_000000.npz", x=x0, y=y, alpha=np.array(0.01), iteration=np.array(0))
    np.savez(folder / "snapshots" / "iter_000004.npz", x=x1, y=y, alpha=np.array(0.02),
             iteration=np.array(4), **sims)
    after = x0.copy()
    after[1] = 7.0
    np.savez(folder / "dom" / "event_000002.npz", before=x0, after=after, labels=y,
             replaced=np.array([1]), real_indices=np.array([11]), **sims)
    np.savez(folder / "dom" / "event_000003.npz", before=after, after=after, labels=y,
             replaced=np.zeros(0, dtype=np.int64), real_indices=np.zeros(0, dtype=np.int64), **sims)
    events = [{"iteration": 2, "reason": "periodic", "stage": 0, "target": 1, "tau": 0.9,
               "overlap_ratio": 0.5, "mean_similarity": 0.625, "replace": [1],
               "pairs": [[0, 1, 0.95]], "real_indices": {"1": 11}, "file": "dom/event_000002.npz"},
              {"iteration": 3, "reason": "stage", "stage": 1, "target": 2, "tau": 0.9,
               "overlap_ratio": 0.0, "mean_similarity": 0.3, "replace": [], "pairs": [],
               "real_indices": {}, "file": "dom/event_000003.npz"}]
    (folder / "dom_events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    log = [{"iteration": i, "phase": "main", "loss": 1.0 / (i + 1), "alpha": 0.01, "skipped": False,
            "skips": 0, "nonfinite": 0, "overlap_ratio": 0.5, "mean_similarity": 0.6,
            "replaced": int(i == 2), "start": 0, "target": 1} for i in range(4)]
    (folder / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    (folder / "evals.jsonl").write_text(json.dumps({"iteration": 0, "alpha": 0.01, "acc_mean": 0.5,
                                                    "acc_std": 0, "auc_mean": 0.5, "auc_std": 0}) + "\n")
    (folder / "config.json").write_text(json.dumps({"ipc": 2, "seed": 0, "init": "real"}))
    return {"method": "ptm+dom", "seed": 0, "run": str(folder)}, x0, x1


def test_readers_of_a_run_folder(tmp_path):
    run, x0, x1 = _fake_run(tmp_path / "r")
    logs = dg.load_logs([run])
    assert logs["method"].unique().tolist() == ["ptm+dom"] and len(logs) == 4
    assert logs["loss"].dtype == float and logs["skipped"].dtype == bool
    evals = dg.load_evals([run])
    assert evals[["method", "iteration", "acc_mean"]].values.tolist() == [["ptm+dom", 0, 0.5]]

    snaps = dd.similarity_snapshots(run["run"])
    assert [it for it, _ in snaps] == [4] and sorted(snaps[0][1]) == [0, 1]
    panels = dd.similarity_panels([run])
    assert len(panels) == 1 and panels[0][0].endswith("it 4")   # one snapshot: shown once

    ev = dd.dom_events_table(run["run"])
    assert ev["replaced"].tolist() == [1, 0] and ev["replaced_from"].tolist() == ["1←11", ""]
    assert ev["max_similarity"].tolist() == pytest.approx([0.95, 0.95])
    both = dd.load_dom_events([run, {"method": "ptm", "seed": 0, "run": str(tmp_path / "none")}])
    assert both["method"].unique().tolist() == ["ptm+dom"]
    assert dd.load_dom_events([{"method": "ptm", "seed": 0, "run": str(tmp_path / "none")}]).empty

    reps = dd.dom_replacements(run["run"])
    assert len(reps) == 1
    r = reps[0]
    assert (r["iteration"], r["index"], r["label"], r["real_index"]) == (2, 1, 0, 11)
    np.testing.assert_array_equal(r["before"], x0[1])
    assert (r["after"] == 7).all()
    np.testing.assert_array_equal(r["final"], x1[1])              # the last snapshot's image

    its, x, y = imd.snapshot_series(run["run"])
    assert its == [0, 4] and x.shape == (2, 4, 1, 6, 6) and y.tolist() == [0, 0, 1, 1]
    its, _, _ = imd.snapshot_series(run["run"], max_snapshots=1)
    assert its == [0, 4]                                          # first and last, always
    with pytest.raises(FileNotFoundError):
        imd.snapshot_series(tmp_path)


def test_init_indices_follow_dom_reseeds(tmp_path, make_fake):
    root = make_fake("breastmnist", n=(20, 6, 8))
    data = D.load("breastmnist", root=root)
    run, _, _ = _fake_run(tmp_path / "r")
    from mdd.baselines import random_subset
    start = random_subset(data, 2, seed=0)[2].numpy()
    idx = imd.init_indices(run["run"], data)
    assert idx[0] == start[0] and idx[1] == 11 and idx[2:].tolist() == start[2:].tolist()


def test_link_experts(tmp_path):
    src = tmp_path / "experts" / "breastmnist_smoke"
    src.mkdir(parents=True)
    target = tmp_path / "grid" / "experts" / "breastmnist-smoke"
    assert dg.link_experts(src, target) is False                  # no manifest: nothing to share
    (src / "manifest.json").write_text("{}")
    assert dg.link_experts(src, target) is True
    assert target.is_symlink() and (target / "manifest.json").is_file()
    assert dg.link_experts(src, target) is False                  # already there: left alone


# ---------------------------------------------------------------- figures
def _published(fig, name, folder):
    assert isinstance(fig, Figure)
    viz.publish(fig, name, folder)
    data = (folder / f"{name}.png").read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 1000


def test_run_figures_return_figures_and_write_pngs(tmp_path):
    logs, evals = _fake_logs(), _fake_evals()
    _published(run_viz.loss_figure(dg.add_rolling_variance(logs, 2), 2), "02_loss", tmp_path)
    _published(run_viz.alpha_figure(logs), "02_alpha", tmp_path)
    _published(run_viz.skips_figure(logs), "02_skips", tmp_path)
    _published(run_viz.skips_figure(logs.assign(skipped=False, nonfinite=0)), "02_noskips", tmp_path)
    _published(run_viz.band_figure(dg.seed_band(evals, "acc_mean"), evals), "02_band", tmp_path)
    events = pd.DataFrame({"method": ["ptm"], "seed": [0], "iteration": [2], "replaced": [1],
                           "mean_similarity": [0.7], "max_similarity": [0.95]})
    _published(run_viz.overlap_figure(logs, events, tau=0.9), "03_overlap", tmp_path)
    mats = {0: np.array([[1, 0.95], [0.95, 1]]), 1: np.eye(3)}
    _published(run_viz.similarity_heatmaps([("ptm it 4", mats), ("ptm+dom it 4", {0: mats[0]})],
                                       ["a", "b"]), "03_similarity", tmp_path)
    for f in (run_viz.loss_figure, run_viz.alpha_figure, run_viz.skips_figure, run_viz.overlap_figure):
        with pytest.raises(ValueError):
            f(logs.iloc[:0])
    with pytest.raises(ValueError):
        run_viz.similarity_heatmaps([], ["a"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"{n}.png" for n in ("02_loss", "02_alpha", "02_skips", "02_noskips", "02_band",
                             "03_overlap", "03_similarity"))


def test_image_figures_return_figures_and_write_pngs(tmp_path):
    rng = np.random.default_rng(0)
    norm = Normalization(mean=(0.5,), std=(0.25,))
    pixels = rng.integers(0, 255, size=(4, 6, 6), dtype=np.uint8)
    labels = np.array([0, 0, 1, 1])
    names = ["benign", "malignant"]
    x = rng.normal(size=(1, 6, 6)).astype(np.float32)
    reps = [{"iteration": 2, "index": 1, "label": 0, "real_index": 11, "before": x, "after": x + 1,
             "final": None}]
    _published(run_viz.replacement_figure(reps, norm, names, note="τ = 0.9"), "03_replaced", tmp_path)
    _published(run_viz.replacement_figure([], norm, names, note="τ = 0.9"), "03_none", tmp_path)
    _published(run_viz.method_grids([("init", pixels, labels), ("ptm", pixels, labels)], names),
               "04_grids", tmp_path)
    series = [("mtt", [0, 4, 8], np.stack([pixels] * 3), labels),
              ("ptm", [0, 8], np.stack([pixels] * 2), labels)]
    _published(run_viz.evolution_figure(series, names, per_class=1), "04_evolution", tmp_path)
    _published(run_viz.nearest_figure([("ptm", pixels, pixels[::-1], labels, np.arange(4.0))], names),
               "04_nearest", tmp_path)
    rgb = rng.integers(0, 255, size=(2, 6, 6, 3), dtype=np.uint8)
    _published(run_viz.method_grids([("rgb", rgb, np.array([0, 1]))], names), "04_rgb", tmp_path)
    for f, arg in ((run_viz.method_grids, []), (run_viz.evolution_figure, []), (run_viz.nearest_figure, [])):
        with pytest.raises(ValueError):
            f(arg, names)


def test_benchmark_figures(tmp_path):
    from mdd import compare
    rows = [{"flag": f, "ipc": i, "method": m, "acc_mean": a, "acc_std": 0.01, "auc_mean": a,
             "auc_std": 0.02} for f in ("breastmnist", "pneumoniamnist") for i in (1, 2)
            for m, a in (("random", 0.5), ("mtt", 0.55), ("ptm", 0.6), ("ptm+dom", 0.62))]
    rows += [{"flag": f, "ipc": None, "method": "full", "acc_mean": 0.85, "acc_std": 0.01,
              "auc_mean": 0.9, "auc_std": 0.01} for f in ("breastmnist", "pneumoniamnist")]
    results = compare.upsert_benchmark(rows, tmp_path / "benchmark.csv")
    _published(bv.benchmark_bars(results), "05_bars", tmp_path)
    _published(bv.benchmark_lines(results), "05_lines", tmp_path)
    with pytest.raises(ValueError):
        bv.benchmark_bars(results.iloc[:0])


def test_load_benchmark(tmp_path):
    from mdd import compare
    with pytest.raises(FileNotFoundError, match="run=True"):
        dg.load_benchmark(tmp_path / "missing.csv")
    compare.upsert_benchmark([{"flag": "breastmnist", "ipc": 1, "method": "random", "acc_mean": 0.5,
                               "acc_std": 0.1, "auc_mean": 0.6, "auc_std": 0.1}], tmp_path / "b.csv")
    assert dg.load_benchmark(tmp_path / "b.csv")["method"].tolist() == ["random"]


def test_save_table_float_format(tmp_path):
    df = pd.DataFrame({"a": [0.0012345, 28.4367]})
    viz.save_table(df, "t", tmp_path, floatfmt=".3g")
    assert "| 0.00123 |" in (tmp_path / "t.md").read_text()
    viz.save_table(df, "u", tmp_path)
    assert "| 0.0012 |" in (tmp_path / "u.md").read_text()   # the default is unchanged


def test_finished_runs_reads_a_grid_folder_and_names_what_is_missing(tmp_path):
    for method, acc in (("mtt", 0.6), ("ptm", 0.7)):
        run = tmp_path / dg.run_name("breastmnist", 2, method, 0)
        run.mkdir()
        (run / "result.json").write_text(json.dumps(
            {"acc_mean": acc, "acc_std": 0.0, "auc_mean": acc, "auc_std": 0.0, "val_acc": acc,
             "alpha": 0.01, "selected_iteration": 25, "seconds": 12.5,
             "counters": {"skips": 1, "replaced": 2}}))
        (run / "config.json").write_text(json.dumps({"experts": str(tmp_path / "experts")}))
    runs = dg.finished_runs(tmp_path, "breastmnist", 2, ["mtt", "ptm"], [0])
    assert runs["method"].tolist() == ["mtt", "ptm"] and runs["acc_mean"].tolist() == [0.6, 0.7]
    assert runs["skips"].tolist() == [1, 1] and runs["nonfinite"].tolist() == [0, 0]
    assert runs["seconds"].tolist() == [12.5, 12.5]
    with pytest.raises(FileNotFoundError, match="1 run\\(s\\) not finished.*ptm\\+dom-s0"):
        dg.finished_runs(tmp_path, "breastmnist", 2, ["ptm", "ptm+dom"], [0])
