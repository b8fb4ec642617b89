"""The benchmark grid (DESIGN.md §3): modalities × ipc × methods, each cell with the
protocol of §2, written row by row to a results CSV so that an interrupted grid
resumes where it stopped (finished cells are skipped; a distillation in progress
resumes from its checkpoint).

Methods: ``random`` (class-balanced real subset), the distillation methods of
:mod:`mdd.distill` (``mtt``, ``ptm``, ``ptm+dom``, …) and ``full`` (the ceiling).
"""
from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from . import baselines, compare, data as mdata
from .ceiling import full_ceiling
from .evaluate import EvalConfig, evaluate_set

DISTILL_METHODS = ("mtt", "ptm", "ptm+dom")
METHODS = ("random",) + DISTILL_METHODS + ("full",)


@dataclass
class GridConfig:
    """One benchmark grid. Distillation and evaluation sizes come from ``preset``."""

    flags: list[str] = field(default_factory=lambda: ["breastmnist", "pneumoniamnist"])
    ipcs: list[int] = field(default_factory=lambda: [1, 2, 5, 10])
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    preset: str = "cpu"
    seed: int = 0
    root: str | None = None
    runs: str = "runs/benchmark"          # experts and distillation run folders
    results: str = "results/benchmark.csv"
    device: str = "auto"
    progress: bool = True

    def cells(self) -> list[tuple[str, int | None, str]]:
        """(flag, ipc, method) in run order; ``full`` once per flag with ipc None."""
        unknown = set(self.methods) - set(METHODS)
        if unknown:
            raise ValueError(f"unknown methods {sorted(unknown)}; choose from {', '.join(METHODS)}")
        out = []
        for flag in self.flags:
            out += [(flag, ipc, m) for ipc in self.ipcs for m in self.methods if m != "full"]
            if "full" in self.methods:
                out.append((flag, None, "full"))
        return out


def _eval_config(preset: str, seed: int, device: str) -> EvalConfig:
    from .distill import PRESETS
    p = PRESETS[preset]
    # the preset's threads (cpu: 1) suit a few images; the full set is left to torch
    return EvalConfig(models=p["test_models"], epochs=p["test_epochs"], seed=seed, device=device,
                      threads=p.get("threads"))


def _done(results: Path) -> set[tuple]:
    if not results.is_file():
        return set()
    df = compare.read_benchmark(results)
    return {(r.flag, None if pd.isna(r.ipc) else int(r.ipc), r.method) for r in df.itertuples()}


def run_cell(cfg: GridConfig, flag: str, ipc: int | None, method: str) -> dict:
    """Run one cell and return its results row (the columns of ``benchmark.csv``)."""
    data = mdata.load(flag, root=cfg.root)
    ec = _eval_config(cfg.preset, cfg.seed, cfg.device)
    if method in ("random", "full"):
        if method == "random":
            x, y, _ = baselines.random_subset(data, ipc, seed=cfg.seed)
            res = evaluate_set(x, y, data, ec, progress=cfg.progress)
        else:
            ec.threads = None
            res = full_ceiling(data, ec, progress=cfg.progress)
        artifact = None
    else:
        from .distill import DistillConfig, distill
        from .experts import preset_recipe, train_experts
        experts = Path(cfg.runs) / "experts" / f"{flag}-{cfg.preset}"
        recipe, count = preset_recipe(cfg.preset)
        train_experts(flag, experts, count, recipe, root=cfg.root, seed=cfg.seed,
                      device=cfg.device, progress=cfg.progress)
        res = distill(DistillConfig(flag=flag, ipc=ipc, method=method, preset=cfg.preset,
                                    experts=str(experts), seed=cfg.seed, root=cfg.root,
                                    device=cfg.device, progress=cfg.progress,
                                    out=str(Path(cfg.runs) / f"{flag}-ipc{ipc}-{method}")))
        # the row points at a copy beside the results (results/artifacts/…), which is
        # committed with them; the run folder under runs/ is this machine's only
        from .records import save_record
        artifact = save_record(res["artifact"], flag, ipc, method, cfg.seed,
                               root=Path(cfg.results).parent / "artifacts")
    keep = ("acc_mean", "acc_std", "auc_mean", "auc_std", "models", "epochs", "lr")
    return {"flag": flag, "size": data.size, "ipc": ipc, "method": method, "seed": cfg.seed,
            "artifact": artifact, **{k: res[k] for k in keep}}


def run_grid(cfg: GridConfig) -> pd.DataFrame:
    """Run every cell not yet in ``cfg.results``; return the whole results table."""
    results = Path(cfg.results)
    done = _done(results)
    todo = [c for c in cfg.cells() if c not in done]
    for flag, ipc, method in tqdm(todo, desc="benchmark", disable=not cfg.progress):
        compare.upsert_benchmark([run_cell(cfg, flag, ipc, method)], results)
    return compare.read_benchmark(results) if results.is_file() else pd.DataFrame()


def gain_table(results: pd.DataFrame) -> pd.DataFrame:
    """One row per flag × ipc × method: ACC and AUC as mean ± std (in %), and the
    gain in ACC points over the random subset at the same ipc (full: over nothing)."""
    rows = []
    for r in results.itertuples():
        ipc = None if pd.isna(r.ipc) else int(r.ipc)
        rand = results[(results.flag == r.flag) & (results.ipc == r.ipc) & (results.method == "random")]
        gain = (100 * (r.acc_mean - rand.acc_mean.iloc[0])) if len(rand) and r.method != "random" else None
        rows.append({"flag": r.flag, "ipc": ipc if ipc is not None else "all", "method": r.method,
                     "ACC %": f"{100 * r.acc_mean:.1f} ± {100 * r.acc_std:.1f}",
                     "AUC": f"{r.auc_mean:.3f} ± {r.auc_std:.3f}",
                     "ΔACC vs random": None if gain is None else round(gain, 1)})
    return pd.DataFrame(rows)


def _cli(args: argparse.Namespace) -> list[dict]:
    cfg = GridConfig(flags=args.flags, ipcs=args.ipcs, methods=args.methods, preset=args.preset,
                     seed=args.seed, root=args.root, runs=args.runs, results=args.results,
                     device=args.device)
    return gain_table(run_grid(cfg)).to_dict("records")


def register_cli(sub: argparse._SubParsersAction) -> None:
    from .cli import add_common
    d = GridConfig()
    p = sub.add_parser("benchmark", help="run (resumably) the modality × ipc × method grid")
    p.add_argument("--flags", nargs="+", default=d.flags)
    p.add_argument("--ipcs", nargs="+", type=int, default=d.ipcs)
    p.add_argument("--methods", nargs="+", default=d.methods, choices=METHODS)
    p.add_argument("--preset", default=d.preset, choices=("smoke", "cpu", "paper"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs", default=d.runs, help="folder for experts and distillation runs")
    p.add_argument("--results", default=d.results, help="results CSV (rows are added as cells finish)")
    p.add_argument("--device", default="auto")
    add_common(p)
    p.set_defaults(handler=_cli)
