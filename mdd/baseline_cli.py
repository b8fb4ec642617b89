"""``mdd baseline``: the random-subset and full-data rows of every table."""
from __future__ import annotations

import argparse

from . import baselines, data as mdata, validate
from .ceiling import CeilingConfig, full_ceiling
from .evaluate import EvalConfig, evaluate_set, protocol


def run_baseline(flag: str, ipc: int, kind: str, models: int = 5, epochs: int | None = None,
                 root=None, size: int = 28, seed: int = 0, device: str = "auto",
                 progress: bool = True, download: bool = False, threads: int | None = None,
                 lr: float | None = None, arch: str = "convnet",
                 search: CeilingConfig | None = None) -> dict:
    """Evaluate the ``random`` subset at ``ipc`` (at ``lr``, default 0.01) or the ``full``
    training set (§2 protocol). For ``full``, ``epochs=None`` chooses the epochs on val
    (:mod:`mdd.ceiling`); a number skips the search. ``threads``: torch threads (None:
    torch's default; 1 is faster for a random subset of a few images)."""
    # the flag first, then every number: one line naming the argument (mdd.validate)
    validate.check_values({"flag": flag, "ipc": ipc, "kind": kind, "models": models,
                           "epochs": epochs, "size": size, "seed": seed, "threads": threads,
                           "lr": lr, "arch": arch}, validate.CLI["baseline"], skip_none=True)
    data = mdata.load(flag, size=size, root=root, download=download)
    cfg = EvalConfig(models=models, epochs=epochs or EvalConfig.epochs, seed=seed, device=device,
                     threads=threads, lr=lr, arch=arch)
    head = {"flag": flag, "size": size, "ipc": ipc if kind == "random" else None,
            "kind": kind, "seed": seed}
    if kind == "full" and epochs is None:
        return {**head, **full_ceiling(data, cfg, search, progress=progress)}
    if kind == "random":
        x, y, _ = baselines.random_subset(data, ipc, seed=seed)
    else:
        x, y = baselines.full(data)
    return {**head, **evaluate_set(x, y, data, cfg, progress=progress), "protocol": protocol(cfg)}


def _baseline(args: argparse.Namespace) -> dict:
    return run_baseline(args.flag, args.ipc, args.kind, models=args.models, epochs=args.epochs,
                        root=args.root, size=args.size, seed=args.seed, device=args.device,
                        download=args.download, threads=args.threads, lr=args.lr, arch=args.arch,
                        search=CeilingConfig(first_steps=args.first_steps, max_steps=args.max_steps))
