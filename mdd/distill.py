"""The distillation engine (DESIGN.md §1): MTT, progressive trajectory matching (PTM) and
PTM with dynamic overlap mitigation (DOM), one loop, every open choice a parameter.

Python::

    from mdd.distill import DistillConfig, distill
    result = distill(DistillConfig(flag="breastmnist", ipc=2, method="ptm+dom",
                                   experts="runs/experts/breastmnist-cpu", preset="cpu"))

Command line::

    mdd distill --flag breastmnist --ipc 2 --method ptm+dom --experts DIR --out DIR --preset cpu
    mdd evaluate --distilled DIR [--models K --epochs E]

A run folder (``--out``)::

    config.json            the resolved DistillConfig
    log.jsonl, log.csv     one row per iteration (see LOG_FIELDS)
    evals.jsonl            every val evaluation used for selection
    checkpoint.safetensors images, log α, momentum buffers, best images; schedule, DOM,
                           counters and the iteration in its metadata (atomic)
    snapshots/iter_NNNNNN.npz   x (normalized), y, alpha, per-class similarity matrices
    dom_events.jsonl       one row per DOM check (overlap ratio, similarity, replaced)
    dom/event_NNNNNN.npz   before/after images, replaced and real indices, similarities
    distilled/             the artifact (distilled.npz, manifest.json, grid.png)
    result.json            written last: the run is finished

Re-running the same command resumes from the checkpoint; a finished run is returned as
is. Randomness is counter-based: every iteration draws from generators seeded with
(seed, iteration, purpose), so the "RNG state" a checkpoint needs is the iteration.

Feature spaces: DOM detects overlaps with expert 0 at the current stage's target epoch
(DESIGN.md §1.3); the per-iteration ``overlap_ratio``/``mean_similarity`` log and the
snapshots' matrices use one fixed space, expert 0 at its last epoch, so that curves are
comparable across iterations and methods (τ is the same).
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import time
import warnings
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save as st_save
from tqdm.auto import tqdm

from . import data as mdata
from . import validate
from .alloc import tuned_malloc
from .artifact import ARTIFACT_DIR, load_distilled, save_distilled
from .augment import Augment
from .baselines import random_subset
from .evaluate import EvalConfig, evaluate_set, protocol, resolve_device
from .experts import ExpertSet, versions
from .nets import ARCHS
from .io import atomic_path, dumps, read_json, remove_partial_writes, strict, write_json
from .locks import folder_lock
from .matching import MatchProblem, MatchResult, Student, compile_kernels, match
from .overlap import class_similarity, detect, embed, farthest_real
from .runtime import tf32, torch_threads
from .schedules import (DATMSchedule, MTTSchedule, PTMSchedule, Schedule, Window,
                        default_stages)

#: method → (schedule, DOM on)
METHODS: dict[str, tuple[str, bool]] = {
    "mtt": ("mtt", False), "datm": ("datm", False), "ptm": ("ptm", False), "ptm+dom": ("ptm", True)}

#: Fields of every per-iteration log row, in CSV column order.
LOG_FIELDS = ("iteration", "phase", "loss", "alpha", "grad_norm", "grad_alpha", "expert", "start",
              "target", "steps", "stage", "overlap_ratio", "mean_similarity", "replaced",
              "skipped", "skips", "nonfinite", "seconds", "elapsed")

CHECKPOINT, CONFIG, RESULT = "checkpoint.safetensors", "config.json", "result.json"


# ====================================================================== config
@dataclass
class DistillConfig:
    """One distillation run. Defaults work (a small BreastMNIST PTM + DOM run); a preset
    overrides the fields it names, and fields set explicitly win over the preset
    (see :func:`resolve`).
    """

    flag: str = "breastmnist"
    ipc: int = 1
    method: str = "ptm+dom"                  # mtt | datm | ptm | ptm+dom
    experts: str | None = None               # default runs/experts/{flag}-{preset or cpu}
    out: str | None = None                   # default runs/distill/{flag}-ipc{ipc}-{method}
    root: str | None = None                  # MedMNIST folder ($MDD_DATA, ./data)
    size: int = 28
    preset: str | None = None                # smoke | cpu | paper
    seed: int = 0
    device: str = "auto"
    iterations: int = 200
    # -- student unroll
    steps: int = 20                          # N, unrolled student steps
    batch_syn: int | None = None             # images per step; None: all of them
    init: str = "real"                       # real (seeded random subset) | noise
    lr_images: float = 100.0
    lr_alpha: float = 0.01                   # on log α
    momentum: float = 0.5
    alpha_init: float = 0.01                 # α₀ (the student's step size)
    alpha_min: float = 1e-6                  # α is kept in [alpha_min, alpha_max]
    alpha_max: float = 1.0
    augment: bool = True
    mode: str = "auto"                       # adjoint | unrolled | auto (by memory)
    unrolled_memory_gb: float = 2.0          # auto: unrolled when it needs less than this
    compile: bool | None = None              # torch.compile the adjoint's reverse step
                                             # (None: whenever the mode is adjoint)
    threads: int | None = None               # torch threads (None: leave as is)
    tf32: bool = False                       # allow TF32 on CUDA (off: exact gradients)
    # -- MTT / DATM window
    span: int = 2                            # M: target = start + M
    max_start: int = 10                      # T⁺
    max_start_init: int = 1                  # DATM: T⁺ at iteration 0
    # -- PTM
    stages: list[int] | None = None          # T_1 < … < T_K; None: default_stages
    num_stages: int = 4
    max_target: int | None = None            # cap on T_K (default: the experts' epochs)
    first_target: int | None = None          # T_1 (default: even spacing)
    start_epoch: int = 0
    step_rule: str = "fixed"                 # fixed | grow (N_k ∝ T_k, capped)
    max_steps: int | None = None
    advance: str = "fixed"                   # fixed | plateau
    stage_iterations: int | None = None      # default iterations // K
    min_stage_iterations: int = 10
    plateau_window: int = 10
    plateau_tol: float = 0.01
    # -- DOM
    dom_every: int = 50                      # P
    tau: float = 0.9
    retrain_iterations: int = 10             # R
    dom_pool: int = 512                      # real candidates per class
    # -- guards
    skip_loss_above: float | None = None     # DATM-style skip (≈1)
    # -- selection and evaluation
    select: str = "auc"                      # val metric that picks the reported images:
                                             # auc (ties: balanced acc; the protocol) | acc
    select_init: bool = False                # is iteration 0 (the init) a candidate?
    eval_every: int = 50
    val_models: int = 3                      # ≥ 3, trained as the test networks are
    val_epochs: int | None = None            # None: test_epochs (the protocol)
    test_models: int = 5
    test_epochs: int = 300
    # -- logging and checkpoints
    log_similarity_every: int = 1
    snapshot_every: int = 50
    checkpoint_every_s: float = 120.0
    checkpoint_every: int | None = None      # iterations (besides the time rule)
    progress: bool = True
    tuned_malloc: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


#: Preset fields. ``cpu``: sized for 2 cores (BreastMNIST ipc 2 in a few minutes), one
#: torch thread: its batches are a few images, and on a busy 2-core machine two threads
#: wait on each other (measured: 4 images, N=10: 7.9 s per iteration with 2 threads
#: under load, 1.0 s with 1).
PRESETS: dict[str, dict[str, Any]] = {
    "smoke": dict(iterations=8, steps=3, num_stages=2, dom_every=3, retrain_iterations=2,
                  eval_every=4, val_models=1, test_models=1, test_epochs=20,
                  snapshot_every=4, max_start=2, span=1, dom_pool=64),
    "cpu": dict(iterations=120, steps=12, num_stages=4, max_target=8, first_target=2,
                dom_every=20, retrain_iterations=5, eval_every=30, val_models=3,
                test_models=5, test_epochs=300, snapshot_every=10,
                max_start=8, span=2, lr_images=100.0, lr_alpha=0.01, threads=1),
    "paper": dict(iterations=5000, steps=30, num_stages=5, max_target=20, first_target=2,
                  dom_every=100, retrain_iterations=50, eval_every=500, val_models=3,
                  test_models=5, test_epochs=1000, snapshot_every=100,
                  max_start=20, span=2),
}

#: Fields that do not change what a run computes (a run folder may be resumed with
#: other values of these).
NON_IDENTITY = ("out", "root", "device", "progress", "checkpoint_every_s", "checkpoint_every",
                "tuned_malloc", "threads", "compile", "mode", "unrolled_memory_gb", "tf32")


def resolve(config: DistillConfig, explicit: set[str] | None = None) -> DistillConfig:
    """Apply ``config.preset`` under the explicit fields — those named in ``explicit``
    and those that differ from DistillConfig's defaults — and fill the derived defaults."""
    validate.check_flag(config.flag)   # a typo is named as such, before anything else
    cfg = dataclasses.replace(config)
    if cfg.preset is not None:
        if cfg.preset not in PRESETS:
            raise ValueError(f"unknown preset {cfg.preset!r}; choose one of {', '.join(PRESETS)}")
        base = DistillConfig()
        explicit = set(explicit or ()) | {f.name for f in dataclasses.fields(cfg)
                                          if getattr(cfg, f.name) != getattr(base, f.name)}
        for k, v in PRESETS[cfg.preset].items():
            if k not in explicit:
                setattr(cfg, k, v)
    # every field against mdd.validate.DISTILL (ranges, choices, α bounds): one line
    # naming the argument, its value and what is allowed
    validate.distill_config(cfg)
    if cfg.val_epochs is None:
        cfg.val_epochs = cfg.test_epochs
    if cfg.experts is None:
        cfg.experts = str(Path("runs") / "experts" / f"{cfg.flag}-{cfg.preset or 'cpu'}")
    if cfg.out is None:
        cfg.out = str(Path("runs") / "distill" / f"{cfg.flag}-ipc{cfg.ipc}-{cfg.method}")
    return cfg


def identity(cfg: DistillConfig) -> dict:
    return {k: v for k, v in cfg.to_dict().items() if k not in NON_IDENTITY}


# ====================================================================== randomness
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


# ====================================================================== helpers
class Momentum:
    """SGD with momentum on one tensor, torch.optim.SGD's rule, explicit state.

    buf ← m·buf + g (buf ← g at the first step); p ← p − lr·buf. ``mask`` (rows of p)
    restricts an update to some images; their buffers alone move.
    """

    def __init__(self, lr: float, momentum: float):
        self.lr, self.momentum = lr, momentum
        self.buf: torch.Tensor | None = None

    def step(self, p: torch.Tensor, g: torch.Tensor, rows: torch.Tensor | None = None) -> None:
        first = self.buf is None
        if first:
            self.buf = torch.zeros_like(g)
        with torch.no_grad():
            if rows is None:
                self.buf = g.clone() if first else self.buf.mul_(self.momentum).add_(g)
                p.sub_(self.lr * self.buf)
            else:
                self.buf[rows] = g[rows] if first else self.buf[rows] * self.momentum + g[rows]
                p[rows] -= self.lr * self.buf[rows]

    def reset_rows(self, rows: list[int]) -> None:
        if self.buf is not None and rows:
            self.buf[rows] = 0


class TrajectoryCache:
    """The experts' snapshots, loaded once per (expert, epoch), a bounded LRU in memory."""

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


def _rows_to_csv(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=LOG_FIELDS, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())


class RunLog:
    """Append-only JSONL + CSV logs; on resume, rows at or after the checkpoint are
    dropped first (they will be recomputed identically)."""

    def __init__(self, folder: Path, resume_from: int):
        """``resume_from``: the checkpoint's iteration, -1 on a fresh start."""
        self.jsonl, self.csv = folder / "log.jsonl", folder / "log.csv"
        self.evals, self.dom = folder / "evals.jsonl", folder / "dom_events.jsonl"
        rows = [r for r in _read_jsonl(self.jsonl) if r["iteration"] < resume_from]
        with atomic_path(self.jsonl) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        _rows_to_csv(self.csv, rows)
        # log and DOM rows carry the iteration they ran in (< the checkpoint's count); a
        # val row carries the count it followed, and the checkpoint at k already holds
        # eval k (its best images): that row is kept, not recomputed
        for path, last in ((self.evals, resume_from), (self.dom, resume_from - 1)):
            kept = [r for r in _read_jsonl(path) if r["iteration"] <= last]
            with atomic_path(path) as tmp:
                tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))

    def row(self, row: dict) -> None:
        with open(self.jsonl, "a") as f:
            f.write(json.dumps(row) + "\n")
        with open(self.csv, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=LOG_FIELDS, extrasaction="ignore").writerow(row)

    def event(self, path: Path, row: dict) -> None:
        with open(path, "a") as f:
            f.write(dumps(row) + "\n")


def _read_jsonl(path: Path) -> list[dict]:
    if not Path(path).is_file():
        return []
    rows = []
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:   # a line cut by a kill: dropped, recomputed on resume
            break
    return rows


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


# ====================================================================== the run
class DistillRun:
    """State and loop of one run. Use :func:`distill`."""

    def __init__(self, cfg: DistillConfig):
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.device = resolve_device(cfg.device)
        self.experts = _open_experts(cfg)
        _check_experts(cfg, self.experts)
        self.data = mdata.load(cfg.flag, size=cfg.size, root=cfg.root)
        _check_data(cfg, self.experts, self.data)
        self.net = self.experts.net().to(self.device)
        self.student = Student(self.net, self.experts.layout)
        self.augment = Augment(cfg.flag).to(self.device) if cfg.augment else None
        self.traj = TrajectoryCache(self.experts, self.device)
        self.schedule, self.dom = _make_schedule(cfg, self.experts)
        self.m = cfg.ipc * self.data.num_classes
        batch = self.m if cfg.batch_syn is None else min(cfg.batch_syn, self.m)
        self.mode = cfg.mode
        if self.mode == "auto":
            need = estimate_unrolled_bytes(batch, max(self._max_steps(), 1), self.student.width,
                                           cfg.size)
            self.mode = "unrolled" if need <= cfg.unrolled_memory_gb * 2**30 else "adjoint"
        # compiled: exact like eager, ~1.3x faster on the benchmark config; the first
        # iteration pays the compilation (about a minute on 2 cores, seconds once cached)
        want = cfg.compile if cfg.compile is not None else True
        self.kernels = compile_kernels(self.student) if want and self.mode == "adjoint" else None
        self.sim_theta = None   # fixed feature space for the similarity log

    def _max_steps(self) -> int:
        if isinstance(self.schedule, PTMSchedule):
            return max(self.schedule.steps_for(k) for k in range(self.schedule.num_stages))
        return self.cfg.steps

    # ------------------------------------------------------------------ state
    def init_state(self) -> None:
        cfg = self.cfg
        x_real, y, idx = random_subset(self.data, cfg.ipc, seed=cfg.seed)
        if cfg.init == "noise":
            g = torch.Generator().manual_seed(cfg.seed)
            x_real = torch.randn(x_real.shape, generator=g)
        self.images = x_real.clone().float().to(self.device)
        self.labels = y.clone().to(self.device)
        self.init_indices = idx.tolist()
        self.log_alpha = torch.tensor(math.log(cfg.alpha_init), device=self.device)
        self.opt_img = Momentum(cfg.lr_images, cfg.momentum)
        self.opt_alpha = Momentum(cfg.lr_alpha, cfg.momentum)
        self.iteration = 0
        self.retrain: dict | None = None
        self.counters = {"skips": 0, "nonfinite": 0, "loss_skips": 0, "replaced": 0, "dom_checks": 0}
        self.best: dict | None = None
        self.best_images = self.images.clone()
        self.best_log_alpha = self.log_alpha.clone()
        self.elapsed = 0.0

    def state_tensors(self) -> dict[str, torch.Tensor]:
        t = {"images": self.images, "labels": self.labels, "log_alpha": self.log_alpha.reshape(1),
             "best_images": self.best_images, "best_log_alpha": self.best_log_alpha.reshape(1)}
        if self.opt_img.buf is not None:
            t["momentum_images"] = self.opt_img.buf
        if self.opt_alpha.buf is not None:
            t["momentum_log_alpha"] = self.opt_alpha.buf.reshape(1)
        return {k: v.detach().cpu().contiguous() for k, v in t.items()}

    def state_meta(self) -> dict:
        return {"iteration": self.iteration, "schedule": self.schedule.state_dict(),
                "retrain": self.retrain, "counters": self.counters, "best": self.best,
                "elapsed": self.elapsed, "init_indices": self.init_indices,
                "rng": {"seed": self.cfg.seed, "iteration": self.iteration,
                        "kind": "counter-based: sha256(seed/iteration/purpose)"},
                "identity": identity(self.cfg)}

    def save_checkpoint(self) -> None:
        meta = {"state": json.dumps(self.state_meta())}
        payload = st_save(self.state_tensors(), metadata=meta)
        with atomic_path(self.out / CHECKPOINT) as tmp:
            tmp.write_bytes(payload)

    def load_checkpoint(self) -> bool:
        path = self.out / CHECKPOINT
        if not path.is_file():
            return False
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = json.loads(f.metadata()["state"])
            t = {k: f.get_tensor(k) for k in f.keys()}
        if meta["identity"] != identity(self.cfg):
            raise ValueError(f"{self.out} holds a run with another configuration; use another "
                             f"--out or delete it ({_diff(meta['identity'], identity(self.cfg))})")
        dev = self.device
        self.images = t["images"].to(dev)
        self.labels = t["labels"].to(dev)
        self.log_alpha = t["log_alpha"][0].to(dev)
        self.best_images = t["best_images"].to(dev)
        self.best_log_alpha = t["best_log_alpha"][0].to(dev)
        self.opt_img.buf = t["momentum_images"].to(dev) if "momentum_images" in t else None
        self.opt_alpha.buf = t["momentum_log_alpha"][0].to(dev) if "momentum_log_alpha" in t else None
        self.iteration = int(meta["iteration"])
        self.schedule.load_state_dict(meta["schedule"])
        self.retrain, self.counters, self.best = meta["retrain"], meta["counters"], meta["best"]
        self.elapsed, self.init_indices = float(meta["elapsed"]), meta["init_indices"]
        return True

    # ------------------------------------------------------------------ one iteration
    def window(self, it: int) -> tuple[Window, str]:
        gen = generator(self.cfg.seed, it, "window")
        if self.retrain is not None:
            targets = self.schedule.stage_targets()
            lo, hi = targets[0], targets[self.schedule.stage]
            done = self.retrain["total"] - self.retrain["left"] + 1
            target = round(lo + (hi - lo) * done / self.retrain["total"])
            return self.schedule.window_for_target(target, gen), "retrain"
        return self.schedule.window(it, gen), "main"

    def problem(self, it: int, w: Window) -> MatchProblem:
        gen = generator(self.cfg.seed, it, "batches")
        batches = [b.to(self.device) for b in step_batches(self.m, w.steps, self.cfg.batch_syn, gen)]
        seeds = torch.randint(0, 2**31 - 1, (w.steps,), generator=gen).tolist()
        return MatchProblem(self.traj.get(w.expert, w.start), self.traj.get(w.expert, w.target),
                            batches, seeds)

    def compute(self, prob: MatchProblem) -> MatchResult:
        """The matching loss and gradients (a seam the tests use to inject failures)."""
        return match(self.student, self.images, self.labels, self.log_alpha, prob, self.augment,
                     self.mode, self.kernels)

    def apply(self, res: MatchResult, rows: list[int] | None, images: bool = True) -> None:
        """One outer step: images (all, or only ``rows`` while DOM retrains them) and α
        (frozen during a retrain); ``images=False`` moves α alone (a skipped loss)."""
        r = torch.tensor(rows, device=self.device) if rows is not None else None
        if images:
            self.opt_img.step(self.images, res.grad_images.to(self.device), r)
        if rows is None:   # α is frozen while DOM retrains a few images
            self.opt_alpha.step(self.log_alpha, res.grad_log_alpha.to(self.device))
            # α = exp(log α) > 0 by construction; the bounds stop a runaway α from making
            # the unroll (and the evaluation, which trains with α) overflow, or underflow
            # to an α of exactly 0, whose gradient is 0 forever
            lo, hi = math.log(self.cfg.alpha_min), math.log(self.cfg.alpha_max)
            if not lo < float(self.log_alpha) < hi and self.opt_alpha.buf is not None:
                # at a bound the momentum would keep winding up against the clamp and
                # hold α there long after the gradient turned
                self.opt_alpha.buf.zero_()
            self.log_alpha.clamp_(lo, hi)

    def snapshot_good(self) -> dict:
        return {"images": self.images.clone(), "log_alpha": self.log_alpha.clone(),
                "m_img": None if self.opt_img.buf is None else self.opt_img.buf.clone(),
                "m_alpha": None if self.opt_alpha.buf is None else self.opt_alpha.buf.clone()}

    def restore_good(self, good: dict) -> None:
        self.images, self.log_alpha = good["images"].clone(), good["log_alpha"].clone()
        self.opt_img.buf = None if good["m_img"] is None else good["m_img"].clone()
        self.opt_alpha.buf = None if good["m_alpha"] is None else good["m_alpha"].clone()

    # ------------------------------------------------------------------ similarity / DOM
    def similarity(self, theta: torch.Tensor) -> tuple[dict, float, float]:
        feats = embed(self.student, theta, self.images)
        sims = class_similarity(feats, self.labels, self.data.num_classes)
        rep = detect(sims, self.cfg.tau)
        return sims, rep.overlap_ratio, rep.mean_similarity

    def dom_check(self, it: int, reason: str) -> int:
        """Detect overlaps at the current target epoch; re-seed and start retraining."""
        cfg = self.cfg
        target = self.schedule.stage_targets()[self.schedule.stage]
        theta = self.traj.get(0, target)
        feats = embed(self.student, theta, self.images)
        sims = class_similarity(feats, self.labels, self.data.num_classes)
        rep = detect(sims, cfg.tau)
        self.counters["dom_checks"] += 1
        chosen: dict[int, int] = {}
        before = self.images.detach().cpu().clone()
        if rep.replace:
            gen = generator(cfg.seed, it, "dom")
            chosen = farthest_real(self.student, theta, self.images, self.labels, rep.replace,
                                   self.data.train.x, self.data.train.y, gen, cfg.dom_pool)
            rows = sorted(chosen)
            with torch.no_grad():
                for i in rows:
                    self.images[i] = self.data.train.x[chosen[i]].to(self.device)
            self.opt_img.reset_rows(rows)
            if cfg.retrain_iterations > 0:
                self.retrain = {"rows": rows, "left": cfg.retrain_iterations,
                                "total": cfg.retrain_iterations, "since": it}
            self.counters["replaced"] += len(rows)
        row = {"iteration": it, "reason": reason, "stage": self.schedule.stage, "target": target,
               "tau": cfg.tau, **{k: v for k, v in rep.to_dict().items() if k != "pairs"},
               "pairs": [[i, j, round(s, 6)] for i, j, s in rep.pairs],
               "real_indices": {str(k): v for k, v in chosen.items()},
               "file": f"dom/event_{it:06d}.npz"}
        sim_arrays = {f"sim_class{c}": s.cpu().numpy() for c, (_, s) in sims.items()}
        with atomic_path(self.out / row["file"]) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, before=before.numpy(), after=self.images.detach().cpu().numpy(),
                         labels=self.labels.cpu().numpy(), replaced=np.array(sorted(chosen), dtype=np.int64),
                         real_indices=np.array([chosen[i] for i in sorted(chosen)], dtype=np.int64),
                         **sim_arrays)
        self.log.event(self.log.dom, row)
        return len(chosen)

    # ------------------------------------------------------------------ evaluation
    def val_config(self) -> EvalConfig:
        """The selection networks: trained exactly as the test networks are (epochs,
        schedule, augmentation, lr = α), from the val seed range (mdd.seeds)."""
        cfg = self.cfg
        return EvalConfig(models=cfg.val_models, epochs=cfg.val_epochs, seed=cfg.seed,
                          device=cfg.device)

    def is_candidate(self, it: int) -> bool:
        """Candidates (fixed before any number is seen): every ``eval_every`` iterations
        and the last; the initialization only with ``select_init``."""
        return it > 0 or self.cfg.select_init

    def evaluate_val(self, it: int) -> dict:
        alpha = float(self.log_alpha.exp())
        try:
            res = evaluate_set(self.images.detach().cpu(), self.labels.cpu(), self.data,
                               self.val_config(), lr=alpha, split="val", progress=False)
        except ValueError as e:   # training diverged (NaN scores): never selected
            warnings.warn(f"val evaluation at iteration {it} failed ({e}); not a candidate")
            nan = float("nan")
            res = {"acc_mean": nan, "acc_std": nan, "bacc_mean": nan, "bacc_std": nan,
                   "auc_mean": nan, "auc_std": nan, "accs": [], "baccs": [], "aucs": [],
                   "val_seeds": [], "seconds": 0.0}
        row = {"iteration": it, "alpha": alpha, "candidate": self.is_candidate(it),
               **{k: res[k] for k in ("acc_mean", "acc_std", "bacc_mean", "bacc_std", "auc_mean",
                                      "auc_std", "accs", "baccs", "aucs", "val_seeds", "seconds")}}
        key = self.selection_key(row)
        best = None if self.best is None else self.selection_key(self.best)
        if row["candidate"] and math.isfinite(key[0]) and (best is None or key > best):
            self.best = row
            self.best_images = self.images.clone()
            self.best_log_alpha = self.log_alpha.clone()
        self.log.event(self.log.evals, row)
        return strict(row)

    def selection_key(self, row: dict) -> tuple[float, float]:
        """What a val evaluation is ranked by: AUC, ties by balanced accuracy (the
        protocol, DESIGN.md §2). At ipc 1–2 on an imbalanced binary set val accuracy
        mostly says which class a few networks favour; ``select="acc"`` (ties: AUC)
        stays for the record of that ablation."""
        acc, auc = row["acc_mean"], row["auc_mean"]
        bacc = row.get("bacc_mean", float("nan"))
        return (acc, auc) if self.cfg.select == "acc" else (auc, bacc)

    def save_snapshot(self, it: int, sims: dict | None) -> None:
        path = self.out / "snapshots" / f"iter_{it:06d}.npz"
        arrays = {"x": self.images.detach().cpu().numpy(), "y": self.labels.cpu().numpy(),
                  "alpha": np.array(float(self.log_alpha.exp())), "iteration": np.array(it)}
        if sims:
            arrays.update({f"sim_class{c}": s.cpu().numpy() for c, (_, s) in sims.items()})
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)

    # ------------------------------------------------------------------ loop
    def run(self, stop_after: int | None = None) -> dict:
        """Run or resume, holding the run folder's lock: a second writer of the same
        ``out`` is refused (mdd.locks); a killed one's lock goes with its process."""
        self.out.mkdir(parents=True, exist_ok=True)
        with folder_lock(self.out, "mdd distill"):
            remove_partial_writes(self.out)   # temp files of writes a kill cut short
            return self._run(stop_after)

    def _run(self, stop_after: int | None = None) -> dict:
        cfg = self.cfg
        self.init_state()
        resumed = self.load_checkpoint()
        write_json(self.out / CONFIG, cfg.to_dict())
        self.log = RunLog(self.out, self.iteration if resumed else -1)
        if not resumed:
            self.evaluate_val(0)    # logged for reference; a candidate only with select_init
            self.save_snapshot(0, None)
            self.save_checkpoint()
        self.sim_theta = self.traj.get(0, self.experts.epochs)
        good = self.snapshot_good()
        last_ckpt = time.monotonic()
        bar = tqdm(total=cfg.iterations, initial=self.iteration, desc=f"distill {cfg.method}",
                   disable=not cfg.progress)
        while self.iteration < cfg.iterations:
            it = self.iteration
            t0 = time.perf_counter()
            w, phase = self.window(it)
            res = self.compute(self.problem(it, w))
            loss = float(res.loss)
            rows = self.retrain["rows"] if self.retrain is not None else None
            skipped = False
            if not res.finite():
                skipped = True
                self.counters["nonfinite"] += 1
                self.restore_good(good)
            elif cfg.skip_loss_above is not None and loss > cfg.skip_loss_above:
                # the images skip this window; α still learns from it, or a loss above
                # the bound from the first iteration would skip every update forever
                skipped = True
                self.counters["loss_skips"] += 1
                self.apply(res, rows, images=False)
                good = self.snapshot_good()
            else:
                self.apply(res, rows)
                if not (torch.isfinite(self.images).all() and torch.isfinite(self.log_alpha)):
                    skipped = True
                    self.counters["nonfinite"] += 1
                    self.restore_good(good)
                else:
                    good = self.snapshot_good()
            self.counters["skips"] += int(skipped)

            replaced, stage_changed = 0, False
            if phase == "retrain":
                self.retrain["left"] -= 1
                if self.retrain["left"] <= 0:
                    self.retrain = None
            else:
                stage_changed = self.schedule.observe(it, loss)
            if self.dom and self.retrain is None and (stage_changed or (it + 1) % cfg.dom_every == 0):
                replaced = self.dom_check(it, "stage" if stage_changed else "periodic")
                good = self.snapshot_good()

            sims, ratio, msim = None, None, None
            if cfg.log_similarity_every and (it + 1) % cfg.log_similarity_every == 0:
                sims, ratio, msim = self.similarity(self.sim_theta)
            gn = float(res.grad_images.norm()) if res.grad_images is not None else float("nan")
            self.iteration = it + 1
            dt = time.perf_counter() - t0
            self.elapsed += dt
            self.log.row({"iteration": it, "phase": phase, "loss": _finite(loss),
                          "alpha": float(self.log_alpha.exp()), "grad_norm": _finite(gn),
                          "grad_alpha": _finite(float(res.grad_alpha)) if res.grad_alpha is not None else None,
                          "expert": w.expert, "start": w.start, "target": w.target, "steps": w.steps,
                          "stage": w.stage, "overlap_ratio": ratio, "mean_similarity": msim,
                          "replaced": replaced, "skipped": skipped, "skips": self.counters["skips"],
                          "nonfinite": self.counters["nonfinite"], "seconds": round(dt, 4),
                          "elapsed": round(self.elapsed, 3)})
            if cfg.snapshot_every and self.iteration % cfg.snapshot_every == 0:
                self.save_snapshot(self.iteration, sims)
            if self.iteration == cfg.iterations or (cfg.eval_every and self.iteration % cfg.eval_every == 0):
                self.evaluate_val(self.iteration)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", alpha=f"{float(self.log_alpha.exp()):.2e}",
                            stage=w.stage, refresh=False)
            due = (cfg.checkpoint_every and self.iteration % cfg.checkpoint_every == 0) or \
                time.monotonic() - last_ckpt >= cfg.checkpoint_every_s
            if due:
                self.save_checkpoint()
                last_ckpt = time.monotonic()
            if stop_after is not None and self.iteration >= stop_after:
                bar.close()
                self.save_checkpoint()
                return {"stopped_at": self.iteration}
        bar.close()
        self.save_checkpoint()
        return self.finish()

    def finish(self) -> dict:
        """Score the selected images and the last iterate on test (K networks from the
        test seed range), save the selected images as the artifact, write result.json."""
        cfg = self.cfg
        ec = EvalConfig(models=cfg.test_models, epochs=cfg.test_epochs, seed=cfg.seed, device=cfg.device)
        y = self.labels.cpu()
        last_alpha = float(self.log_alpha.exp())
        if self.best is None:   # no finite candidate: report the last iterate, say so
            warnings.warn("no val evaluation gave a finite AUC; the last iterate is reported")
            self.best = {"iteration": self.iteration, "alpha": last_alpha, "fallback": "last"}
            self.best_images, self.best_log_alpha = self.images.clone(), self.log_alpha.clone()
        val = self.best
        alpha = float(self.best_log_alpha.exp())
        x = self.best_images.detach().cpu()
        test = evaluate_set(x, y, self.data, ec, lr=alpha, split="test", progress=cfg.progress)
        if val["iteration"] == self.iteration:
            last = test
        else:
            last = evaluate_set(self.images.detach().cpu(), y, self.data, ec, lr=last_alpha,
                                split="test", progress=cfg.progress)
        vc = self.val_config()
        selection = {"metric": cfg.select, "ties": "bacc" if cfg.select == "auc" else "auc",
                     "models": vc.models, "epochs": vc.epochs, "seeds": val.get("val_seeds", []),
                     "iteration": val["iteration"], "alpha": alpha,
                     "candidates": "every eval_every iterations and the last"
                                   + (" and the init" if cfg.select_init else ""),
                     "eval_every": cfg.eval_every,
                     **{f"val_{k}": val.get(f"{k}_mean") for k in ("acc", "bacc", "auc")}}
        last_fields = {"iteration": self.iteration, "alpha": last_alpha,
                       **{k: last[k] for k in METRIC_FIELDS}}
        proto = protocol(ec)
        info = {"flag": cfg.flag, "size": cfg.size, "ipc": cfg.ipc, "method": cfg.method,
                "alpha": alpha, "num_classes": self.data.num_classes, "seed": cfg.seed,
                "task": self.data.task, "license": self.data.license,
                "experts": {"digest": self.experts.digest(), "folder": str(self.experts.folder),
                            "count": len(self.experts), "epochs": self.experts.epochs,
                            "width": self.student.width},
                "selected_iteration": val["iteration"], "iterations": cfg.iterations,
                "init_indices": self.init_indices,
                # DOM's re-seeds (set index ← train index), for the privacy audit's provenance
                "reseeds": [{"iteration": int(e["iteration"]), "index": int(k), "real_index": int(v)}
                            for e in read_dom_events(self.out)
                            for k, v in (e.get("real_indices") or {}).items()],
                "config": cfg.to_dict(), "versions": versions(), "protocol": proto,
                "results": {"val": _result_fields(val, vc.models, vc.epochs),
                            "test": _result_fields(test, cfg.test_models, cfg.test_epochs),
                            "selection": selection, "last": last_fields}}
        save_distilled(self.out / ARTIFACT_DIR, x, y, self.data.norm, info, self.data.class_names)
        summary = {"flag": cfg.flag, "size": cfg.size, "ipc": cfg.ipc, "kind": "distilled",
                   "method": cfg.method, "seed": cfg.seed, "alpha": alpha,
                   "selected_iteration": val["iteration"], "iterations": cfg.iterations,
                   "val_acc": val.get("acc_mean"), "val_bacc": val.get("bacc_mean"),
                   "val_auc": val.get("auc_mean"),
                   **{k: test[k] for k in ("split", *METRIC_FIELDS, "accs", "baccs", "aucs",
                                           "test_seeds", "lr", "n_train", "models", "epochs")},
                   "selection": selection, "last": last_fields, "protocol": proto,
                   "counters": self.counters, "distill_seconds": round(self.elapsed, 2),
                   "mode": self.mode, "out": str(self.out),
                   "artifact": str(self.out / ARTIFACT_DIR)}
        summary = strict(summary)
        write_json(self.out / RESULT, summary)
        return summary


#: The metric fields every result carries (mean ± std over the K networks).
METRIC_FIELDS = ("acc_mean", "acc_std", "bacc_mean", "bacc_std", "auc_mean", "auc_std")


def _result_fields(r: dict, models: int, epochs: int) -> dict:
    keep = ("iteration", *METRIC_FIELDS, "accs", "baccs", "aucs", "val_seeds", "test_seeds")
    return strict({**{k: r[k] for k in keep if k in r}, "models": models, "epochs": epochs})


def _diff(a: dict, b: dict) -> str:
    keys = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    return ", ".join(f"{k}: {a.get(k)!r} → {b.get(k)!r}" for k in keys[:6])


def _open_experts(cfg: DistillConfig) -> ExpertSet:
    folder = Path(cfg.experts)
    if not (folder / "manifest.json").is_file():
        raise FileNotFoundError(
            f"no experts at {folder} (no manifest.json); train them first: mdd experts --flag "
            f"{cfg.flag} --out {folder} --preset {cfg.preset or 'cpu'}")
    return ExpertSet(folder)


def _check_experts(cfg: DistillConfig, experts: ExpertSet) -> None:
    m = experts.manifest
    if m.get("flag") != cfg.flag:
        raise ValueError(f"experts in {experts.folder} were trained on {m.get('flag')}, not {cfg.flag}")
    if int(m.get("size", 28)) != cfg.size:
        raise ValueError(f"experts in {experts.folder} are for size {m.get('size')}, not {cfg.size}")
    if METHODS[cfg.method][0] != "ptm" and cfg.span > experts.epochs:
        raise ValueError(f"span M={cfg.span} exceeds the experts' {experts.epochs} epochs")


def _check_data(cfg: DistillConfig, experts: ExpertSet, data: mdata.MedMNIST) -> None:
    counts = torch.bincount(data.train.y, minlength=data.num_classes)
    small = int(counts.argmin())
    if cfg.ipc > int(counts[small]):
        raise ValueError(f"ipc={cfg.ipc} exceeds class {small} ({data.class_names[small]}), which "
                         f"has only {int(counts[small])} training images")
    got, want = np.array(experts.norm.mean + experts.norm.std), np.array(data.norm.mean + data.norm.std)
    if not np.allclose(got, want, atol=1e-5):
        raise ValueError(f"experts in {experts.folder} were trained with another normalization "
                         f"({experts.norm}) than {data.path} gives ({data.norm})")


def _make_schedule(cfg: DistillConfig, experts: ExpertSet) -> tuple[Schedule, bool]:
    kind, dom = METHODS[cfg.method]
    e, T = len(experts), experts.epochs
    if kind == "mtt":
        return MTTSchedule(e, T, cfg.max_start, cfg.span, cfg.steps), dom
    if kind == "datm":
        return DATMSchedule(e, T, cfg.max_start, cfg.span, cfg.steps, cfg.iterations,
                            cfg.max_start_init), dom
    stages = cfg.stages or default_stages(T, cfg.num_stages, cfg.max_target, cfg.first_target)
    stages = [t for t in stages if cfg.start_epoch < t <= T] or [T]
    per_stage = cfg.stage_iterations or max(1, cfg.iterations // len(stages))
    return PTMSchedule(e, T, stages, cfg.steps, per_stage, start=cfg.start_epoch,
                       step_rule=cfg.step_rule, max_steps=cfg.max_steps, advance=cfg.advance,
                       min_stage_iterations=cfg.min_stage_iterations,
                       plateau_window=cfg.plateau_window, plateau_tol=cfg.plateau_tol), dom


def distill(config: DistillConfig | None = None, explicit: set[str] | None = None,
            stop_after: int | None = None, **overrides: Any) -> dict:
    """Run (or resume, or return the finished) distillation described by ``config``.

    ``overrides`` set DistillConfig fields by name and count as explicit over a preset.
    Returns the summary written to ``result.json``: test acc/auc mean ± std of the
    selected images (the same fields as ``mdd baseline``), α, counters, paths.
    ``stop_after`` stops (with a checkpoint) after that many iterations (for tests and
    for splitting a run across sessions).
    """
    cfg = dataclasses.replace(config or DistillConfig(), **overrides)
    cfg = resolve(cfg, set(explicit or ()) | set(overrides))
    out = Path(cfg.out)
    done = out / RESULT
    if done.is_file():
        ckpt_id = read_json(out / CONFIG) if (out / CONFIG).is_file() else None
        if ckpt_id is not None and identity(DistillConfig(**ckpt_id)) != identity(cfg):
            raise ValueError(f"{out} holds a finished run with another configuration; use another "
                             f"--out or delete it ({_diff(identity(DistillConfig(**ckpt_id)), identity(cfg))})")
        return read_json(done)
    with torch_threads(cfg.threads), tf32(cfg.tf32), tuned_malloc(cfg.tuned_malloc):
        return DistillRun(cfg).run(stop_after=stop_after)


# ====================================================================== evaluate
def evaluate_distilled(path: str | os.PathLike, models: int = 5, epochs: int = 300, root=None,
                       split: str = "test", seed: int | None = None, device: str = "auto",
                       quantized: bool = False, progress: bool = True,
                       threads: int | None = None, arch: str = "convnet") -> dict:
    """Evaluate an artifact with the §2 protocol (lr = its learned α): the same fields as
    ``mdd baseline``. ``seed`` picks the networks' seed range (default: the artifact's
    distillation seed, so the default test networks are the ones its result.json
    reports); ``arch`` scores it on a network it was not distilled for. ``threads`` sets
    torch's threads for the call (1 suits a few images on a busy machine)."""
    ds = load_distilled(path, quantized=quantized)
    data = mdata.load(ds.flag, size=ds.size, root=root)
    got, want = ds.norm, data.norm
    if not np.allclose(np.array(got.mean + got.std), np.array(want.mean + want.std), atol=1e-5):
        raise ValueError(f"the distilled set was normalized with {got}, but {data.path} gives {want}")
    if seed is None:
        seed = int(ds.manifest.get("seed", 0))
    cfg = EvalConfig(models=models, epochs=epochs, seed=seed, device=device, threads=threads,
                     arch=arch)
    res = evaluate_set(ds.x, ds.y, data, cfg, lr=ds.lr, split=split, progress=progress)
    return strict({"flag": ds.flag, "size": ds.size, "ipc": ds.ipc, "kind": "distilled",
                       "method": ds.method, "seed": seed, "distilled": str(ds.path), **res,
                       "protocol": protocol(cfg)})


# ====================================================================== run-folder readers
def read_log(run: str | os.PathLike):
    """Per-iteration log of a run folder as a pandas DataFrame (columns: LOG_FIELDS)."""
    import pandas as pd
    return pd.DataFrame(_read_jsonl(Path(run) / "log.jsonl"), columns=list(LOG_FIELDS))


def read_evals(run: str | os.PathLike) -> list[dict]:
    """Every val evaluation of a run (iteration, alpha, acc/auc mean ± std, per model)."""
    return _read_jsonl(Path(run) / "evals.jsonl")


def list_snapshots(run: str | os.PathLike) -> list[tuple[int, Path]]:
    """(iteration, path) of every image snapshot, in order."""
    paths = sorted((Path(run) / "snapshots").glob("iter_*.npz"))
    return [(int(p.stem.split("_")[1]), p) for p in paths]


def load_snapshot(path: str | os.PathLike) -> dict:
    """A snapshot: x (normalized M×C×H×W float32), y, alpha, iteration, and sim_class{c}
    (within-class cosine matrices) when logged at that iteration."""
    with np.load(path, allow_pickle=False) as z:
        out = {k: z[k] for k in z.files}
    out["alpha"], out["iteration"] = float(out["alpha"]), int(out["iteration"])
    return out


def read_dom_events(run: str | os.PathLike) -> list[dict]:
    """Every DOM check: iteration, reason, stage, target, overlap_ratio, mean_similarity,
    replace (set indices), real_indices, pairs, per_class, file (its npz)."""
    return _read_jsonl(Path(run) / "dom_events.jsonl")


def load_dom_event(run: str | os.PathLike, event: dict | int) -> dict:
    """The arrays of one DOM event (a row of read_dom_events or its iteration): before,
    after (M×C×H×W), labels, replaced, real_indices, sim_class{c}."""
    if isinstance(event, int):
        event = next(e for e in read_dom_events(run) if e["iteration"] == event)
    with np.load(Path(run) / event["file"], allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


# ====================================================================== CLI
_CLI_FIELDS: dict[str, tuple[type, str]] = {
    "iterations": (int, "matching iterations"),
    "steps": (int, "N, unrolled student steps"),
    "batch_syn": (int, "synthetic images per step (default: all)"),
    "lr_images": (float, "image learning rate"),
    "lr_alpha": (float, "learning rate of log α"),
    "alpha_init": (float, "initial student step size α₀"),
    "span": (int, "MTT/DATM: M, target = start + M"),
    "max_start": (int, "MTT/DATM: T⁺"),
    "num_stages": (int, "PTM: K stages"),
    "max_target": (int, "PTM: cap on T_K"),
    "stage_iterations": (int, "PTM: iterations per stage"),
    "tau": (float, "DOM: cosine threshold τ"),
    "dom_every": (int, "DOM: P, iterations between checks"),
    "retrain_iterations": (int, "DOM: R, retraining iterations"),
    "skip_loss_above": (float, "skip updates whose loss exceeds this (DATM)"),
    "eval_every": (int, "iterations between val evaluations"),
    "val_models": (int, "networks per val evaluation"),
    "val_epochs": (int, "epochs per val evaluation"),
    "test_models": (int, "networks of the final test evaluation"),
    "test_epochs": (int, "epochs of the final test evaluation"),
    "snapshot_every": (int, "iterations between image snapshots"),
    "threads": (int, "torch threads"),
    "checkpoint_every_s": (float, "seconds between checkpoints"),
}


def _distill_cli(args: argparse.Namespace) -> dict:
    explicit = {"flag", "ipc", "method"}
    kw: dict[str, Any] = dict(flag=args.flag, ipc=args.ipc, method=args.method, preset=args.preset,
                              seed=args.seed, device=args.device, size=args.size,
                              progress=not args.quiet)
    for name in ("experts", "out", "root"):
        if getattr(args, name) is not None:
            kw[name] = getattr(args, name)
    for name in _CLI_FIELDS:
        v = getattr(args, name)
        if v is not None:
            kw[name] = v
            explicit.add(name)
    for name in ("advance", "step_rule", "init", "mode", "select"):
        v = getattr(args, name)
        if v is not None:
            kw[name] = v
            explicit.add(name)
    if args.compile is not None:
        kw["compile"] = args.compile
        explicit.add("compile")
    if args.tf32:
        kw["tf32"] = True
    if args.no_augment:
        kw["augment"] = False
        explicit.add("augment")
    return distill(DistillConfig(**kw), explicit=explicit)


def _evaluate_cli(args: argparse.Namespace) -> dict:
    return evaluate_distilled(args.distilled, models=args.models, epochs=args.epochs, root=args.root,
                              split=args.split, seed=args.seed, device=args.device,
                              quantized=args.quantized, threads=args.threads, arch=args.arch)


def register_cli(sub: argparse._SubParsersAction) -> None:
    from .cli import add_common
    p = sub.add_parser("distill", help="distill a MedMNIST flag (MTT, PTM, PTM + DOM)")
    p.add_argument("--flag", required=True)
    p.add_argument("--ipc", type=int, required=True, help="images per class")
    p.add_argument("--method", choices=tuple(METHODS), default="ptm+dom")
    p.add_argument("--experts", default=None,
                   help="experts folder (default runs/experts/FLAG-PRESET)")
    p.add_argument("--out", default=None, help="run folder (default runs/distill/FLAG-ipcI-METHOD)")
    p.add_argument("--preset", choices=tuple(PRESETS), default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--device", default="auto")
    for name, (typ, help_) in _CLI_FIELDS.items():
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=typ, default=None, help=help_)
    p.add_argument("--advance", choices=("fixed", "plateau"), default=None, help="PTM stage advance")
    p.add_argument("--step-rule", dest="step_rule", choices=("fixed", "grow"), default=None,
                   help="PTM: fixed N or N growing with the segment")
    p.add_argument("--init", choices=("real", "noise"), default=None)
    p.add_argument("--select", choices=("acc", "auc"), default=None,
                   help="val metric that picks the reported images (default auc, ties by "
                        "balanced accuracy: the protocol; acc only for ablations)")
    p.add_argument("--mode", choices=("auto", "adjoint", "unrolled"), default=None,
                   help="how the unroll is differentiated (default auto: by memory)")
    p.add_argument("--compile", dest="compile", action="store_true", default=None,
                   help="torch.compile the adjoint's reverse step (default: in adjoint mode)")
    p.add_argument("--no-compile", dest="compile", action="store_false",
                   help="run the adjoint eager")
    p.add_argument("--tf32", action="store_true",
                   help="allow TF32 on CUDA (faster; matching gradients lose precision)")
    p.add_argument("--no-augment", action="store_true", help="no augmentation in the unroll")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_common(p)
    p.set_defaults(handler=_distill_cli)

    e = sub.add_parser("evaluate", help="evaluate a distilled set (same fields as mdd baseline)")
    e.add_argument("--distilled", required=True, help="artifact folder (or a run folder)")
    e.add_argument("--models", type=int, default=5, help="K fresh networks")
    e.add_argument("--epochs", type=int, default=EvalConfig.epochs)
    e.add_argument("--split", choices=("val", "test"), default="test")
    e.add_argument("--seed", type=int, default=None,
                   help="seed range of the networks (default: the artifact's distillation seed)")
    e.add_argument("--arch", choices=ARCHS, default="convnet",
                   help="evaluation network (cross-architecture: convnet-d4, resnet18)")
    e.add_argument("--device", default="auto")
    e.add_argument("--threads", type=int, default=None,
                   help="torch threads (1 is fastest for a few images on a busy 2-core machine)")
    e.add_argument("--quantized", action="store_true",
                   help="use the uint8 MedMNIST arrays instead of the exact learned images")
    add_common(p=e)
    e.set_defaults(handler=_evaluate_cli)
