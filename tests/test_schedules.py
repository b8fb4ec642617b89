"""Schedules: which expert segment each iteration matches (mdd.schedules)."""
from __future__ import annotations

import json

import pytest
import torch

from mdd.schedules import DATMSchedule, MTTSchedule, PTMSchedule, default_stages


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_mtt_random_window_in_range_and_seeded() -> None:
    s = MTTSchedule(num_experts=3, expert_epochs=10, max_start=4, span=2, steps=5)
    ws = [s.window(i, gen(i)) for i in range(200)]
    assert {w.start for w in ws} == {0, 1, 2, 3}          # t ~ U[0, T⁺)
    assert all(w.target == w.start + 2 and w.steps == 5 and w.stage == 0 for w in ws)
    assert {w.expert for w in ws} == {0, 1, 2}
    assert [s.window(i, gen(i)) for i in range(20)] == ws[:20]   # same generator, same draws
    assert not s.observe(0, 1.0) and s.num_stages == 1


def test_mtt_start_window_clipped_to_the_trajectory() -> None:
    s = MTTSchedule(num_experts=1, expert_epochs=5, max_start=20, span=2, steps=3)
    assert s.max_start == 4
    assert max(s.window(i, gen(i)).target for i in range(100)) <= 5
    with pytest.raises(ValueError, match="exceeds"):
        MTTSchedule(1, 3, 2, span=4, steps=3)


def test_datm_upper_bound_grows_linearly() -> None:
    s = DATMSchedule(num_experts=2, expert_epochs=20, max_start=10, span=2, steps=3,
                     iterations=100, max_start_init=2)
    assert s.upper(0) == 2 and s.upper(50) == 6 and s.upper(100) == 10 and s.upper(500) == 10
    early = [s.window(i, gen(i)).start for i in range(0, 10)]
    late = [s.window(100, gen(i)).start for i in range(200)]
    assert max(early) < 3 and max(late) == 9 and min(late) == 0


def test_default_stages() -> None:
    assert default_stages(20, 4) == [5, 10, 15, 20]
    assert default_stages(15, 4, max_target=8, first_target=2) == [2, 4, 6, 8]
    assert default_stages(3, 5) == [1, 2, 3]             # never more stages than epochs
    assert default_stages(10, 1) == [10]


def test_ptm_fixed_start_stages_advance_after_fixed_iterations() -> None:
    s = PTMSchedule(num_experts=2, expert_epochs=10, stages=[2, 4, 6], steps=5, stage_iterations=3)
    seen = []
    for it in range(12):
        w = s.window(it, gen(it))
        seen.append((w.start, w.target, w.stage, w.steps))
        s.observe(it, 1.0)
    assert [t for _, t, _, _ in seen] == [2, 2, 2, 4, 4, 4, 6, 6, 6, 6, 6, 6]
    assert all(start == 0 and steps == 5 for start, _, _, steps in seen)
    assert s.stage == 2 and s.stage_targets() == [2, 4, 6]


def test_ptm_steps_grow_with_the_segment_and_are_capped() -> None:
    s = PTMSchedule(1, 20, stages=[2, 4, 10], steps=5, stage_iterations=1, step_rule="grow",
                    max_steps=20)
    assert [s.steps_for(k) for k in range(3)] == [5, 10, 20]   # 5·T_k/T_1, 25 capped at 20
    f = PTMSchedule(1, 20, stages=[2, 4, 10], steps=5, stage_iterations=1)
    assert [f.steps_for(k) for k in range(3)] == [5, 5, 5]


def test_ptm_plateau_advances_early_only_on_a_flat_loss() -> None:
    kw = dict(num_experts=1, expert_epochs=10, stages=[2, 4], steps=3, stage_iterations=100,
              advance="plateau", min_stage_iterations=4, plateau_window=3, plateau_tol=0.01)
    flat = PTMSchedule(**kw)
    changed = [flat.observe(it, 1.0) for it in range(10)]
    assert changed.index(True) == 5                     # 2·window losses, then flat → advance
    falling = PTMSchedule(**kw)
    assert not any(falling.observe(it, 1.0 / (it + 1)) for it in range(50))
    assert falling.stage == 0


def test_ptm_state_round_trips_through_json() -> None:
    kw = dict(num_experts=3, expert_epochs=10, stages=[2, 5, 8], steps=4, stage_iterations=4,
              advance="plateau", min_stage_iterations=2, plateau_window=2)
    a = PTMSchedule(**kw)
    losses = [3.0, 2.0, 1.5, 1.5, 1.5, 1.4, 1.0, 0.9, 0.9, 0.9, 0.8, 0.7]
    for it in range(5):
        a.observe(it, losses[it])
    b = PTMSchedule(**kw)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    for it in range(5, 12):
        assert a.window(it, gen(it)) == b.window(it, gen(it))
        assert a.observe(it, losses[it]) == b.observe(it, losses[it])
    assert a.state_dict() == b.state_dict()


def test_ptm_rejects_bad_stages() -> None:
    with pytest.raises(ValueError, match="after the start"):
        PTMSchedule(1, 10, stages=[0, 2], steps=3, stage_iterations=1)
    with pytest.raises(ValueError, match="exceeds"):
        PTMSchedule(1, 10, stages=[2, 12], steps=3, stage_iterations=1)


def test_ptm_retraining_window_targets() -> None:
    s = PTMSchedule(2, 10, stages=[2, 4, 8], steps=3, stage_iterations=5, step_rule="grow",
                    max_steps=50)
    w = s.window_for_target(6, gen(0))
    assert (w.start, w.target, w.steps) == (0, 6, 6)     # steps of the stage at or below 6


def test_ptm_anchored_start_window_stays_before_the_first_target():
    import torch
    from mdd.schedules import PTMSchedule
    s = PTMSchedule(4, 30, [6, 12], steps=5, stage_iterations=3, start_window=10)
    assert s.start_window == 5            # clipped: a start must lie before T_1 = 6
    starts = {s.window(i, torch.Generator().manual_seed(i)).start for i in range(200)}
    assert starts == set(range(6))
    fixed = PTMSchedule(4, 30, [6, 12], steps=5, stage_iterations=3)
    assert {fixed.window(i, torch.Generator().manual_seed(i)).start for i in range(50)} == {0}
