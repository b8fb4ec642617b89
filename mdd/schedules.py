"""Which expert segment each matching iteration uses (DESIGN.md §1.1, §1.2, §4).

A schedule hands out :class:`Window` s — expert, start position, target position,
unrolled steps, stage — and watches the losses to decide when to move on. Every schedule is a
small object whose whole state is a JSON-able dict (``state_dict`` /
``load_state_dict``), so a checkpoint can resume it exactly. Randomness comes from the
generator the caller passes per iteration (mdd.distill derives it from the run seed and
the iteration number), never from a hidden global state.

Positions index an expert's snapshots (mdd.experts: every few SGD steps, or every
epoch for older experts); the run converts a preset's expert steps into positions.

- :class:`MTTSchedule`: random expert, start t ~ U[0, T⁺), target t + M (the baseline).
- :class:`PTMSchedule`: start fixed (position 0, or an anchored window), target extended in stages T_1 < … < T_K;
  steps per stage fixed or growing with the segment; a stage ends after a fixed number
  of iterations or earlier on a loss plateau.
- :class:`DATMSchedule`: MTT whose start window's upper bound grows linearly with the
  iterations (DATM, ICLR 2024).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class Window:
    """One matching segment: expert ``expert`` from epoch ``start`` to ``target`` in ``steps`` steps."""

    expert: int
    start: int
    target: int
    steps: int
    stage: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def _randint(gen: torch.Generator, high: int) -> int:
    """Uniform integer in [0, high)."""
    return int(torch.randint(high, (1,), generator=gen))


class Schedule:
    """Base class: one stage, nothing to watch."""

    name = "base"

    def window(self, iteration: int, gen: torch.Generator) -> Window:  # pragma: no cover
        raise NotImplementedError

    def observe(self, iteration: int, loss: float) -> bool:
        """Record the loss of ``iteration``; True when this moved to a new stage."""
        return False

    @property
    def stage(self) -> int:
        return 0

    @property
    def num_stages(self) -> int:
        return 1

    def stage_targets(self) -> list[int]:
        """Target epochs by stage (what DOM's retraining ramps through)."""
        return []

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def describe(self) -> dict:
        return {"name": self.name}


class MTTSchedule(Schedule):
    """MTT's random window: expert ~ U{E}, start ~ U[0, T⁺), target = start + M.

    ``max_start`` (T⁺) is clipped so that start + M ≤ the experts' last epoch.
    """

    name = "mtt"

    def __init__(self, num_experts: int, expert_epochs: int, max_start: int, span: int, steps: int):
        if span < 1:
            raise ValueError(f"expert span M must be ≥ 1, got {span}")
        if span > expert_epochs:
            raise ValueError(f"expert span M={span} exceeds the experts' {expert_epochs} epochs")
        self.num_experts, self.expert_epochs = num_experts, expert_epochs
        self.max_start = max(1, min(max_start, expert_epochs - span + 1))
        self.span, self.steps = span, steps

    def window(self, iteration: int, gen: torch.Generator) -> Window:
        start = _randint(gen, self.max_start)
        return Window(_randint(gen, self.num_experts), start, start + self.span, self.steps)

    def describe(self) -> dict:
        return {"name": self.name, "max_start": self.max_start, "span": self.span,
                "steps": self.steps}


class DATMSchedule(MTTSchedule):
    """MTT with a growing start window: T⁺ rises linearly from ``max_start_init`` to
    ``max_start`` over ``iterations`` (small ipc ↔ early epochs first)."""

    name = "datm"

    def __init__(self, num_experts: int, expert_epochs: int, max_start: int, span: int, steps: int,
                 iterations: int, max_start_init: int = 1, min_start: int = 0):
        super().__init__(num_experts, expert_epochs, max_start, span, steps)
        self.iterations = max(1, iterations)
        self.max_start_init = max(1, min(max_start_init, self.max_start))
        self.min_start = max(0, min(min_start, self.max_start_init - 1))

    def upper(self, iteration: int) -> int:
        """T⁺ at ``iteration``: start is drawn from [min_start, upper)."""
        frac = min(1.0, iteration / self.iterations)
        return round(self.max_start_init + frac * (self.max_start - self.max_start_init))

    def window(self, iteration: int, gen: torch.Generator) -> Window:
        upper = self.upper(iteration)
        start = self.min_start + _randint(gen, max(1, upper - self.min_start))
        return Window(_randint(gen, self.num_experts), start, start + self.span, self.steps)

    def describe(self) -> dict:
        return {**super().describe(), "max_start_init": self.max_start_init,
                "min_start": self.min_start, "iterations": self.iterations}


def default_stages(expert_epochs: int, num_stages: int, max_target: int | None = None,
                   first_target: int | None = None) -> list[int]:
    """Targets T_1 < … < T_K spread evenly up to ``max_target`` (≤ the experts' epochs).

    ``first_target`` fixes T_1 (default: the even spacing, at least 1).
    """
    top = min(expert_epochs, max_target or expert_epochs)
    k = max(1, min(num_stages, top))
    if first_target is None:
        return sorted({max(1, round(top * (i + 1) / k)) for i in range(k)})
    first = max(1, min(first_target, top))
    if k == 1:
        return [top]
    return sorted({round(first + (top - first) * i / (k - 1)) for i in range(k)})


class PTMSchedule(Schedule):
    """Progressive trajectory matching (DESIGN.md §1.2).

    Start fixed at ``start`` (position 0), or drawn from the anchored window
    [start, start + ``start_window``] when that is > 0. Stage k matches θ*_{T_k} from θ*_start for
    ``stage_iterations`` iterations, or fewer when ``advance="plateau"`` and the loss's
    moving average stops improving: after at least ``min_stage_iterations``, the stage
    ends when the mean loss of the last ``plateau_window`` iterations is not lower than
    the mean of the window before it by more than ``plateau_tol`` (relative).

    ``steps="fixed"`` unrolls ``steps`` steps in every stage (α learns to stretch);
    ``"grow"`` unrolls ``steps · (T_k − start) / (T_1 − start)``, capped at ``max_steps``.
    After the last stage the schedule stays on it.
    """

    name = "ptm"

    def __init__(self, num_experts: int, expert_epochs: int, stages: list[int], steps: int,
                 stage_iterations: int, start: int = 0, step_rule: str = "fixed",
                 max_steps: int | None = None, advance: str = "fixed",
                 min_stage_iterations: int = 10, plateau_window: int = 10,
                 plateau_tol: float = 0.01, start_window: int = 0):
        stages = sorted(set(int(t) for t in stages))
        if not stages:
            raise ValueError("PTM needs at least one stage target")
        if stages[0] <= start:
            raise ValueError(f"stage targets {stages} must lie after the start epoch {start}")
        if stages[-1] > expert_epochs:
            raise ValueError(f"stage target {stages[-1]} exceeds the experts' {expert_epochs} epochs")
        if step_rule not in ("fixed", "grow"):
            raise ValueError(f"step rule must be 'fixed' or 'grow', got {step_rule!r}")
        if advance not in ("fixed", "plateau"):
            raise ValueError(f"stage advance must be 'fixed' or 'plateau', got {advance!r}")
        self.num_experts, self.expert_epochs = num_experts, expert_epochs
        self.stages, self.start, self.base_steps = stages, start, steps
        self.stage_iterations = max(1, stage_iterations)
        self.step_rule, self.max_steps = step_rule, max_steps or 4 * steps
        self.advance, self.min_stage_iterations = advance, min_stage_iterations
        self.plateau_window, self.plateau_tol = max(1, plateau_window), plateau_tol
        # anchored start window [start, start + w): start diversity for few experts,
        # never at or past the first target
        self.start_window = max(0, min(int(start_window), stages[0] - start - 1))
        self._stage, self._stage_iters, self._losses = 0, 0, []

    # -------------------------------------------------------------- windows
    def steps_for(self, stage: int) -> int:
        if self.step_rule == "fixed":
            return self.base_steps
        span, first = self.stages[stage] - self.start, self.stages[0] - self.start
        return min(self.max_steps, max(1, math.ceil(self.base_steps * span / first)))

    def _start(self, gen: torch.Generator) -> int:
        return self.start + (_randint(gen, self.start_window + 1) if self.start_window else 0)

    def window(self, iteration: int, gen: torch.Generator) -> Window:
        expert = _randint(gen, self.num_experts)
        return Window(expert, self._start(gen), self.stages[self._stage],
                      self.steps_for(self._stage), self._stage)

    def window_for_target(self, target: int, gen: torch.Generator) -> Window:
        """A window from the fixed start to ``target`` (DOM's retraining ramp)."""
        stage = max(i for i, t in enumerate(self.stages) if t <= max(target, self.stages[0]))
        return Window(_randint(gen, self.num_experts), self.start, target, self.steps_for(stage),
                      self._stage)

    # -------------------------------------------------------------- stages
    @property
    def stage(self) -> int:
        return self._stage

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    def stage_targets(self) -> list[int]:
        return list(self.stages)

    def plateaued(self) -> bool:
        w, losses = self.plateau_window, self._losses
        if len(losses) < max(self.min_stage_iterations, 2 * w):
            return False
        recent = sum(losses[-w:]) / w
        before = sum(losses[-2 * w:-w]) / w
        return not math.isfinite(before) or recent > before * (1 - self.plateau_tol)

    def observe(self, iteration: int, loss: float) -> bool:
        """Count one iteration of the current stage (DOM's retraining iterations are not
        observed, so they do not eat into a stage's budget)."""
        if self._stage >= len(self.stages) - 1:
            return False
        self._stage_iters += 1
        if math.isfinite(loss):
            self._losses.append(float(loss))
            # only 2·window losses are ever compared: keep the checkpoint small
            self._losses = self._losses[-max(2 * self.plateau_window, self.min_stage_iterations):]
        done = self._stage_iters >= self.stage_iterations
        if not done and self.advance == "plateau":
            done = self.plateaued()
        if done:
            self._stage += 1
            self._stage_iters = 0
            self._losses = []
        return done

    def state_dict(self) -> dict:
        return {"stage": self._stage, "stage_iterations": self._stage_iters,
                "losses": list(self._losses)}

    def load_state_dict(self, state: dict) -> None:
        self._stage = int(state["stage"])
        self._stage_iters = int(state["stage_iterations"])
        self._losses = [float(v) for v in state["losses"]]

    def describe(self) -> dict:
        return {"name": self.name, "start": self.start, "stages": self.stages,
                "steps": [self.steps_for(k) for k in range(len(self.stages))],
                "stage_iterations": self.stage_iterations, "advance": self.advance,
                "step_rule": self.step_rule, "start_window": self.start_window}
