"""The main job (``make demo`` / ``mdd demo``): BreastMNIST end to end.

Experts at the cpu preset → PTM + DOM at ipc 2 → evaluation (§2 protocol) beside the
random real subset at the same ipc → a PNG grid and a one-row comparison.
Everything lands in ``--out`` (default ``runs/demo``) and resumes if interrupted.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from . import baselines, data as mdata, validate
from .distill import distill
from .distill_config import DistillConfig, PRESETS
from .evaluate import EvalConfig, evaluate_set
from .experts import preset_recipe, train_experts
from .io import read_json, write_json
from .locks import folder_lock


def run_demo(flag: str = "breastmnist", ipc: int = 2, method: str = "ptm+dom", preset: str = "cpu",
             out: str = "runs/demo", root: str | None = None, seed: int = 0,
             device: str = "auto", download: bool = True, progress: bool = True) -> dict:
    """Run the main job; returns the comparison row (also written to ``out/demo.json``).
    One demo writes ``out`` at a time (a second is refused, :mod:`mdd.locks`)."""
    validate.check_values({"flag": flag, "ipc": ipc, "method": method, "preset": preset,
                           "seed": seed}, validate.CLI["demo"])
    validate.check_device(device)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    with folder_lock(out_dir, "mdd demo"):
        return _demo(flag, ipc, method, preset, out_dir, root, seed, device, download, progress)


def _demo(flag: str, ipc: int, method: str, preset: str, out_dir: Path, root: str | None,
          seed: int, device: str, download: bool, progress: bool) -> dict:
    summary_path = out_dir / "demo.json"
    data = mdata.load(flag, root=root, download=download)
    recipe, count = preset_recipe(preset)
    experts = out_dir / "experts" / f"{flag}-{preset}"
    train_experts(flag, experts, count, recipe, root=root, seed=seed, device=device,
                  progress=progress)
    res = distill(DistillConfig(flag=flag, ipc=ipc, method=method, preset=preset,
                                experts=str(experts), out=str(out_dir / f"{flag}-ipc{ipc}-{method}"),
                                root=root, seed=seed, device=device, progress=progress))
    if summary_path.is_file() and read_json(summary_path).get("artifact") == res["artifact"]:
        return read_json(summary_path)
    p = PRESETS[preset]
    x, y, _ = baselines.random_subset(data, ipc, seed=seed)
    rand = evaluate_set(x, y, data, EvalConfig(models=p["test_models"], epochs=p["test_epochs"],
                                               seed=seed, device=device, threads=p.get("threads")),
                        progress=progress)
    row = {"flag": flag, "ipc": ipc, "method": method,
           "acc": f"{100 * res['acc_mean']:.1f} ± {100 * res['acc_std']:.1f}",
           "auc": f"{res['auc_mean']:.3f} ± {res['auc_std']:.3f}",
           "random_acc": f"{100 * rand['acc_mean']:.1f} ± {100 * rand['acc_std']:.1f}",
           "random_auc": f"{rand['auc_mean']:.3f} ± {rand['auc_std']:.3f}",
           "gain_acc_points": round(100 * (res["acc_mean"] - rand["acc_mean"]), 1),
           "alpha": res["alpha"], "grid_png": str(Path(res["artifact"]) / "grid.png"),
           "artifact": res["artifact"], "distilled": {k: res[k] for k in ("acc_mean", "acc_std", "auc_mean", "auc_std")},
           "random": {k: rand[k] for k in ("acc_mean", "acc_std", "auc_mean", "auc_std")}}
    write_json(summary_path, row)
    return row


def _cli(args: argparse.Namespace) -> dict:
    return run_demo(flag=args.flag, ipc=args.ipc, method=args.method, preset=args.preset,
                    out=args.out, root=args.root, seed=args.seed, device=args.device)
