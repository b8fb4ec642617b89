"""Val evaluations in a background process (mdd.val_worker): the same run, the same numbers."""
from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import distill_cfg as cfg  # tiny experts and data: tests/conftest.py
from mdd.artifact import load_distilled
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
    assert torch.equal(load_distilled(tmp_path / "bg").x, load_distilled(tmp_path / "inline").x)
    assert np.array_equal(dm.read_log(tmp_path / "bg")["loss"], dm.read_log(tmp_path / "inline")["loss"])


def test_background_run_resumes_like_the_inline_one(env, tmp_path: Path) -> None:
    full = dm.distill(cfg(env, tmp_path / "full", method="mtt"))
    cut = cfg(env, tmp_path / "cut", method="mtt", val_background=True)
    assert dm.distill(cut, stop_after=4) == {"stopped_at": 4}
    # the stop's checkpoint waited for the evaluation queued at iteration 3
    assert [e["iteration"] for e in dm.read_evals(tmp_path / "cut")] == [0, 3]
    resumed = dm.distill(cfg(env, tmp_path / "cut", method="mtt", val_background=True))
    assert _evals(tmp_path / "cut") == _evals(tmp_path / "full")
    assert resumed["selected_iteration"] == full["selected_iteration"]
