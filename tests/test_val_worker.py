"""Val evaluations in a background process (mdd.val_worker): the same run, the same numbers."""
from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from conftest import distill_cfg as cfg  # tiny experts and data: tests/conftest.py
from mdd.artifact import load_distilled
from mdd.distill_config import CHECKPOINT
from mdd.runtime import torch_threads
from mdd.val_worker import ValWorker

dm = importlib.import_module("mdd.distill")


@pytest.fixture(scope="module")
def env(distill_env):
    return distill_env


def _evals(out: Path) -> list[dict]:
    return [{k: e[k] for k in ("iteration", "main_iteration", "alpha", "candidate", "aucs", "accs")}
            for e in dm.read_evals(out)]


def test_background_evaluations_give_the_inline_run(env, tmp_path: Path, monkeypatch) -> None:
    # PTM+DOM: a DOM check changes the images right after an evaluation is queued, so
    # the worker must score the images as they were when it was asked
    kw = dict(method="ptm+dom", tau=-0.99, reseed="farthest", eval_every=2)
    inline = dm.distill(cfg(env, tmp_path / "inline", **kw))
    queued = []
    submit = ValWorker.submit
    monkeypatch.setattr(ValWorker, "submit", lambda self, job, *a: (queued.append(job.it),
                                                                     submit(self, job, *a)))
    background = dm.distill(cfg(env, tmp_path / "bg", val_background=True, **kw))
    assert _evals(tmp_path / "bg") == _evals(tmp_path / "inline")
    # main iterations 0, 2, 4, 6 (DOM's retraining iterations come between them)
    assert [e["main_iteration"] for e in _evals(tmp_path / "bg")] == [0, 2, 4, 6]
    assert queued == [e["iteration"] for e in _evals(tmp_path / "bg")]
    assert background["selected_iteration"] == inline["selected_iteration"]
    assert background["aucs"] == inline["aucs"] and background["val_auc"] == inline["val_auc"]
    assert background["last"] == inline["last"]
    assert torch.equal(load_distilled(tmp_path / "bg").x, load_distilled(tmp_path / "inline").x)
    assert np.array_equal(dm.read_log(tmp_path / "bg")["loss"], dm.read_log(tmp_path / "inline")["loss"])


def _queued_in_checkpoint(out: Path) -> list[list[int]]:
    with safe_open(str(out / CHECKPOINT), framework="pt") as f:
        return json.loads(f.metadata()["state"])["queued_val"]


@pytest.mark.parametrize("resume_background", [True, False])
def test_background_run_resumes_like_the_inline_one(env, tmp_path: Path, monkeypatch,
                                                    resume_background: bool) -> None:
    full = dm.distill(cfg(env, tmp_path / "full", method="mtt"))
    # a slow worker: nothing is filed before the run asks to wait, so the stop's
    # checkpoint holds both queued evaluations (iterations 0 and 3) instead of waiting
    done = ValWorker.done
    monkeypatch.setattr(ValWorker, "done", lambda self, wait=False: done(self, True) if wait else [])
    cut = cfg(env, tmp_path / "cut", method="mtt", val_background=True)
    assert dm.distill(cut, stop_after=4) == {"stopped_at": 4}
    assert dm.read_evals(tmp_path / "cut") == []
    assert _queued_in_checkpoint(tmp_path / "cut") == [[0, 0], [3, 3]]
    monkeypatch.setattr(ValWorker, "done", done)
    # asked again on resume, in the background or inline (val_background is not identity)
    resumed = dm.distill(cfg(env, tmp_path / "cut", method="mtt", val_background=resume_background))
    assert _evals(tmp_path / "cut") == _evals(tmp_path / "full")
    assert resumed["selected_iteration"] == full["selected_iteration"]
    assert resumed["aucs"] == full["aucs"]


def test_evaluations_filed_after_the_checkpoint_are_not_doubled(env, tmp_path: Path,
                                                                monkeypatch) -> None:
    # a kill can come after a queued evaluation was filed but before the next checkpoint:
    # the resume asks it again, and its first row must go
    dm.distill(cfg(env, tmp_path / "full", method="mtt"))
    out = tmp_path / "cut"
    done = ValWorker.done
    monkeypatch.setattr(ValWorker, "done", lambda self, wait=False: done(self, True) if wait else [])
    dm.distill(cfg(env, out, method="mtt", val_background=True), stop_after=4)
    monkeypatch.setattr(ValWorker, "done", done)
    assert _queued_in_checkpoint(out) == [[0, 0], [3, 3]]
    with open(out / "evals.jsonl", "a") as f:   # as if filed just before a kill
        f.writelines(json.dumps(r) + "\n" for r in dm.read_evals(tmp_path / "full")[:2])
    assert len(dm.read_evals(out)) == 2
    dm.distill(cfg(env, out, method="mtt", val_background=True))
    assert _evals(out) == _evals(tmp_path / "full")


def test_the_worker_scores_a_test_set_as_the_run_would(env) -> None:
    # the run's end scores its last iterate in the worker while it scores the selected set
    from mdd import data as mdata
    from mdd.evaluate import EvalConfig, evaluate_set
    data = mdata.load("breastmnist", root=env["root"])
    x, y = data.split("train").x[:4].float(), data.split("train").y[:4]
    ec = EvalConfig(models=2, epochs=3, seed=1, device="cpu", threads=1)
    worker = ValWorker(data)
    try:
        with torch_threads(1):
            there = worker.score(x, y, ec, 0.01, "test").result()
            here = evaluate_set(x, y, data, ec, lr=0.01, split="test", progress=False)
    finally:
        worker.close()
    assert there["aucs"] == here["aucs"] and there["accs"] == here["accs"]
    assert there["test_seeds"] == here["test_seeds"]
