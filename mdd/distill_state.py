"""What a distillation run learns and how it moves (engine v2): the synthetic images,
α and the optional soft labels with their optimisers, α's calibration before any
image moves, its rescaling at PTM stage changes, and the checkpoint that holds all of
it (:class:`RunState`, the base of :class:`mdd.distill_run.DistillRun`).

A checkpoint (``checkpoint.safetensors``) holds every tensor — images, labels, log α,
the optimisers' buffers, the best images so far, the image sets of val evaluations
still queued in the background — and, in its metadata, the iteration counters, the
schedule's state, DOM's used real images, the calibration and the run's identity.
Randomness is counter-based, so that is all a resume needs.
"""
from __future__ import annotations

import json
import math

import torch
from safetensors import safe_open
from safetensors.torch import save as st_save

from . import optim
from .baselines import random_subset
from .datm import correct_subset, expert_soft_labels
from .distill_config import CHECKPOINT, config_diff, identity
from .io import atomic_path, write_json
from .matching import MatchResult
from .run_setup import generator, segment_steps
from .schedules import PTMSchedule
from .val_worker import ValJob

CALIBRATION = "alpha_calibration.json"


class RunState:
    """Images, labels, α, their optimisers and counters; checkpoint I/O. Needs
    ``cfg``, ``data``, ``device``, ``student``, ``traj``, ``experts``, ``schedule``,
    ``dom_space`` and ``out`` from the subclass."""

    # ------------------------------------------------------------------ fresh state
    def init_state(self) -> None:
        cfg = self.cfg
        if cfg.init == "real-correct":   # DATM: real images the trained expert gets right
            last = self.traj.get(0, self.experts.positions)
            x_real, y, idx = correct_subset(self.data, cfg.ipc, cfg.seed, self.student, last)
        else:
            x_real, y, idx = random_subset(self.data, cfg.ipc, seed=cfg.seed)
        if cfg.init == "noise":
            g = torch.Generator().manual_seed(cfg.seed)
            x_real = torch.randn(x_real.shape, generator=g)
        self.images = x_real.clone().float().to(self.device)
        self.labels = y.clone().to(self.device)
        self.label_logits = None
        if cfg.soft_labels:   # DATM: learnable, from the trained expert's logits
            last = self.traj.get(0, self.experts.positions)
            self.label_logits = expert_soft_labels(self.student, last, self.images).float()
        self.init_indices = idx.tolist()
        self.log_alpha = torch.tensor(math.log(cfg.alpha_init), device=self.device)
        self.opt_img = optim.make(cfg.image_opt, cfg.lr_images, cfg.momentum)
        self.opt_alpha = optim.make(cfg.alpha_opt, cfg.lr_alpha, cfg.momentum)
        self.opt_labels = optim.make("adam", cfg.lr_labels)
        self.iteration = self.main = 0
        self.retrain: dict | None = None
        self.counters = {"skips": 0, "nonfinite": 0, "loss_skips": 0, "replaced": 0,
                         "dom_checks": 0}
        self.best: dict | None = None
        self.best_images = self.images.clone()
        self.best_log_alpha = self.log_alpha.clone()
        self.best_label_logits = None if self.label_logits is None else self.label_logits.clone()
        self.calibration: dict | None = None
        self.elapsed = 0.0
        self.dom_space.used = set(self.init_indices)
        self.requeue: list[ValJob] = []

    def queued_val(self) -> list[ValJob]:
        """Val evaluations asked for and not yet filed (the background queue's)."""
        return []

    def train_labels(self, best: bool = False) -> torch.Tensor:
        """What networks train on: hard labels M, or soft label probabilities M×K."""
        logits = self.best_label_logits if best else self.label_logits
        return self.labels.cpu() if logits is None else logits.detach().softmax(1).cpu()

    # ------------------------------------------------------------------ checkpoint
    def _optimisers(self) -> dict:
        return {"opt_img": self.opt_img, "opt_alpha": self.opt_alpha, "opt_labels": self.opt_labels}

    def state_tensors(self) -> dict[str, torch.Tensor]:
        t = {"images": self.images, "labels": self.labels, "log_alpha": self.log_alpha.reshape(1),
             "best_images": self.best_images, "best_log_alpha": self.best_log_alpha.reshape(1)}
        if self.label_logits is not None:
            t["label_logits"], t["best_label_logits"] = self.label_logits, self.best_label_logits
        for name, opt in self._optimisers().items():
            t.update({f"{name}.{k}": v.reshape(-1) if v.ndim == 0 else v
                      for k, v in opt.state().items()})
        for i, job in enumerate(self.queued_val()):
            t[f"queued.{i}.images"], t[f"queued.{i}.log_alpha"] = job.images, job.log_alpha.reshape(1)
            if job.label_logits is not None:
                t[f"queued.{i}.label_logits"] = job.label_logits
        return {k: v.detach().cpu().contiguous() for k, v in t.items()}

    def state_meta(self) -> dict:
        return {"iteration": self.iteration, "main": self.main,
                "schedule": self.schedule.state_dict(), "retrain": self.retrain,
                "counters": self.counters, "best": self.best, "elapsed": self.elapsed,
                "init_indices": self.init_indices, "used": sorted(self.dom_space.used),
                "calibration": self.calibration,
                "queued_val": [[job.it, job.main] for job in self.queued_val()],
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
                             f"--out or delete it ({config_diff(meta['identity'], identity(self.cfg))})")
        dev = self.device
        self.images, self.labels = t["images"].to(dev), t["labels"].to(dev)
        self.log_alpha = t["log_alpha"][0].to(dev)
        self.best_images = t["best_images"].to(dev)
        self.best_log_alpha = t["best_log_alpha"][0].to(dev)
        if "label_logits" in t:
            self.label_logits = t["label_logits"].to(dev)
            self.best_label_logits = t["best_label_logits"].to(dev)
        for name, opt in self._optimisers().items():
            opt.load({k.split(".", 1)[1]: v.to(dev) for k, v in t.items()
                      if k.startswith(name + ".")})
        self.iteration, self.main = int(meta["iteration"]), int(meta["main"])
        self.schedule.load_state_dict(meta["schedule"])
        self.retrain, self.counters, self.best = meta["retrain"], meta["counters"], meta["best"]
        self.elapsed, self.init_indices = float(meta["elapsed"]), meta["init_indices"]
        self.dom_space.used = set(meta["used"])
        self.calibration = meta["calibration"]
        # a checkpoint does not wait for the background queue: what was still queued
        # is asked again, first, and files exactly what it would have filed
        self.requeue = [ValJob(it, main, t[f"queued.{i}.images"].to(dev),
                               t[f"queued.{i}.log_alpha"][0].to(dev),
                               t[f"queued.{i}.label_logits"].to(dev)
                               if f"queued.{i}.label_logits" in t else None)
                        for i, (it, main) in enumerate(meta.get("queued_val", []))]
        return True

    # ------------------------------------------------------------------ one outer step
    def apply(self, res: MatchResult, rows: list[int] | None, images: bool = True) -> None:
        """One outer step: images (all, or only ``rows`` while DOM retrains them), soft
        labels, and α (frozen during a retrain); ``images=False`` moves α alone."""
        cfg = self.cfg
        r = torch.tensor(rows, device=self.device) if rows is not None else None
        if images:
            lr = optim.warmup_lr(cfg.lr_images, self.main, cfg.lr_images_warmup)
            self.opt_img.step(self.images, res.grad_images.to(self.device), r, lr=lr)
            if self.label_logits is not None and res.grad_labels is not None:
                self.opt_labels.step(self.label_logits, res.grad_labels.to(self.device), r)
        if rows is None:   # α is frozen while DOM retrains a few images
            self.opt_alpha.step(self.log_alpha, res.grad_log_alpha.to(self.device))
            self.clamp_alpha()

    def clamp_alpha(self) -> None:
        # α = exp(log α) > 0 by construction; the bounds stop a runaway α from making
        # the unroll (and the evaluation, which trains with α) overflow, or underflow
        # to an α of exactly 0, whose gradient is 0 forever
        lo, hi = math.log(self.cfg.alpha_min), math.log(self.cfg.alpha_max)
        if not lo < float(self.log_alpha) < hi:
            # at a bound the optimiser's state would keep winding up against the clamp
            # and hold α there long after the gradient turned
            self.opt_alpha.reset()
        self.log_alpha.clamp_(lo, hi)

    def snapshot_good(self) -> dict:
        clone = lambda d: {k: v.clone() for k, v in d.items()}   # noqa: E731
        return {"images": self.images.clone(), "log_alpha": self.log_alpha.clone(),
                "labels": None if self.label_logits is None else self.label_logits.clone(),
                **{name: clone(opt.state()) for name, opt in self._optimisers().items()}}

    def restore_good(self, good: dict) -> None:
        self.images, self.log_alpha = good["images"].clone(), good["log_alpha"].clone()
        if good["labels"] is not None:
            self.label_logits = good["labels"].clone()
        for name, opt in self._optimisers().items():
            opt.load({k: v.clone() for k, v in good[name].items()})

    # ------------------------------------------------------------------ α
    def calibrate_alpha(self) -> None:
        """α₀ before any image moves (``alpha_init_rule``): ``fixed`` keeps alpha_init;
        ``expert`` takes lr_expert × the segment's expert steps / N; ``search`` takes
        the lowest mean matching loss on a ×2 grid of 5 values around that, walking on
        while the lowest is at an edge, over ``alpha_search`` problems drawn for it.
        Written to alpha_calibration.json."""
        cfg = self.cfg
        if cfg.alpha_init_rule == "fixed":
            self.calibration = {"rule": "fixed", "alpha": cfg.alpha_init}
            return
        w = self.schedule.window(0, generator(cfg.seed, -1, "calibrate"))
        seg = segment_steps(self.experts, w.start, w.target)
        center = optim.expert_alpha(self.experts.recipe.lr, seg, w.steps)
        record = {"rule": cfg.alpha_init_rule, "expert_lr": self.experts.recipe.lr,
                  "segment_steps": seg, "student_steps": w.steps, "expert_alpha": center}
        alpha = center
        if cfg.alpha_init_rule == "search":
            grid = optim.log_grid(center, 2.0, 5)
            losses = [self._mean_loss(a) for a in grid]
            # a minimum on the grid's edge is no minimum: walk on (×2 a step, at most 6)
            for _ in range(6):
                k = min(range(len(grid)), key=lambda i: losses[i])
                if 0 < k < len(grid) - 1:
                    break
                a = grid[0] / 2 if k == 0 else grid[-1] * 2
                if not cfg.alpha_min <= a <= cfg.alpha_max:
                    break
                loss = self._mean_loss(a)
                grid, losses = ([a] + grid, [loss] + losses) if k == 0 else (grid + [a], losses + [loss])
            alpha = grid[min(range(len(grid)), key=lambda i: losses[i])]
            record.update(grid=grid, losses=losses)
        lo, hi = cfg.alpha_min, cfg.alpha_max
        alpha = min(max(alpha, lo), hi)
        self.log_alpha = torch.tensor(math.log(alpha), device=self.device)
        self.best_log_alpha = self.log_alpha.clone()
        self.calibration = {**record, "alpha": alpha}
        write_json(self.out / CALIBRATION, self.calibration)

    def _mean_loss(self, alpha: float) -> float:
        """Mean matching loss at α over the calibration's problems (images unchanged)."""
        self.log_alpha = torch.tensor(math.log(alpha), device=self.device)
        vals = []
        for j in range(self.cfg.alpha_search):
            it = -2 - j
            w = self.schedule.window(0, generator(self.cfg.seed, it, "calibrate"))
            vals.append(float(self.compute(self.problem(it, w)).loss))
        return sum(vals) / len(vals) if all(map(math.isfinite, vals)) else math.inf

    def rescale_alpha(self, old_stage: int) -> float:
        """PTM, at a stage change with ``alpha_stage_rescale``: α × (segment_new / N_new) /
        (segment_old / N_old), so a longer target is reached in as many steps; α's
        optimiser restarts at the new scale. Returns the factor (1 when off)."""
        s = self.schedule
        if not (self.cfg.alpha_stage_rescale and isinstance(s, PTMSchedule)):
            return 1.0
        new = s.stage
        per = lambda k: (s.stages[k] - s.start) / s.steps_for(k)   # noqa: E731
        factor = per(new) / per(old_stage)
        self.log_alpha += math.log(factor)
        self.opt_alpha.reset()
        self.clamp_alpha()
        return factor
