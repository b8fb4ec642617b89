"""What a distillation run is built from (:class:`mdd.distill_run.DistillRun`): the
experts and their checks, the schedule with its positions converted from the run's
unit, the trajectory cache, and counter-based randomness.

Units (DESIGN.md §1.2): ``DistillConfig.unit`` says what ``span``, ``max_start``,
``max_start_init``, ``stages``, ``first_target``, ``max_target``, ``start_epoch`` and
``start_window`` count — ``position`` (rows of the experts' trajectories), ``steps``
(expert SGD steps: the same problem on every data set) or ``epochs`` (expert epochs,
the first engine's unit, converted with the data's steps per epoch). ``stage_quantiles``
instead places PTM's targets at shares of the experts' parameter distance from θ*₀.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from . import data as mdata
from .distill_config import METHODS, DistillConfig
from .experts import ExpertSet
from .schedules import DATMSchedule, MTTSchedule, PTMSchedule, Schedule, default_stages


def generator(seed: int, iteration: int, purpose: str) -> torch.Generator:
    """A generator for one (seed, iteration, purpose): counter-based randomness, so a
    resumed run draws exactly what an uninterrupted one would."""
    h = hashlib.sha256(f"{seed}/{iteration}/{purpose}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(h[:8], "little") & ((1 << 63) - 1))


def step_batches(m: int, steps: int, batch: int | None, gen: torch.Generator) -> list[torch.Tensor]:
    """Index tensors for N steps: all images per step, or ``batch`` images per step from
    successive random permutations (MTT's indices_chunks)."""
    if batch is None or batch >= m:
        every = torch.arange(m)
        return [every] * steps
    out: list[torch.Tensor] = []
    pool = torch.empty(0, dtype=torch.long)
    while len(out) < steps:
        if len(pool) < batch:
            # the leftovers of the last permutation are topped up with images they do
            # not hold, so a batch never holds one image twice
            fresh = torch.randperm(m, generator=gen)
            seen = torch.isin(fresh, pool)
            pool = torch.cat([pool, fresh[~seen], fresh[seen]])
        out.append(pool[:batch])
        pool = pool[batch:]
    return out


class TrajectoryCache:
    """The experts' snapshots, loaded once per (expert, position), a bounded LRU in memory."""

    def __init__(self, experts: ExpertSet, device: torch.device, max_items: int = 256):
        self.experts, self.device, self.max_items = experts, device, max_items
        self._cache: OrderedDict[tuple[int, int], torch.Tensor] = OrderedDict()

    def get(self, expert: int, epoch: int) -> torch.Tensor:
        key = (expert, epoch)
        if key not in self._cache:
            if hasattr(self.experts, "snapshots"):   # reads one row, not the whole file
                self._cache[key] = self.experts.snapshots(expert, [epoch], self.device)[0]
            else:
                self._cache[key] = self.experts.trajectory(expert, self.device)[epoch].clone()
            while len(self._cache) > self.max_items:
                self._cache.popitem(last=False)
        self._cache.move_to_end(key)
        return self._cache[key]


def estimate_unrolled_bytes(batch: int, steps: int, width: int, image_size: int) -> float:
    """Graph memory of the unrolled (classic) mode: ~8.5 first-layer activations per step
    (measured: 6.6 GB for N=20, 100 images, width 128, 28 px)."""
    return 8.5 * 4.0 * steps * batch * width * image_size * image_size


def to_position(value: int | None, unit: str, experts: ExpertSet) -> int | None:
    """A trajectory position from ``value`` counted in ``unit`` (position | steps | epochs)."""
    if value is None or unit == "position":
        return value
    if unit == "steps":
        return experts.position_of_steps(value)
    if unit == "epochs":
        per_epoch = experts.manifest.get("steps_per_epoch")
        if per_epoch is None or experts.position_steps is None:
            return value   # experts from before positions: one per epoch already
        return experts.position_of_steps(value * int(per_epoch))
    raise ValueError(f"unit must be position, steps or epochs, got {unit!r}")


def positions(cfg: DistillConfig, experts: ExpertSet) -> dict[str, int | list[int] | None]:
    """The schedule's fields in trajectory positions (see the module docstring)."""
    p = {k: to_position(getattr(cfg, k), cfg.unit, experts)
         for k in ("span", "max_start", "max_start_init", "first_target", "max_target",
                   "start_epoch", "start_window")}
    p["span"] = max(1, p["span"])
    if cfg.stage_quantiles:
        p["stages"] = sorted({experts.position_at_distance(q) for q in cfg.stage_quantiles})
    elif cfg.stages:
        p["stages"] = sorted({max(1, to_position(t, cfg.unit, experts)) for t in cfg.stages})
    else:
        p["stages"] = None
    return p


def segment_steps(experts: ExpertSet, start: int, target: int) -> float:
    """Expert SGD steps between two positions (positions when the unit is unknown)."""
    return (target - start) * (experts.position_steps or 1)


def open_experts(cfg: DistillConfig) -> ExpertSet:
    folder = Path(cfg.experts)
    if not (folder / "manifest.json").is_file():
        raise FileNotFoundError(
            f"no experts at {folder} (no manifest.json); train them first: mdd experts --flag "
            f"{cfg.flag} --out {folder} --preset {cfg.preset or 'cpu'}")
    return ExpertSet(folder)


def check_experts(cfg: DistillConfig, experts: ExpertSet) -> None:
    m = experts.manifest
    if m.get("flag") != cfg.flag:
        raise ValueError(f"experts in {experts.folder} were trained on {m.get('flag')}, not {cfg.flag}")
    if int(m.get("size", 28)) != cfg.size:
        raise ValueError(f"experts in {experts.folder} are for size {m.get('size')}, not {cfg.size}")
    span = positions(cfg, experts)["span"]
    if METHODS[cfg.method][0] != "ptm" and span > experts.positions:
        raise ValueError(f"span M={cfg.span} {cfg.unit} ({span} positions) exceeds the experts' "
                         f"{experts.positions} positions")


def check_data(cfg: DistillConfig, experts: ExpertSet, data: mdata.MedMNIST) -> None:
    counts = torch.bincount(data.train.y, minlength=data.num_classes)
    small = int(counts.argmin())
    if cfg.ipc > int(counts[small]):
        raise ValueError(f"ipc={cfg.ipc} exceeds class {small} ({data.class_names[small]}), which "
                         f"has only {int(counts[small])} training images")
    got, want = np.array(experts.norm.mean + experts.norm.std), np.array(data.norm.mean + data.norm.std)
    if not np.allclose(got, want, atol=1e-5):
        raise ValueError(f"experts in {experts.folder} were trained with another normalization "
                         f"({experts.norm}) than {data.path} gives ({data.norm})")


def make_schedule(cfg: DistillConfig, experts: ExpertSet) -> tuple[Schedule, bool]:
    """The run's schedule, in positions, and whether DOM is on."""
    kind, dom = METHODS[cfg.method]
    e, T, p = len(experts), experts.positions, positions(cfg, experts)
    if kind == "mtt":
        return MTTSchedule(e, T, p["max_start"], p["span"], cfg.steps), dom
    if kind == "datm":
        return DATMSchedule(e, T, p["max_start"], p["span"], cfg.steps, cfg.iterations,
                            p["max_start_init"]), dom
    stages = p["stages"] or default_stages(T, cfg.num_stages, p["max_target"], p["first_target"])
    stages = [t for t in stages if p["start_epoch"] < t <= T] or [T]
    per_stage = cfg.stage_iterations or max(1, cfg.iterations // len(stages))
    return PTMSchedule(e, T, stages, cfg.steps, per_stage, start=p["start_epoch"],
                       step_rule=cfg.step_rule, max_steps=cfg.max_steps, advance=cfg.advance,
                       min_stage_iterations=cfg.min_stage_iterations,
                       plateau_window=cfg.plateau_window, plateau_tol=cfg.plateau_tol,
                       start_window=p["start_window"] or 0), dom
