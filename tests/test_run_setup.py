"""Positions on the experts' trajectories from a run's unit (mdd.run_setup): one preset,
the same problem on data sets with other epoch lengths."""
from __future__ import annotations

from pathlib import Path

import pytest

from mdd.distill_config import DistillConfig
from mdd.run_setup import make_schedule, positions, to_position


class FakeExperts:
    """What the unit conversion reads of an ExpertSet."""

    def __init__(self, per_epoch: int, every: int | None, positions: int, dist=None):
        self.manifest = {"steps_per_epoch": per_epoch}
        self.position_steps, self.positions, self.folder = every, positions, Path("experts")
        self._dist = dist or [float(t) ** 0.5 for t in range(positions + 1)]

    def position_of_steps(self, steps: int) -> int:
        from mdd.experts import ExpertSet
        return ExpertSet.position_of_steps(self, steps)

    def position_at_distance(self, q: float) -> int:
        goal = q * self._dist[-1]
        return next(t for t, v in enumerate(self._dist) if v >= goal - 1e-12 and t > 0)

    def __len__(self) -> int:
        return 4


def test_steps_mean_the_same_on_every_data_set() -> None:
    breast, pneu = FakeExperts(2, 5, 30), FakeExperts(18, 5, 30)
    assert to_position(40, "steps", breast) == to_position(40, "steps", pneu) == 8
    # epochs are another problem on each: 2 epochs are 4 steps on one, 36 on the other
    assert to_position(2, "epochs", breast) == 1 and to_position(2, "epochs", pneu) == 7
    assert to_position(3, "position", breast) == 3 and to_position(None, "steps", breast) is None
    with pytest.raises(ValueError, match="unit"):
        to_position(3, "minutes", breast)


def test_small_step_counts_round_to_a_real_segment() -> None:
    e = FakeExperts(2, 5, 30)
    assert e.position_of_steps(1) == 1 and e.position_of_steps(0) == 0
    assert e.position_of_steps(10_000) == 30


def test_preset_positions_and_quantile_stages() -> None:
    e = FakeExperts(2, 5, 30)
    cfg = DistillConfig(unit="steps", span=25, max_start=50, first_target=10, max_target=80,
                        start_window=5)
    p = positions(cfg, e)
    assert (p["span"], p["max_start"], p["first_target"], p["max_target"], p["start_window"]) == (5, 10, 2, 16, 1)
    q = positions(DistillConfig(unit="steps", stage_quantiles=[0.25, 0.5, 1.0]), e)
    assert q["stages"] == [e.position_at_distance(v) for v in (0.25, 0.5, 1.0)]
    assert q["stages"][-1] == 30 and q["stages"] == sorted(q["stages"])


def test_schedule_is_built_in_positions() -> None:
    e = FakeExperts(2, 5, 30)
    s, dom = make_schedule(DistillConfig(method="ptm+dom", unit="steps", first_target=10,
                                         max_target=80, num_stages=4, iterations=40), e)
    assert dom and s.describe()["stages"] == [2, 7, 11, 16]
    m, dom = make_schedule(DistillConfig(method="mtt", unit="steps", span=25, max_start=50), e)
    assert not dom and (m.span, m.max_start) == (5, 10)


def test_old_experts_without_steps_keep_epochs() -> None:
    old = FakeExperts(3, None, 15)
    old.manifest = {}
    assert to_position(2, "epochs", old) == 2
    with pytest.raises(ValueError, match="SGD steps"):
        to_position(20, "steps", old)
