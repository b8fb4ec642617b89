"""Engine v2's outer optimisation in a real (tiny) run: α calibrated before images move,
α rescaled at PTM stage changes, Adam state through a checkpoint, soft labels, the
real-correct initialisation."""
from __future__ import annotations

import importlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import distill_cfg as cfg

dm = importlib.import_module("mdd.distill")


def test_search_calibrates_alpha_and_walks_past_the_grid_edge(distill_env, tmp_path: Path) -> None:
    out = tmp_path / "r"
    dm.distill(cfg(distill_env, out, alpha_init_rule="search", alpha_search=1, iterations=2,
                   eval_every=0, alpha_stage_rescale=False))
    cal = json.loads((out / "alpha_calibration.json").read_text())
    grid, losses = cal["grid"], cal["losses"]
    assert len(grid) >= 5 and grid == sorted(grid)
    k = losses.index(min(losses))
    assert cal["alpha"] == grid[k]
    # an interior minimum, or the walk stopped at α's bounds / after 6 steps
    assert 0 < k < len(grid) - 1 or len(grid) == 11 or grid[0] / 2 < 1e-6 or grid[-1] * 2 > 1.0
    first = dm.read_log(out)["alpha"].iloc[0]
    assert first == pytest.approx(cal["alpha"], rel=0.1)   # the run starts from it


def test_expert_rule_is_lr_times_segment_steps_over_n(distill_env, tmp_path: Path) -> None:
    out = tmp_path / "r"
    dm.distill(cfg(distill_env, out, alpha_init_rule="expert", iterations=1, eval_every=0,
                   alpha_opt="sgd", lr_alpha=1e-12))
    cal = json.loads((out / "alpha_calibration.json").read_text())
    assert cal["alpha"] == pytest.approx(cal["expert_lr"] * cal["segment_steps"] / cal["student_steps"])


def test_alpha_is_rescaled_at_a_stage_change(distill_env, tmp_path: Path) -> None:
    # stages [2, 4] from 0 with N fixed: α doubles when the target doubles
    out = tmp_path / "r"
    dm.distill(cfg(distill_env, out, stages=[2, 4], stage_iterations=2, iterations=4, eval_every=0,
                   alpha_opt="sgd", lr_alpha=1e-12, alpha_stage_rescale=True))
    a = dm.read_log(out)["alpha"].tolist()
    assert a[1] == pytest.approx(2 * a[0], rel=1e-6) and a[3] == pytest.approx(a[1], rel=1e-6)


def test_adam_state_survives_a_resume(distill_env, tmp_path: Path) -> None:
    c = dict(iterations=5, checkpoint_every=1, image_opt="adam", alpha_opt="adam")
    whole = tmp_path / "whole"
    dm.distill(cfg(distill_env, whole, **c))
    part = tmp_path / "part"
    assert dm.distill(cfg(distill_env, part, **c), stop_after=2) == {"stopped_at": 2}
    dm.distill(cfg(distill_env, part, **c))
    a, b = dm.read_log(whole), dm.read_log(part)
    assert a["alpha"].tolist() == b["alpha"].tolist() and a["dx_rms"].tolist() == b["dx_rms"].tolist()


def test_images_keep_moving_with_adam_and_warmup(distill_env, tmp_path: Path) -> None:
    out = tmp_path / "r"
    dm.distill(cfg(distill_env, out, iterations=6, eval_every=0, image_opt="adam",
                   lr_images=0.01, lr_images_warmup=3))
    log = dm.read_log(out)
    assert log["lr_images"].tolist()[:3] == pytest.approx([0.01 / 3, 0.02 / 3, 0.01])
    assert (log["dx_rms"] > 0).all() and log["dx_rms"].iloc[-1] > 0.3 * log["dx_rms"].max()


def test_soft_labels_learn_and_train_the_evaluation(distill_env, tmp_path: Path) -> None:
    out = tmp_path / "r"
    res = dm.distill(cfg(distill_env, out, soft_labels=True, lr_labels=0.1, iterations=3,
                         mode="unrolled"))
    from mdd.artifact import load_distilled
    ds = load_distilled(out)
    soft = np.array(ds.manifest["soft_labels"])
    assert soft.shape == (4, 2) and np.allclose(soft.sum(1), 1.0)
    assert math.isfinite(res["acc_mean"])


def test_real_correct_init_draws_images_the_expert_gets_right(distill_env, tmp_path: Path) -> None:
    from mdd.experts import ExpertSet
    from mdd.matching import Student
    out = tmp_path / "r"
    dm.distill(cfg(distill_env, out, init="real-correct", iterations=1, eval_every=0))
    es = ExpertSet(distill_env["experts"])
    student = Student(es.net(), es.layout)
    theta = es.snapshots(0, [es.positions])[0]
    x0 = torch.from_numpy(dm.load_snapshot(dm.list_snapshots(out)[0][1])["x"])
    y0 = torch.from_numpy(dm.load_snapshot(dm.list_snapshots(out)[0][1])["y"])
    with torch.no_grad():
        pred = student.forward(theta, x0).argmax(1)
    assert x0.shape == (4, 1, 28, 28)
    assert (pred == y0).all()   # this tiny set has enough images the expert gets right
