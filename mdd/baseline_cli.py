"""``mdd baseline``: the random-subset and full-data rows of every table."""
from __future__ import annotations

import argparse

from . import baselines, data as mdata
from .evaluate import EvalConfig, evaluate_set

#: Full data trains on hundreds to thousands of images per epoch: fewer epochs
#: give the same order of SGD steps as 300 epochs on a small synthetic set.
FULL_EPOCHS = 30


def run_baseline(flag: str, ipc: int, kind: str, models: int = 5, epochs: int | None = None,
                 root=None, size: int = 28, seed: int = 0, device: str = "auto",
                 progress: bool = True, download: bool = False, threads: int | None = None) -> dict:
    """Evaluate the ``random`` subset at ``ipc`` or the ``full`` training set (§2 protocol).
    ``threads``: torch threads (None: torch's default; 1 is faster for a random subset of
    a few images on a busy 2-core machine)."""
    data = mdata.load(flag, size=size, root=root, download=download)
    if epochs is None:
        epochs = FULL_EPOCHS if kind == "full" else EvalConfig.epochs
    cfg = EvalConfig(models=models, epochs=epochs, seed=seed, device=device, threads=threads)
    if kind == "random":
        x, y, _ = baselines.random_subset(data, ipc, seed=seed)
    elif kind == "full":
        x, y = baselines.full(data)
    else:
        raise ValueError(f"kind must be 'random' or 'full', got {kind!r}")
    res = evaluate_set(x, y, data, cfg, progress=progress)
    return {"flag": flag, "size": size, "ipc": ipc if kind == "random" else None,
            "kind": kind, "seed": seed, **res}


def _baseline(args: argparse.Namespace) -> dict:
    return run_baseline(args.flag, args.ipc, args.kind, models=args.models, epochs=args.epochs,
                        root=args.root, size=args.size, seed=args.seed, device=args.device,
                        download=args.download, threads=args.threads)


def register_cli(sub: argparse._SubParsersAction) -> None:
    from .cli import add_common
    p = sub.add_parser("baseline", help="evaluate a random real subset or the full training set")
    p.add_argument("--flag", required=True)
    p.add_argument("--ipc", type=int, default=10, help="images per class (random subset)")
    p.add_argument("--kind", choices=("random", "full"), default="random")
    p.add_argument("--models", type=int, default=5, help="K fresh networks")
    p.add_argument("--epochs", type=int, default=None,
                   help=f"training epochs (default {EvalConfig.epochs}; {FULL_EPOCHS} for full)")
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (1 is fastest for a few images on a busy 2-core machine)")
    add_common(p, download=True)
    p.set_defaults(handler=_baseline)
