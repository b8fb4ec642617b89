"""mdd.engine_viz on tiny hand-made run folders (seconds)."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

from mdd import engine_viz as ev

Y = np.array([0, 0, 1, 1])


def _write_log(folder, dx, phases, alpha=None):
    rows = []
    main = 0
    for i, (d, p) in enumerate(zip(dx, phases)):
        main += p == "main"
        rows.append({"iteration": i, "phase": p, "loss": 1.0 / (i + 1),
                     "alpha": (alpha or [0.01] * len(dx))[i], "dx_rms": d, "lr_images": 0.01,
                     "main_iteration": main, "overlap_ratio": 0.0, "mean_similarity": 0.1,
                     "replaced": int(i == 2 and "retrain" in phases), "target": 2, "stage": 0})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _fake_data(s=6, n=40, seed=1):
    """Real 'train' images of two classes (N×1×s×s) as a MedMNIST stand-in."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.normal(size=(n, 1, s, s)) + y[:, None, None, None] * 0.5
    return SimpleNamespace(train=SimpleNamespace(x=torch.tensor(x, dtype=torch.float32),
                                                 y=torch.tensor(y)), num_classes=2)


def _centred_cos(a, b, center):
    a, b = (np.ravel(a) - center).astype(float), (np.ravel(b) - center).astype(float)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def _dom_run(folder, data, s=6, tau=None):
    """Snapshots at 0, 4 and 8; image 1 (class 0) is a copy of image 0 before the check
    after iteration 2, re-seeded from train image 4 there and from train image 6 at the
    check after iteration 5; a check after iteration 7 replaces nothing."""
    rng = np.random.default_rng(0)
    (folder / "snapshots").mkdir(parents=True)
    (folder / "dom").mkdir()
    x0 = rng.normal(size=(4, 1, s, s)).astype(np.float32)
    x0[1] = x0[0]
    real = data.train.x.numpy()
    after1 = x0.copy()
    after1[1] = real[4]
    x4 = after1 + 0.1 * rng.normal(size=after1.shape).astype(np.float32)
    before2 = x4.copy()
    before2[1] = before2[0]
    after2 = before2.copy()
    after2[1] = real[6]
    x8 = after2 + 0.1 * rng.normal(size=after2.shape).astype(np.float32)
    for it, x in ((0, x0), (4, x4), (8, x8)):
        np.savez(folder / "snapshots" / f"iter_{it:06d}.npz", x=x, y=Y, alpha=np.array(0.01),
                 iteration=np.array(it))
    tau = tau or {"space": "preact", "centred": True, "percentile": 99.0, "tau_mean": 0.55,
                  "per_class": {"0": {"n": 20, "tau": 0.6, "mean": 0.0},
                                "1": {"n": 20, "tau": 0.5, "mean": 0.0}}}
    events = []
    for it, before, after, real_idx in ((2, x0, after1, {1: 4}), (5, before2, after2, {1: 6}),
                                        (7, x8, x8, {})):
        f = f"dom/event_{it:06d}.npz"
        np.savez(folder / f, before=before, after=after, labels=Y,
                 replaced=np.array(sorted(real_idx), dtype=np.int64),
                 real_indices=np.array([real_idx[k] for k in sorted(real_idx)], dtype=np.int64))
        events.append({"iteration": it, "main_iteration": it + 1, "reason": "periodic",
                       "stage": 0, "target": 2, "position": 3, "tau": tau,
                       "overlap_ratio": 0.5 if real_idx else 0.0, "mean_similarity": 0.3,
                       "replace": sorted(real_idx), "per_class": {}, "pairs": [],
                       "real_indices": {str(k): v for k, v in real_idx.items()}, "file": f})
    (folder / "dom_events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    (folder / "config.json").write_text(json.dumps({"flag": "breastmnist", "ipc": 2, "seed": 0,
                                                    "tau_rule": "percentile",
                                                    "tau_percentile": 99.0}))
    return {"x0": x0, "after1": after1, "x4": x4, "after2": after2, "x8": x8}


# ---------------------------------------------------------------- dynamics
def test_load_engine_logs_cumulative_movement_over_main_iterations(tmp_path):
    _write_log(tmp_path / "a", [0.1, 0.2, 0.3, 0.05, 0.05, 0.4],
               ["main", "main", "main", "retrain", "retrain", "main"],
               alpha=[0.01, 0.02, 0.03, 0.03, 0.03, 0.04])
    _write_log(tmp_path / "b", [0.5, 0.0, 0.0, 0.0], ["main"] * 4)
    logs = ev.load_engine_logs({"v2": tmp_path / "a", "v1": tmp_path / "b"})
    assert logs["label"].tolist() == ["v2"] * 6 + ["v1"] * 4
    a = logs[logs["label"] == "v2"]
    assert a["cum_dx"].tolist() == pytest.approx([0.1, 0.3, 0.6, 0.6, 0.6, 1.0])
    assert a["main_iteration"].tolist() == [1, 2, 3, 3, 3, 4]
    assert logs["dx_rms"].dtype == float and logs["alpha"].dtype == float

    s = ev.movement_summary(logs).set_index("label")
    assert s.loc["v2", "main_iterations"] == 4 and s.loc["v2", "retrain_iterations"] == 2
    assert s.loc["v2", "movement"] == pytest.approx(1.0)
    assert s.loc["v2", "second_half_share"] == pytest.approx(0.7)      # 0.3 + 0.4 of 1.0
    assert s.loc["v1", "second_half_share"] == pytest.approx(0.0)      # froze
    assert s.loc["v2", "alpha_last"] == pytest.approx(0.04)

    empty = ev.load_engine_logs({"none": tmp_path / "missing"})
    assert empty.empty and {"label", "cum_dx", "dx_rms"} <= set(empty.columns)


def test_logs_without_dx_or_phase_still_load(tmp_path):
    (tmp_path / "old").mkdir()
    rows = [{"iteration": i, "loss": 1.0, "alpha": 0.01} for i in range(3)]
    (tmp_path / "old" / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    logs = ev.load_engine_logs({"old": tmp_path / "old"})
    assert logs["phase"].tolist() == ["main"] * 3 and logs["main_iteration"].tolist() == [1, 2, 3]
    assert logs["cum_dx"].isna().all()
    assert isinstance(ev.dynamics_figure(logs), Figure)


def test_dynamics_figure_writes_a_png(tmp_path):
    from mdd import viz
    _write_log(tmp_path / "a", [0.1, 0.2, 0.3, 0.05, 0.05, 0.4],
               ["main", "main", "main", "retrain", "retrain", "main"])
    _write_log(tmp_path / "b", [0.5, 0.0, 0.0, 0.0], ["main"] * 4)
    logs = ev.load_engine_logs({"v2": tmp_path / "a", "v1": tmp_path / "b"})
    fig = ev.dynamics_figure(logs, title="t")
    assert isinstance(fig, Figure) and len(fig.axes) == 3
    assert fig.axes[0].get_yscale() == "log" and fig.axes[2].get_yscale() == "log"
    viz.publish(fig, "02_dynamics_test", tmp_path / "figs")
    assert (tmp_path / "figs" / "02_dynamics_test.png").stat().st_size > 0
    assert isinstance(ev.dynamics_figure(logs.iloc[:0]), Figure)   # nothing: a note


def test_ablation_runs_lists_only_existing_logged_runs(tmp_path):
    phase = tmp_path / "engine_v2_breast2"
    _write_log(phase / "breastmnist-ipc2-v2-s0", [0.1], ["main"])
    _write_log(phase / "breastmnist-ipc2-v1-s0", [0.1], ["main"])
    (phase / "breastmnist-ipc2-v1-optimiser-s0").mkdir()         # started, nothing logged
    runs = ev.ablation_runs("breastmnist", 2, root=tmp_path)
    assert list(runs) == ["v2", "v1"]
    assert ev.ablation_runs("breastmnist", 5, root=tmp_path) == {}
    assert ev.ablation_runs("pneumoniamnist", 2, root=tmp_path) == {}


# ---------------------------------------------------------------- τ
def test_run_tau_and_text(tmp_path):
    data = _fake_data()
    _dom_run(tmp_path / "r", data)
    tau = ev.run_tau(tmp_path / "r")
    assert tau == {0: 0.6, 1: 0.5}
    assert ev.tau_mean(tau) == pytest.approx(0.55) and ev.tau_mean(0.9) == 0.9
    assert ev.tau_text(tau, ["benign", "malignant"]) == \
        "τ per class: benign 0.600; malignant 0.500 (mean 0.550)"
    assert ev.tau_text(0.9) == "τ = 0.9" and "not computed" in ev.tau_text(None)
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "config.json").write_text(json.dumps({"tau_rule": "fixed", "tau": 0.85}))
    assert ev.run_tau(tmp_path / "f") == 0.85
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "config.json").write_text(json.dumps({"tau_rule": "percentile"}))
    assert ev.run_tau(tmp_path / "p") is None


def test_overlap_tau_figure_draws_a_line_per_class(tmp_path):
    _write_log(tmp_path / "a", [0.1, 0.2], ["main", "main"])
    logs = ev.load_engine_logs({"x": tmp_path / "a"}).assign(method="ptm+dom", seed=0)
    fig = ev.overlap_tau_figure(logs, None, {0: 0.6, 1: 0.5}, class_names=["a", "b"])
    labels = fig.axes[1].get_legend_handles_labels()[1]
    assert "τ a = 0.600" in labels and "τ b = 0.500" in labels
    fig = ev.overlap_tau_figure(logs, None, 0.9)
    assert "τ = 0.9" in fig.axes[1].get_legend_handles_labels()[1]


# ---------------------------------------------------------------- distinctness
def test_dom_distinctness_in_pixel_space_by_hand(tmp_path):
    data = _fake_data()
    imgs = _dom_run(tmp_path / "r", data)
    df = ev.dom_distinctness(tmp_path / "r", space="pixel", data=data)
    assert list(df.columns) == list(ev.DISTINCT_COLUMNS)
    # first re-seed: before/after at 3, snapshot 4 (not 8: re-seeded again at 5)
    first = df[df["event_iteration"] == 2]
    assert first[["when", "iteration", "since"]].values.tolist() == \
        [["before", 3, 0], ["re-seed", 3, 0], ["snapshot", 4, 1]]
    second = df[df["event_iteration"] == 5]
    assert second[["when", "iteration"]].values.tolist() == \
        [["before", 6], ["re-seed", 6], ["snapshot", 8]]
    assert set(df["index"]) == {1} and set(df["label"]) == {0} and set(df["nearest"]) == {0}
    assert df["real_index"].tolist() == [4, 4, 4, 6, 6, 6]

    x, y = data.train.x.numpy(), data.train.y.numpy()
    center = x[y == 0].reshape((y == 0).sum(), -1).mean(0)
    assert first["max_cosine"].iloc[0] == pytest.approx(1.0)      # a copy of image 0
    assert first["max_cosine"].iloc[1] == pytest.approx(
        _centred_cos(imgs["after1"][1], imgs["after1"][0], center), abs=1e-6)
    assert first["max_cosine"].iloc[2] == pytest.approx(
        _centred_cos(imgs["x4"][1], imgs["x4"][0], center), abs=1e-6)
    assert second["max_cosine"].iloc[2] == pytest.approx(
        _centred_cos(imgs["x8"][1], imgs["x8"][0], center), abs=1e-6)

    # τ: the run's percentile (99) of real–real centred cosines of the class, in pixels
    f = x[y == 0].reshape((y == 0).sum(), -1) - center
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    vals = (f @ f.T)[np.triu_indices(len(f), 1)]
    assert df["tau"].iloc[0] == pytest.approx(np.percentile(vals, 99), abs=1e-6)
    assert df["above"].tolist() == (df["max_cosine"] > df["tau"]).tolist()
    assert df["above"].iloc[0]                                    # the copy was above τ

    s = ev.distinctness_summary(df)
    assert s[["event_iteration", "index", "last_iteration"]].values.tolist() == [[2, 1, 4], [5, 1, 8]]
    assert s["before"].tolist() == pytest.approx([1.0, 1.0])
    assert s["above_tau_later"].tolist() == [bool(first["above"].iloc[2]), bool(second["above"].iloc[2])]


def test_distinctness_figure_and_empty_runs(tmp_path):
    from mdd import viz
    data = _fake_data()
    _dom_run(tmp_path / "r", data)
    df = ev.dom_distinctness(tmp_path / "r", space="pixel", data=data)
    fig = ev.distinctness_figure(df, title="t", class_names=["a", "b"])
    assert isinstance(fig, Figure)
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert "a (re-seeded)" in labels and any(lab.startswith("τ a = ") for lab in labels)
    viz.publish(fig, "03_distinct_test", tmp_path / "figs")
    assert (tmp_path / "figs" / "03_distinct_test.png").stat().st_size > 0
    fig = ev.distinctness_figure(df, tau={0: 0.6, 1: 0.5})
    assert "τ class 0 = 0.600" in fig.axes[0].get_legend_handles_labels()[1]

    (tmp_path / "none").mkdir()                                   # a run without DOM
    empty = ev.dom_distinctness(tmp_path / "none", space="pixel", data=data)
    assert empty.empty and list(empty.columns) == list(ev.DISTINCT_COLUMNS)
    assert isinstance(ev.distinctness_figure(empty, note="n"), Figure)
    assert ev.distinctness_summary(empty).empty
    with pytest.raises(ValueError, match="space"):
        ev.dom_distinctness(tmp_path / "r", space="nope", data=data)


def test_dom_distinctness_in_the_runs_dom_space(tmp_path, distill_env):
    """space="dom": the run's DomSpace from its config (experts and data of the tiny
    distill environment); τ is the run's own data-relative τ_c."""
    from mdd import data as mdata
    from mdd.distill_config import DistillConfig
    from mdd.dom import DomSpace
    from mdd.experts import ExpertSet
    from mdd.matching import Student
    from mdd.run_setup import TrajectoryCache
    data = mdata.load("breastmnist", root=distill_env["root"])
    _dom_run(tmp_path / "r", data, s=28)
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    cfg.update(experts=str(distill_env["experts"]), root=str(distill_env["root"]))
    (tmp_path / "r" / "config.json").write_text(json.dumps(cfg))
    df = ev.dom_distinctness(tmp_path / "r", space="dom", data=data)
    assert len(df) == 6 and df["space"].iloc[0].startswith("DOM features (preact")
    assert df["position"].unique().tolist() == [3]                # the events' position
    assert df["max_cosine"].iloc[0] == pytest.approx(1.0, abs=1e-5)   # the copy
    experts = ExpertSet(distill_env["experts"])
    dom = DomSpace(DistillConfig(**{k: v for k, v in cfg.items() if k in DistillConfig.__dataclass_fields__}),
                   Student(experts.net(), experts.layout), TrajectoryCache(experts, torch.device("cpu")),
                   experts, data)
    assert df["tau"].iloc[0] == pytest.approx(dom.reference(3)[1][0])
    assert pd.api.types.is_float_dtype(df["max_cosine"])


def test_distinctness_figure_one_panel_per_run(tmp_path):
    data = _fake_data()
    _dom_run(tmp_path / "r", data)
    df = ev.dom_distinctness(tmp_path / "r", space="pixel", data=data)
    both = pd.concat([df.assign(method="v2"), df.assign(method="dom-v1")], ignore_index=True)
    fig = ev.distinctness_figure(both)
    assert len(fig.axes) == 2
    assert [a.get_title(loc="left").split(":")[0] for a in fig.axes] == ["v2", "dom-v1"]
    assert len(ev.distinctness_figure(df.assign(method="v2")).axes) == 1


def test_dom_events_table_with_a_tau_per_class(tmp_path):
    """DOM v2 events carry a τ summary: the table's tau is the mean, the classes' τ listed."""
    from mdd import dom_diagnostics as dd
    _dom_run(tmp_path / "r", _fake_data())
    t = dd.dom_events_table(tmp_path / "r")
    assert t["tau"].tolist() == pytest.approx([0.55] * 3)
    assert t["tau_per_class"].tolist() == ["0: 0.6, 1: 0.5"] * 3
    assert t["replaced_from"].tolist() == ["1←4", "1←6", ""]
    both = dd.load_dom_events([{"method": "ptm+dom", "seed": 0, "run": str(tmp_path / "r")}])
    assert both["tau"].dtype == float


def test_distinctness_figure_draws_one_line_for_a_shared_tau(tmp_path):
    data = _fake_data()
    _dom_run(tmp_path / "r", data)
    df = ev.dom_distinctness(tmp_path / "r", space="pixel", data=data)
    df = pd.concat([df, df.assign(label=1, index=3)], ignore_index=True).assign(tau=0.5)
    labels = ev.distinctness_figure(df).axes[0].get_legend_handles_labels()[1]
    assert "τ = 0.5" in labels and not any(lab.startswith("τ class") for lab in labels)
