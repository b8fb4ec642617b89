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
import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np

from . import data as mdata
from .alloc import tuned_malloc
from .artifact import load_distilled
from .distill_config import (CHECKPOINT, CONFIG, LOG_FIELDS, METHODS, NON_IDENTITY, PRESETS,
                             RESULT, DistillConfig, config_diff, identity, resolve)
from .distill_config import V1
from .distill_run import METRIC_FIELDS, DistillRun
from .optim import Momentum
from .run_setup import TrajectoryCache, estimate_unrolled_bytes, generator, step_batches
from .evaluate import EvalConfig, evaluate_set, protocol
from .io import read_json, strict
from .run_folder import (RunLog, list_snapshots, load_dom_event, load_snapshot, read_dom_events,
                         read_evals, read_jsonl, read_log)
from .runtime import tf32, torch_threads

#: The names this module has always offered (its pieces live in mdd.distill_config,
#: mdd.distill_run, mdd.distill_state, mdd.run_setup, mdd.optim and mdd.run_folder).
__all__ = ["CHECKPOINT", "CONFIG", "DistillConfig", "DistillRun", "LOG_FIELDS", "METHODS",
           "METRIC_FIELDS", "Momentum", "NON_IDENTITY", "PRESETS", "RESULT", "RunLog",
           "TrajectoryCache", "config_diff", "distill", "estimate_unrolled_bytes",
           "evaluate_distilled", "generator", "identity", "list_snapshots", "load_dom_event",
           "load_snapshot", "read_dom_events", "read_evals", "read_jsonl", "read_log", "resolve",
           "step_batches", "V1"]


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
                             f"--out or delete it ({config_diff(identity(DistillConfig(**ckpt_id)), identity(cfg))})")
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


# ====================================================================== CLI
_CLI_FIELDS: dict[str, tuple[type, str]] = {
    "iterations": (int, "matching iterations"),
    "steps": (int, "N, unrolled student steps"),
    "batch_syn": (int, "synthetic images per step (default: all)"),
    "lr_images": (float, "image learning rate"),
    "lr_images_warmup": (int, "iterations of linear lr_images warm-up (0: none)"),
    "lr_alpha": (float, "learning rate of log α"),
    "alpha_init": (float, "initial student step size α₀ (--alpha-init-rule fixed)"),
    "alpha_search": (int, "problems per grid point of the α₀ search"),
    "lr_labels": (float, "--soft-labels: learning rate of the label logits"),
    "span": (int, "MTT/DATM: M, target = start + M"),
    "max_start": (int, "MTT/DATM: T⁺"),
    "num_stages": (int, "PTM: K stages"),
    "max_target": (int, "PTM: cap on T_K"),
    "start_window": (int, "PTM: start drawn from [start, start + window] (0: fixed)"),
    "stage_iterations": (int, "PTM: iterations per stage"),
    "tau": (float, "DOM: cosine threshold τ (--tau-rule fixed)"),
    "tau_percentile": (float, "DOM: τ at this percentile of real–real similarity"),
    "typical_quantile": (float, "DOM: re-seed from candidates within this distance "
                                  "quantile of the class mean"),
    "dom_every": (int, "DOM: P, iterations between checks"),
    "retrain_iterations": (int, "DOM: R, retraining iterations"),
    "skip_loss_above": (float, "skip updates whose loss exceeds this (DATM)"),
    "experts_per_iteration": (int, "matching problems averaged per iteration, one thread "
                                   "each (2 uses both cores with --threads 1)"),
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
    # every other option named after a DistillConfig field (numbers, choices, paired
    # switches, --stage-quantiles): None means "not given", anything else is explicit
    for f in dataclasses.fields(DistillConfig):
        v = getattr(args, f.name, None)
        if f.name not in kw and f.name != "tf32" and v is not None:
            kw[f.name] = v
            explicit.add(f.name)
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
