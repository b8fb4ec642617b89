"""One distillation run's state and loop (:class:`DistillRun`, used by
:func:`mdd.distill.distill`): the matching step, checkpoints, DOM checks, val
evaluations for selection, and the final test scoring that writes the artifact and
``result.json``. Randomness is counter-based (:func:`generator`)."""
from __future__ import annotations

import hashlib
import json
import math
import time
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save as st_save
from tqdm.auto import tqdm

from . import data as mdata
from .artifact import ARTIFACT_DIR, save_distilled
from .augment import Augment
from .baselines import random_subset
from .distill_config import CHECKPOINT, CONFIG, METHODS, RESULT, DistillConfig, config_diff, identity
from .evaluate import EvalConfig, evaluate_set, protocol, resolve_device
from .experts import ExpertSet, versions
from .io import atomic_path, remove_partial_writes, strict, write_json
from .locks import folder_lock
from .matching import MatchProblem, MatchResult, Student, compile_kernels, match
from .overlap import class_similarity, detect, embed, farthest_real
from .run_folder import RunLog, read_dom_events
from .schedules import (DATMSchedule, MTTSchedule, PTMSchedule, Schedule, Window,
                        default_stages)


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
                             f"--out or delete it ({config_diff(meta['identity'], identity(self.cfg))})")
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
