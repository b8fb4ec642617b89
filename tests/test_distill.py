"""The distillation engine (mdd.distill): methods, guards, resume, DOM in the loop,
logs and loaders, CLI. Tiny synthetic data and experts; one slow real-file run."""
from __future__ import annotations

import importlib
import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import mdd.data
from mdd.artifact import load_distilled
from mdd.cli import main
from mdd.experts import ExpertRecipe, train_experts
from mdd.matching import MatchResult

dm = importlib.import_module("mdd.distill")   # the module (mdd.distill may be the function)
run_module = importlib.import_module("mdd.distill_run")   # where DistillRun evaluates
DistillConfig, distill = dm.DistillConfig, dm.distill


# ---------------------------------------------------------------- fixtures
from conftest import distill_cfg as cfg  # noqa: E402  (tiny experts and data: tests/conftest.py)


@pytest.fixture(scope="module")
def env(distill_env):
    return distill_env


def artifact_x(out: Path) -> torch.Tensor:
    return load_distilled(out).x


# ---------------------------------------------------------------- methods
@pytest.mark.parametrize("method", ["mtt", "datm", "ptm", "ptm+dom"])
def test_each_method_runs_and_writes_everything(env, tmp_path: Path, method: str) -> None:
    out = tmp_path / "run"
    # τ≈-1: DOM finds overlaps; this set has 2 images a class, all of them the init, so
    # only v1's re-seeding (used images allowed) can replace any
    res = distill(cfg(env, out, method=method, tau=-0.99, reseed="farthest"))
    assert res["kind"] == "distilled" and res["method"] == method and res["n_train"] == 4
    for k in ("acc_mean", "acc_std", "auc_mean", "auc_std", "lr", "val_acc", "alpha"):
        assert isinstance(res[k], float) and math.isfinite(res[k])
    parts = res["seconds_parts"]
    assert set(parts) == {"matching", "val", "test"} and min(parts.values()) > 0
    assert res["seconds"] == pytest.approx(sum(parts.values()), abs=0.2)
    log = dm.read_log(out)
    main = log[log["phase"] == "main"]
    # 6 matching iterations; DOM's retraining iterations come on top of them
    assert list(main["main_iteration"]) == list(range(1, 7)) and list(log.columns) == list(dm.LOG_FIELDS)
    assert list(log["iteration"]) == list(range(len(log)))
    assert (log["alpha"] > 0).all() and log["loss"].notna().all()
    n = len(log)
    assert [it for it, _ in dm.list_snapshots(out)] == list(range(0, n + 1, 2))
    snap = dm.load_snapshot(dm.list_snapshots(out)[-1][1])
    assert snap["x"].shape == (4, 1, 28, 28)
    evals = dm.read_evals(out)
    assert [e["main_iteration"] for e in evals] == [0, 3, 6]
    ds = load_distilled(out)
    assert ds.method == method and ds.manifest["results"]["test"]["acc_mean"] == res["acc_mean"]
    assert ds.manifest["experts"]["digest"] and ds.manifest["versions"]["torch"]
    assert (out / "distilled" / "grid.png").is_file()
    if method == "mtt":
        assert set(log["target"] - log["start"]) == {1} and set(log["start"]) <= {0, 1}
    if method.startswith("ptm"):
        assert set(log["start"]) == {0}
    if method == "ptm":   # stages [2, 4], 3 iterations each
        assert list(log["target"]) == [2, 2, 2, 4, 4, 4] and list(log["stage"]) == [0, 0, 0, 1, 1, 1]
    if method != "ptm+dom":
        assert n == 6
    if method == "ptm+dom":
        events = dm.read_dom_events(out)
        assert events and res["counters"]["replaced"] > 0
        assert (log["phase"] == "retrain").any()
        ev = dm.load_dom_event(out, events[0])
        assert ev["before"].shape == ev["after"].shape == (4, 1, 28, 28)
        # a retraining ramp: targets go back up from T_1 to the current stage target
        retrain = log[log["phase"] == "retrain"]
        assert retrain["target"].iloc[0] <= retrain["target"].iloc[-1]
        # no check in the last R = 2 matching iterations, and every eval precedes a re-seed
        assert all(e["main_iteration"] <= 6 - 2 for e in events)
    else:
        assert not (out / "dom_events.jsonl").read_text().strip()


def test_alpha_positive_even_with_a_huge_alpha_learning_rate(env, tmp_path: Path) -> None:
    res = distill(cfg(env, tmp_path / "r", lr_alpha=1e3, iterations=4, eval_every=0))
    log = dm.read_log(tmp_path / "r")
    assert (log["alpha"] > 0).all() and res["alpha"] > 0


@pytest.mark.parametrize("select, select_init, chosen",
                         [("acc", True, 0), ("acc", False, 3), ("auc", False, 3), ("auc", True, 3)])
def test_the_val_metric_picks_the_reported_images(env, tmp_path: Path, monkeypatch, select: str,
                                                  select_init: bool, chosen: int) -> None:
    scripted = iter([(0.6, 0.5), (0.5, 0.9), (0.4, 0.7)])     # val at iterations 0, 3, 6
    real = dm.evaluate_set

    def scored(*a, split="test", **k):
        res = real(*a, split=split, **k)
        if split == "val":
            res["acc_mean"], res["auc_mean"] = next(scripted)
        return res

    monkeypatch.setattr(run_module, "evaluate_set", scored)
    res = distill(cfg(env, tmp_path / "r", select=select, select_init=select_init))
    assert res["selected_iteration"] == chosen
    assert res["selection"]["iteration"] == chosen and res["selection"]["metric"] == select
    with pytest.raises(ValueError, match="select must be"):
        dm.resolve(cfg(env, tmp_path / "x", select="loss"))


def test_selection_never_reads_test(env, tmp_path: Path, monkeypatch) -> None:
    """Test scores are scripted to favour iteration 3 by a mile; val favours 6. The run
    selects 6, and no test network is trained before the last val evaluation."""
    calls: list[str] = []
    real = dm.evaluate_set
    val_scores = iter([0.5, 0.6, 0.9])   # val AUC at iterations 0, 3, 6

    def spy(*a, split="test", **k):
        calls.append(split)
        res = real(*a, split=split, **k)
        if split == "val":
            res["auc_mean"] = next(val_scores)
        else:
            res["auc_mean"] = 0.99 if len(calls) == 4 else 0.01
        return res

    monkeypatch.setattr(run_module, "evaluate_set", spy)
    res = distill(cfg(env, tmp_path / "r"))
    assert res["selected_iteration"] == 6 and res["selection"]["val_auc"] == 0.9
    assert calls == ["val", "val", "val", "test"]   # the last iterate is the selected one
    assert res["last"]["iteration"] == 6


def test_result_records_disjoint_seeds_and_the_last_iterate(env, tmp_path: Path, monkeypatch) -> None:
    real = dm.evaluate_set
    val_scores = iter([0.5, 0.9, 0.6])   # iteration 3 is selected, 6 is the last

    def scored(*a, split="test", **k):
        res = real(*a, split=split, **k)
        if split == "val":
            res["auc_mean"] = next(val_scores)
        return res

    monkeypatch.setattr(run_module, "evaluate_set", scored)
    res = distill(cfg(env, tmp_path / "r", val_models=3, test_models=2, seed=4))
    sel = res["selection"]
    assert sel["iteration"] == 3 and sel["models"] == 3 and sel["epochs"] == 3
    assert len(sel["seeds"]) == 3 and len(res["test_seeds"]) == 2
    assert not set(sel["seeds"]) & set(res["test_seeds"])
    assert not {4} & (set(sel["seeds"]) | set(res["test_seeds"]))
    assert res["last"]["iteration"] == 6
    for k in ("acc_mean", "bacc_mean", "auc_mean"):
        assert k in res and k in res["last"]
    manifest = json.loads((tmp_path / "r" / "distilled" / "manifest.json").read_text())
    assert manifest["results"]["selection"]["seeds"] == sel["seeds"]
    assert manifest["init_indices"] and len(manifest["init_indices"]) == 4
    json.loads((tmp_path / "r" / "result.json").read_text(),
               parse_constant=lambda c: pytest.fail(f"{c} in result.json"))


# ---------------------------------------------------------------- guards
def test_nan_is_skipped_and_the_last_good_state_kept(env, tmp_path: Path, monkeypatch) -> None:
    real = dm.DistillRun.compute
    seen = {}

    def poisoned(self, prob):
        res = real(self, prob)
        if self.iteration == 2:
            seen["before"] = self.images.clone()
            return MatchResult(torch.tensor(float("nan")), res.grad_images * float("nan"),
                               torch.tensor(float("inf")), res.start_distance, torch.tensor(float("nan")))
        if self.iteration == 3:
            seen["after"] = self.images.clone()
        return res

    monkeypatch.setattr(dm.DistillRun, "compute", poisoned)
    res = distill(cfg(env, tmp_path / "r"))
    log = dm.read_log(tmp_path / "r")
    assert res["counters"]["nonfinite"] == 1 and res["counters"]["skips"] == 1
    assert list(log["skipped"]) == [False, False, True, False, False, False]
    assert torch.equal(seen["before"], seen["after"])          # the bad update never landed
    assert torch.isfinite(artifact_x(tmp_path / "r")).all()


def test_datm_style_loss_threshold_skips(env, tmp_path: Path) -> None:
    res = distill(cfg(env, tmp_path / "r", skip_loss_above=0.0, iterations=3, eval_every=0))
    assert res["counters"]["loss_skips"] == 3
    init = dm.load_snapshot(dm.list_snapshots(tmp_path / "r")[0][1])["x"]
    assert np.array_equal(artifact_x(tmp_path / "r").numpy(), init)   # the images never moved
    alphas = dm.read_log(tmp_path / "r")["alpha"].tolist()
    assert len(set(alphas)) == 3 and alphas[0] != 0.01    # α still learns from skipped windows


def test_alpha_momentum_does_not_wind_up_against_its_bound(env, tmp_path: Path, monkeypatch) -> None:
    """α is pushed up for 3 iterations (clamped at alpha_max), then down: without the
    reset its momentum would hold it at the bound; with it, α leaves at once."""
    real = dm.DistillRun.compute
    signs = iter([-10.0, -10.0, -10.0, 2.0, 2.0])   # × 50: up by 5 in log α, down by 1

    def pushed(self, prob):
        res = real(self, prob)
        return MatchResult(res.loss, res.grad_images, torch.tensor(next(signs) * 50.0),
                           res.start_distance, res.grad_alpha)

    monkeypatch.setattr(dm.DistillRun, "compute", pushed)
    distill(cfg(env, tmp_path / "r", iterations=5, eval_every=0, alpha_init=0.01, alpha_max=0.02,
                lr_alpha=0.01, alpha_opt="sgd"))
    alphas = dm.read_log(tmp_path / "r")["alpha"].tolist()
    assert alphas[:3] == [pytest.approx(0.02)] * 3
    assert alphas[3] < 0.02      # the first downward gradient moves it off the bound


# ---------------------------------------------------------------- checkpoint / resume
def test_kill_and_resume_gives_the_same_images(env, tmp_path: Path, monkeypatch) -> None:
    c = dict(method="ptm+dom", tau=-0.99, iterations=7, checkpoint_every=2)
    whole = distill(cfg(env, tmp_path / "whole", **c))

    real = dm.DistillRun.compute

    def killed(self, prob):
        if self.iteration == 5:
            raise KeyboardInterrupt   # the process dies between checkpoints (4 and 6)
        return real(self, prob)

    monkeypatch.setattr(dm.DistillRun, "compute", killed)
    with pytest.raises(KeyboardInterrupt):
        distill(cfg(env, tmp_path / "cut", **c))
    assert not (tmp_path / "cut" / "result.json").exists()
    monkeypatch.setattr(dm.DistillRun, "compute", real)
    again = distill(cfg(env, tmp_path / "cut", **c))

    assert torch.equal(artifact_x(tmp_path / "whole"), artifact_x(tmp_path / "cut"))
    a, b = dm.read_log(tmp_path / "whole"), dm.read_log(tmp_path / "cut")
    cols = ["iteration", "phase", "loss", "alpha", "target", "replaced"]
    assert a[cols].equals(b[cols])
    assert dm.read_dom_events(tmp_path / "whole") == dm.read_dom_events(tmp_path / "cut")
    assert again["acc_mean"] == whole["acc_mean"] and again["alpha"] == whole["alpha"]


def test_finished_run_is_not_redone_and_other_configs_are_refused(env, tmp_path: Path) -> None:
    out = tmp_path / "r"
    first = distill(cfg(env, out, iterations=2, eval_every=0))
    stamp = (out / "result.json").stat().st_mtime_ns
    t = time.perf_counter()
    assert distill(cfg(env, out, iterations=2, eval_every=0)) == first
    assert time.perf_counter() - t < 1.0 and (out / "result.json").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="another configuration"):
        distill(cfg(env, out, iterations=2, eval_every=0, lr_images=5.0))


def test_stop_after_then_resume_matches(env, tmp_path: Path) -> None:
    whole = distill(cfg(env, tmp_path / "a", iterations=4, eval_every=2))
    assert distill(cfg(env, tmp_path / "b", iterations=4, eval_every=2), stop_after=2) == {"stopped_at": 2}
    again = distill(cfg(env, tmp_path / "b", iterations=4, eval_every=2))
    assert torch.equal(artifact_x(tmp_path / "a"), artifact_x(tmp_path / "b"))
    assert again["acc_mean"] == whole["acc_mean"]


# ---------------------------------------------------------------- DOM in the loop
def test_dom_replaces_a_planted_duplicate_and_leaves_the_rest(env, tmp_path: Path, monkeypatch) -> None:
    real_init = dm.DistillRun.init_state

    def planted(self):
        real_init(self)
        self.images[1] = self.images[0]          # class 0: images 0 and 1 identical

    monkeypatch.setattr(dm.DistillRun, "init_state", planted)
    # the first check follows main iteration 1 (none in the last R = 2 of the 4)
    distill(cfg(env, tmp_path / "r", method="ptm+dom", tau=0.995, dom_every=1, iterations=4,
                lr_images=1e-3, eval_every=0))
    events = dm.read_dom_events(tmp_path / "r")
    assert events[0]["main_iteration"] == 1 and events[0]["replace"] in ([0], [1])
    assert max(e["main_iteration"] for e in events) <= 2
    i = events[0]["replace"][0]
    ev = dm.load_dom_event(tmp_path / "r", events[0])
    changed = [k for k in range(4) if not np.array_equal(ev["before"][k], ev["after"][k])]
    assert changed == [i]                         # only the duplicate was re-seeded
    assert ev["labels"][i] == 0 and int(ev["real_indices"][0]) in range(40)
    data = mdd.data.load("breastmnist", root=env["root"])
    assert np.array_equal(ev["after"][i], data.train.x[int(ev["real_indices"][0])].numpy())
    assert data.train.y[int(ev["real_indices"][0])] == 0


# ---------------------------------------------------------------- configuration and errors
def test_presets_resolve_with_explicit_fields_winning() -> None:
    c = dm.resolve(DistillConfig(preset="cpu", iterations=7))
    assert c.iterations == 7 and c.steps == dm.PRESETS["cpu"]["steps"]
    assert c.experts.endswith("breastmnist-cpu") and c.out.endswith("breastmnist-ipc1-ptm+dom")
    c = dm.resolve(DistillConfig(preset="smoke", steps=20), explicit={"steps"})
    assert c.steps == 20                          # set to the default, but explicitly
    with pytest.raises(ValueError, match="unknown preset"):
        dm.resolve(DistillConfig(preset="huge"))
    with pytest.raises(ValueError, match="unknown method"):
        dm.resolve(DistillConfig(method="dc"))


@pytest.mark.parametrize("allow", [False, True])
def test_run_sets_tf32_and_threads_for_its_duration(tmp_path: Path, monkeypatch, allow: bool) -> None:
    seen = {}

    class Spy:   # stands in for DistillRun: records the settings it runs under
        def __init__(self, c):
            pass

        def run(self, stop_after=None):
            seen.update(tf32=(torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32),
                        threads=torch.get_num_threads())
            return {}

    before = torch.backends.cudnn.allow_tf32, torch.get_num_threads()
    monkeypatch.setattr(dm, "DistillRun", Spy)
    distill(DistillConfig(preset="smoke", out=str(tmp_path / "r"), tf32=allow, threads=1))
    assert seen == {"tf32": (allow, allow), "threads": 1}
    assert (torch.backends.cudnn.allow_tf32, torch.get_num_threads()) == before
    assert "tf32" not in dm.identity(DistillConfig(tf32=allow))   # same numbers on CPU: resumable


def test_clear_errors(env, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="mdd experts --flag breastmnist"):
        distill(cfg(env, tmp_path / "a", experts=str(tmp_path / "none")))
    with pytest.raises(ValueError, match="exceeds class"):
        distill(cfg(env, tmp_path / "b", ipc=21))
    with pytest.raises(ValueError, match="trained on breastmnist, not pneumoniamnist"):
        distill(cfg(env, tmp_path / "c", flag="pneumoniamnist"))
    assert main(["distill", "--flag", "breastmnist", "--ipc", "1", "--experts", str(tmp_path / "none"),
                 "--out", str(tmp_path / "d")]) == 2


def test_cli_distill_then_evaluate(env, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli"
    args = ["distill", "--flag", "breastmnist", "--ipc", "1", "--method", "ptm+dom", "--preset", "smoke",
            "--experts", str(env["experts"]), "--out", str(out), "--root", str(env["root"]),
            "--iterations", "3", "--steps", "2", "--threads", "1", "--quiet"]
    assert main(args) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["iterations"] == 3 and (out / "distilled" / "manifest.json").is_file()
    assert dm.resolve(DistillConfig(**json.loads((out / "config.json").read_text()))).steps == 2
    assert main(["evaluate", "--distilled", str(out), "--models", "1", "--epochs", "2",
                 "--root", str(env["root"])]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["kind"] == "distilled" and ev["n_train"] == 2 and ev["lr"] == res["alpha"]


# ---------------------------------------------------------------- the real file
@pytest.mark.slow
def test_real_breastmnist_ptm_dom_end_to_end(real_root: Path, tmp_path: Path, monkeypatch) -> None:
    from medmnist.info import INFO
    monkeypatch.setattr(mdd.data, "INFO", INFO)   # the real INFO, whatever a module fixture patched
    experts = tmp_path / "experts"
    train_experts("breastmnist", experts, 2, ExpertRecipe(epochs=3, width=32), root=real_root,
                  workers=0, threads=1, progress=False)
    res = distill(DistillConfig(flag="breastmnist", ipc=2, method="ptm+dom", preset="smoke",
                                experts=str(experts), out=str(tmp_path / "run"), root=str(real_root),
                                iterations=12, steps=5, progress=False, threads=1))
    assert res["n_train"] == 4 and 0.0 <= res["acc_mean"] <= 1.0 and res["alpha"] > 0
    ds = load_distilled(tmp_path / "run")
    assert ds.x.shape == (4, 1, 28, 28) and ds.class_names == ["malignant", "normal, benign"]


def test_step_batches_cover_the_set_like_mtt_chunks() -> None:
    g = torch.Generator().manual_seed(0)
    assert all(torch.equal(b, torch.arange(5)) for b in dm.step_batches(5, 3, None, g))
    bs = dm.step_batches(6, 5, 4, torch.Generator().manual_seed(0))
    assert [len(b) for b in bs] == [4] * 5
    assert sorted(torch.cat(bs[:3])[:6].tolist()) == list(range(6))   # a permutation first
    for m, batch in ((6, 4), (5, 3), (7, 6), (3, 2)):   # leftovers topped up without repeats
        for b in dm.step_batches(m, 25, batch, torch.Generator().manual_seed(m)):
            assert len(set(b.tolist())) == batch


def test_noise_init_and_minibatches(env, tmp_path: Path) -> None:
    res = distill(cfg(env, tmp_path / "r", init="noise", batch_syn=2, iterations=2, eval_every=0))
    init = dm.load_snapshot(dm.list_snapshots(tmp_path / "r")[0][1])["x"]
    data = mdd.data.load("breastmnist", root=env["root"])
    assert not any(np.array_equal(init[i], data.train.x[j].numpy()) for i in range(4) for j in range(40))
    assert res["n_train"] == 4


def test_package_exports_keep_mdd_distill_the_module() -> None:
    import mdd
    assert mdd.distill is dm and mdd.DistillConfig is DistillConfig
    assert mdd.load_distilled is load_distilled and mdd.evaluate_distilled is dm.evaluate_distilled


# ---------------------------------------------------------------- two problems per iteration
def test_two_problems_per_iteration_average_two_single_problems(env, tmp_path: Path) -> None:
    run = dm.DistillRun(dm.resolve(cfg(env, tmp_path / "r", method="mtt", mode="unrolled",
                                       experts_per_iteration=2)))
    run.init_state()
    w, _ = run.window(3)
    w1, _ = run.window(3, 1)
    both = run.compute_all(3, w)   # problem 1 on a thread of its own
    one, other = run.compute(run.problem(3, w)), run.compute(run.problem(3, w1, 1))
    assert one.loss != other.loss   # a second window (and augmentation seeds) of its own
    assert torch.allclose(both.loss, (one.loss + other.loss) / 2)
    assert torch.allclose(both.grad_images, (one.grad_images + other.grad_images) / 2, atol=1e-12)
    assert torch.allclose(both.grad_log_alpha, (one.grad_log_alpha + other.grad_log_alpha) / 2)


def test_two_problems_per_iteration_reproduce_and_resume(env, tmp_path: Path) -> None:
    kw = dict(method="ptm", experts_per_iteration=2, iterations=4, eval_every=2)
    a = distill(cfg(env, tmp_path / "a", **kw))
    assert distill(cfg(env, tmp_path / "b", **kw), stop_after=2) == {"stopped_at": 2}
    b = distill(cfg(env, tmp_path / "b", **kw))
    one = distill(cfg(env, tmp_path / "one", **{**kw, "experts_per_iteration": 1}))
    assert torch.equal(artifact_x(tmp_path / "a"), artifact_x(tmp_path / "b"))
    assert a["aucs"] == b["aucs"]
    assert not torch.equal(artifact_x(tmp_path / "a"), artifact_x(tmp_path / "one"))
    assert one["n_train"] == a["n_train"] == 4
