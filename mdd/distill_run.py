"""One distillation run's loop (:class:`DistillRun`, used by :func:`mdd.distill.distill`):
the matching step, DOM checks, val evaluations for selection, and the final test
scoring that writes the artifact and ``result.json``. What the run learns, its
optimisers and checkpoints are :class:`mdd.distill_state.RunState`; what it is built
from (experts, schedule, randomness) is :mod:`mdd.run_setup`.

Iterations: ``cfg.iterations`` matching iterations ("main"); DOM's retraining
iterations come on top of them, so a re-seed never shortens the last stage. Val
evaluations happen after main iterations (every ``eval_every`` and the last), before
that iteration's DOM check, and no check runs in the last R main iterations: the
reported candidates never hold a re-seeded image that has not been trained."""
from __future__ import annotations

import math
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from . import data as mdata
from .artifact import ARTIFACT_DIR, save_distilled
from .augment import Augment, AugmentConfig
from .distill_config import CONFIG, RESULT, DistillConfig
from .distill_state import RunState
from .dom import DomSpace
from .evaluate import EvalConfig, evaluate_set, protocol, resolve_device
from .io import atomic_path, remove_partial_writes, strict, write_json
from .locks import folder_lock
from .matching import (MatchProblem, MatchResult, Student, compile_kernels, match,
                       mean_result)
from .mode_choice import ModeChoice, cached, measure, remember, shape_key
from .optim import rms, warmup_lr
from .provenance import versions
from .run_folder import RunLog, read_dom_events, read_evals
from .run_setup import (TrajectoryCache, check_data, check_experts, estimate_unrolled_bytes,
                        generator, make_schedule, open_experts, step_batches)
from .schedules import PTMSchedule, Window
from .val_worker import ValJob, ValWorker


# ====================================================================== helpers
def _warm(cfg: DistillConfig, main: int) -> float:
    return warmup_lr(cfg.lr_images, main, cfg.lr_images_warmup)


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


# ====================================================================== the run
class DistillRun(RunState):
    """State and loop of one run. Use :func:`distill`."""

    def __init__(self, cfg: DistillConfig):
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.device = resolve_device(cfg.device)
        self.experts = open_experts(cfg)
        check_experts(cfg, self.experts)
        self.data = mdata.load(cfg.flag, size=cfg.size, root=cfg.root)
        check_data(cfg, self.experts, self.data)
        self.net = self.experts.net().to(self.device)
        self.student = Student(self.net, self.experts.layout)
        self.augment_config = AugmentConfig(mode=cfg.augment_mode)
        self.augment = Augment(cfg.flag, self.augment_config).to(self.device) \
            if cfg.augment else None
        self.traj = TrajectoryCache(self.experts, self.device)
        self.schedule, self.dom = make_schedule(cfg, self.experts)
        self.dom_space = DomSpace(cfg, self.student, self.traj, self.experts, self.data)
        self.m = cfg.ipc * self.data.num_classes
        batch = self.m if cfg.batch_syn is None else min(cfg.batch_syn, self.m)
        steps = max(self._max_steps(), 1)
        self.mode_key = shape_key(self.device, batch, steps, self.student.width,
                                  self.data.train.x.shape[1], cfg.size, self.data.num_classes)
        self.mode_choice = self._initial_mode(batch, steps)   # mode "auto": timed at iteration 0
        # compiled: exact like eager, ~1.3x faster on the benchmark config; the first
        # iteration pays the compilation (about a minute on 2 cores, seconds once cached)
        want = cfg.compile if cfg.compile is not None else True
        self.kernels = compile_kernels(self.student) if want and self.mode != "unrolled" else None
        self.val_worker: ValWorker | None = None   # with val_background, while run() runs

    @property
    def mode(self) -> str:
        return self.mode_choice.mode

    def _initial_mode(self, batch: int, steps: int) -> ModeChoice:
        """The configured mode; adjoint where unrolled would not fit; a cached measurement;
        or ``auto``, to be measured (mdd.mode_choice)."""
        cfg = self.cfg
        if cfg.mode != "auto":
            return ModeChoice(cfg.mode, "config")
        need = estimate_unrolled_bytes(batch, steps, self.student.width, cfg.size)
        if need > cfg.unrolled_memory_gb * 2**30:
            return ModeChoice("adjoint", "memory")
        return cached(self.mode_key) or ModeChoice("auto", "pending")

    def _max_steps(self) -> int:
        if isinstance(self.schedule, PTMSchedule):
            return max(self.schedule.steps_for(k) for k in range(self.schedule.num_stages))
        return self.cfg.steps

    # ------------------------------------------------------------------ one iteration
    def window(self, it: int, e: int = 0) -> tuple[Window, str]:
        """Iteration ``it``'s window for its ``e``-th problem (``experts_per_iteration``;
        problem 0 draws what a one-problem run draws)."""
        gen = generator(self.cfg.seed, it, "window" if e == 0 else f"window/{e}")
        if self.retrain is not None:
            targets = self.schedule.stage_targets()
            lo, hi = targets[0], targets[self.schedule.stage]
            done = self.retrain["total"] - self.retrain["left"] + 1
            target = round(lo + (hi - lo) * done / self.retrain["total"])
            return self.schedule.window_for_target(target, gen), "retrain"
        return self.schedule.window(it, gen), "main"

    def problem(self, it: int, w: Window, e: int = 0) -> MatchProblem:
        gen = generator(self.cfg.seed, it, "batches" if e == 0 else f"batches/{e}")
        batches = [b.to(self.device) for b in step_batches(self.m, w.steps, self.cfg.batch_syn, gen)]
        seeds = torch.randint(0, 2**31 - 1, (w.steps,), generator=gen).tolist()
        return MatchProblem(self.traj.get(w.expert, w.start), self.traj.get(w.expert, w.target),
                            batches, seeds)

    def compute(self, prob: MatchProblem) -> MatchResult:
        """The matching loss and gradients (a seam the tests use to inject failures)."""
        labels = self.labels if self.label_logits is None else self.label_logits

        def call(mode: str) -> MatchResult:
            return match(self.student, self.images, labels, self.log_alpha, prob, self.augment,
                         mode, self.kernels)

        if self.mode != "auto":
            return call(self.mode)
        self.mode_choice, res = measure(call)
        remember(self.mode_key, self.mode_choice)
        if self.mode != "adjoint":
            self.kernels = None
        return res

    def compute_all(self, it: int, w: Window) -> MatchResult:
        """The mean result of iteration ``it``'s ``experts_per_iteration`` problems, the
        first in window ``w``; the others on threads of their own (one core each with
        one torch thread), except while the mode is being timed or with compiled
        kernels (torch.compile's dispatch is not meant for two threads at once)."""
        probs = [self.problem(it, w)] + [self.problem(it, self.window(it, e)[0], e)
                                        for e in range(1, self.cfg.experts_per_iteration)]
        done = [self.compute(probs.pop(0))] if self.mode == "auto" or len(probs) == 1 else []
        if self.kernels is None and len(probs) > 1:
            with ThreadPoolExecutor(len(probs)) as pool:
                done += list(pool.map(self.compute, probs))
        else:
            done += [self.compute(p) for p in probs]
        return mean_result(done)

    # ------------------------------------------------------------------ similarity / DOM
    def similarity(self) -> tuple[dict, float, float]:
        """Within-class similarities in one fixed space (the DOM space at the experts'
        last position), so that curves compare across iterations and methods."""
        pos = self.experts.positions
        sims = self.dom_space.similarities(self.images, self.labels, pos)
        rep = self.dom_space.detect(sims, pos)
        return sims, rep.overlap_ratio, rep.mean_similarity

    def dom_check(self, it: int, reason: str) -> int:
        """Detect overlaps (mdd.dom: its space and τ); re-seed and start retraining."""
        cfg = self.cfg
        target = self.schedule.stage_targets()[self.schedule.stage]
        pos = self.dom_space.position(target)
        sims = self.dom_space.similarities(self.images, self.labels, pos)
        rep = self.dom_space.detect(sims, pos)
        self.counters["dom_checks"] += 1
        chosen: dict[int, int] = {}
        before = self.images.detach().cpu().clone()
        if rep.replace:
            chosen = self.dom_space.reseed(self.images, self.labels, rep.replace, pos,
                                           generator(cfg.seed, it, "dom"))
            rows = sorted(chosen)
            with torch.no_grad():
                for i in rows:
                    self.images[i] = self.data.train.x[chosen[i]].to(self.device)
            self.opt_img.reset_rows(rows)
            if cfg.retrain_iterations > 0:
                self.retrain = {"rows": rows, "left": cfg.retrain_iterations,
                                "total": cfg.retrain_iterations, "since": it}
            self.counters["replaced"] += len(rows)
        tau = self.dom_space.reference(pos)[2] if cfg.tau_rule == "percentile" else cfg.tau
        row = {"iteration": it, "main_iteration": self.main, "reason": reason,
               "stage": self.schedule.stage, "target": target, "position": pos, "tau": tau,
               **{k: v for k, v in rep.to_dict().items() if k != "pairs"},
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

    def dom_due(self, stage_changed: bool) -> bool:
        """A check after this main iteration: every P main iterations and at a stage
        change, never while retraining, never in the last R main iterations."""
        cfg = self.cfg
        if not self.dom or self.retrain is not None:
            return False
        if self.main > cfg.iterations - max(cfg.retrain_iterations, 1):
            return False
        return stage_changed or self.main % cfg.dom_every == 0

    # ------------------------------------------------------------------ evaluation
    def val_config(self) -> EvalConfig:
        """The selection networks: trained exactly as the test networks are (epochs,
        schedule, augmentation, lr = α), from the val seed range (mdd.seeds)."""
        cfg = self.cfg
        return EvalConfig(models=cfg.val_models, epochs=cfg.val_epochs, seed=cfg.seed,
                          device=cfg.device, augment=self.augment_config)

    def is_candidate(self, it: int) -> bool:
        """Candidates (fixed before any number is seen): every ``eval_every`` iterations
        and the last; the initialization only with ``select_init``."""
        return it > 0 or self.cfg.select_init

    def evaluate_val(self, it: int) -> None:
        """Score the current images on val: now, or queued to the background worker
        (``val_background``); either way :meth:`record_val` files the result."""
        self.ask_val(ValJob(it, self.main, self.images.detach().clone(), self.log_alpha.detach().clone(),
                            None if self.label_logits is None else self.label_logits.detach().clone()))

    def ask_val(self, job: ValJob) -> None:
        x, lr = job.images.cpu(), float(job.log_alpha.exp())
        y = self.labels.cpu() if job.label_logits is None else job.label_logits.softmax(1).cpu()
        if self.val_worker is not None:
            self.val_worker.submit(job, x, y, self.val_config(), lr)
            return
        try:
            res: dict | Exception = evaluate_set(x, y, self.data, self.val_config(), lr=lr,
                                                 split="val", progress=False)
        except ValueError as e:   # training diverged (NaN scores)
            res = e
        self.record_val(job, res)

    def collect_val(self, wait: bool = False) -> None:
        """File the background evaluations that are done (all of them with ``wait``)."""
        if self.val_worker is not None:
            for job, res in self.val_worker.done(wait):
                self.record_val(job, res)

    def record_val(self, job: ValJob, res: dict | Exception) -> dict:
        """Log one val evaluation and keep its images if they are the best candidate."""
        if isinstance(res, Exception):
            if not isinstance(res, ValueError):
                raise res
            warnings.warn(f"val evaluation at iteration {job.it} failed ({res}); not a candidate")
            nan = float("nan")
            res = {"acc_mean": nan, "acc_std": nan, "bacc_mean": nan, "bacc_std": nan,
                   "auc_mean": nan, "auc_std": nan, "accs": [], "baccs": [], "aucs": [],
                   "val_seeds": [], "seconds": 0.0}
        row = {"iteration": job.it, "main_iteration": job.main,
               "alpha": float(job.log_alpha.exp()), "candidate": self.is_candidate(job.it),
               **{k: res[k] for k in ("acc_mean", "acc_std", "bacc_mean", "bacc_std", "auc_mean",
                                      "auc_std", "accs", "baccs", "aucs", "val_seeds", "seconds")}}
        key = self.selection_key(row)
        best = None if self.best is None else self.selection_key(self.best)
        if row["candidate"] and math.isfinite(key[0]) and (best is None or key > best):
            self.best = row
            self.best_images, self.best_log_alpha = job.images, job.log_alpha
            if job.label_logits is not None:
                self.best_label_logits = job.label_logits
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
            if self.cfg.val_background:
                self.val_worker = ValWorker(self.data)
            try:
                return self._run(stop_after)
            finally:
                if self.val_worker is not None:
                    self.val_worker.close()
                    self.val_worker = None

    def queued_val(self) -> list[ValJob]:
        return list(self.val_worker.pending) if self.val_worker is not None else []

    def save_checkpoint(self) -> None:
        # files what is done and saves the rest of the queue with the state: waiting for
        # the queue here would put the matching back behind the evaluations
        self.collect_val()
        super().save_checkpoint()

    def _run(self, stop_after: int | None = None) -> dict:
        cfg = self.cfg
        self.init_state()
        resumed = self.load_checkpoint()
        write_json(self.out / CONFIG, cfg.to_dict())
        self.log = RunLog(self.out, self.iteration if resumed else -1,
                          refile={job.it for job in self.requeue})
        for job in self.requeue:
            self.ask_val(job)
        self.requeue = []
        if not resumed:
            self.calibrate_alpha()   # before any image moves
            self.evaluate_val(0)     # logged for reference; a candidate only with select_init
            self.save_snapshot(0, None)
            self.save_checkpoint()
        good = self.snapshot_good()
        last_ckpt = time.monotonic()
        bar = tqdm(total=cfg.iterations, initial=self.main, desc=f"distill {cfg.method}",
                   disable=not cfg.progress)
        while self.main < cfg.iterations:
            it = self.iteration
            t0 = time.perf_counter()
            w, phase = self.window(it)
            res = self.compute_all(it, w)
            loss = float(res.loss)
            rows = self.retrain["rows"] if self.retrain is not None else None
            before = self.images.clone()
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
            dx = rms(self.images - before)

            replaced, stage_changed = 0, False
            if phase == "retrain":
                self.retrain["left"] -= 1
                if self.retrain["left"] <= 0:
                    self.retrain = None
            else:
                old_stage = self.schedule.stage
                stage_changed = self.schedule.observe(it, loss)
                self.main += 1
                bar.update(1)
                if stage_changed:
                    self.rescale_alpha(old_stage)
                    good = self.snapshot_good()

            sims, ratio, msim = None, None, None
            if cfg.log_similarity_every and (it + 1) % cfg.log_similarity_every == 0:
                sims, ratio, msim = self.similarity()
            gn = float(res.grad_images.norm()) if res.grad_images is not None else float("nan")
            self.iteration = it + 1
            dt = time.perf_counter() - t0
            self.elapsed += dt
            if phase == "main":
                # evaluate before this iteration's DOM check: a candidate never holds an
                # untrained re-seed
                if self.main == cfg.iterations or (cfg.eval_every and self.main % cfg.eval_every == 0):
                    self.evaluate_val(self.iteration)
                if self.dom_due(stage_changed):
                    replaced = self.dom_check(it, "stage" if stage_changed else "periodic")
                    good = self.snapshot_good()
            self.log.row({"iteration": it, "phase": phase, "loss": _finite(loss),
                          "alpha": float(self.log_alpha.exp()), "grad_norm": _finite(gn),
                          "grad_alpha": _finite(float(res.grad_alpha)) if res.grad_alpha is not None else None,
                          "expert": w.expert, "start": w.start, "target": w.target, "steps": w.steps,
                          "stage": w.stage, "overlap_ratio": ratio, "mean_similarity": msim,
                          "replaced": replaced, "skipped": skipped, "skips": self.counters["skips"],
                          "nonfinite": self.counters["nonfinite"], "dx_rms": round(dx, 8),
                          "lr_images": cfg.lr_images if phase == "retrain" else
                          _warm(cfg, self.main - 1), "main_iteration": self.main,
                          "seconds": round(dt, 4), "elapsed": round(self.elapsed, 3),
                          "mode": self.mode})
            if cfg.snapshot_every and self.iteration % cfg.snapshot_every == 0:
                self.save_snapshot(self.iteration, sims)
            self.collect_val()
            bar.set_postfix(loss=f"{loss:.4f}", alpha=f"{float(self.log_alpha.exp()):.2e}",
                            stage=w.stage, refresh=False)
            due = (cfg.checkpoint_every and self.iteration % cfg.checkpoint_every == 0) or \
                time.monotonic() - last_ckpt >= cfg.checkpoint_every_s
            if due:
                self.save_checkpoint()
                last_ckpt = time.monotonic()
            if stop_after is not None and self.main >= stop_after and phase == "main":
                bar.close()
                self.save_checkpoint()
                return {"stopped_at": self.main}   # matching iterations done
        bar.close()
        self.collect_val(wait=True)
        self.save_checkpoint()
        return self.finish()

    def finish(self) -> dict:
        """Score the selected images and the last iterate on test (K networks from the
        test seed range), save the selected images as the artifact, write result.json."""
        cfg = self.cfg
        ec = EvalConfig(models=cfg.test_models, epochs=cfg.test_epochs, seed=cfg.seed,
                        device=cfg.device, augment=self.augment_config)
        y = self.labels.cpu()
        last_alpha = float(self.log_alpha.exp())
        if self.best is None:   # no finite candidate: report the last iterate, say so
            warnings.warn("no val evaluation gave a finite AUC; the last iterate is reported")
            self.best = {"iteration": self.iteration, "alpha": last_alpha, "fallback": "last"}
            self.best_images, self.best_log_alpha = self.images.clone(), self.log_alpha.clone()
            self.best_label_logits = self.label_logits
        val = self.best
        alpha = float(self.best_log_alpha.exp())
        x = self.best_images.detach().cpu()
        last_images = self.images.detach().cpu()
        # with a background worker, the last iterate is scored there while the selected
        # set is scored here (the same networks and numbers either way)
        pending = None if val["iteration"] == self.iteration or self.val_worker is None else \
            self.val_worker.score(last_images, self.train_labels(), ec, last_alpha, "test")
        test = evaluate_set(x, self.train_labels(best=True), self.data, ec, lr=alpha, split="test",
                            progress=cfg.progress)
        if val["iteration"] == self.iteration:
            last = test
        elif pending is not None:
            last = pending.result()
        else:
            last = evaluate_set(last_images, self.train_labels(), self.data, ec,
                                lr=last_alpha, split="test", progress=cfg.progress)
        val_s = sum(e.get("seconds") or 0.0 for e in read_evals(self.out))
        test_s = test["seconds"] + (0.0 if last is test else last["seconds"])
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
                            "count": len(self.experts), "positions": self.experts.positions,
                            "snapshot_unit": self.experts.snapshot_unit,
                            "snapshot_steps": self.experts.position_steps,
                            "width": self.student.width},
                "alpha_calibration": self.calibration,
                "soft_labels": None if self.best_label_logits is None else
                self.train_labels(best=True).tolist(),
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
                   # compute seconds by part (their sum: "seconds"); with val_background the
                   # wall time is less than the sum
                   "seconds": round(self.elapsed + val_s + test_s, 1),
                   "seconds_parts": {"matching": round(self.elapsed, 1), "val": round(val_s, 1),
                                     "test": round(test_s, 1)},
                   "mode": self.mode, "mode_choice": asdict(self.mode_choice),
                   "out": str(self.out),
                   "artifact": str(self.out / ARTIFACT_DIR)}
        summary = strict(summary)
        write_json(self.out / RESULT, summary)
        return summary


#: The metric fields every result carries (mean ± std over the K networks).
METRIC_FIELDS = ("acc_mean", "acc_std", "bacc_mean", "bacc_std", "auc_mean", "auc_std")


def _result_fields(r: dict, models: int, epochs: int) -> dict:
    keep = ("iteration", *METRIC_FIELDS, "accs", "baccs", "aucs", "val_seeds", "test_seeds")
    return strict({**{k: r[k] for k in keep if k in r}, "models": models, "epochs": epochs})


