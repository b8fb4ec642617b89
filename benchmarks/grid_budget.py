"""What the benchmark grid of issue 11 would cost, from measured runs (no runs made here).

Reads finished cpu-preset distillation runs (``log.csv``: seconds per matching
iteration; ``evals.jsonl``: seconds per val evaluation of 3 networks) and prices one
grid cell per (flag, ipc) as

    iterations × s/iteration × (1 + DOM retraining share)
    + (iterations / eval_every + 1) × s/val evaluation
    + 2 × 5/3 × s/val evaluation                       (test: 5 networks, selected + last)

plus, per (flag, ipc, seed), the random subset and the random subset at each method's
learned α (test evaluations only). ipc 1 and 5 are interpolated linearly in ipc between
the measured ipc 2 and 10 (ipc 1 extrapolated; an estimate, marked). The measured runs ran two side by side
on 2 cores, as grid cells do; wall = core seconds / 2 workers.

    .venv/bin/python benchmarks/grid_budget.py [RUN ...] [--md results/ablations/grid_budget.md]

Default runs: the engine v2 seed-0 runs and the v2 cells of the engine v2 ablation.
"""
from __future__ import annotations

import argparse
import glob
import json
from pathlib import Path

import numpy as np
import pandas as pd

from mdd.io import write_text
from mdd.viz import markdown_table

DEFAULT_RUNS = ["runs/engine_v2/*-s0", "runs/ablations/engine_v2_*/*-v2-s*"]
METHODS = ["mtt", "datm", "ptm", "ptm+dom"]
IPCS = [1, 2, 5, 10]
SEEDS = 3
WORKERS = 2
#: (iterations, eval_every, evaluation epochs E) to price: the cpu preset's, the longer
#: budgets the preset curves point to, and cheaper alternatives (evaluation cost is taken
#: as proportional to E; measured at E = 300).
PRESETS = [(150, 25, 300), (225, 25, 300), (300, 25, 300), (150, 50, 300), (225, 50, 300),
           (300, 50, 300), (100, 50, 300),
           (150, 25, 100), (150, 50, 100), (100, 50, 100)]


def measure(runs: list[str]) -> pd.DataFrame:
    """One row per run: flag, ipc, s/iteration (main), DOM retraining share, s/val eval."""
    rows = []
    for run in runs:
        cfg_path, log_path = Path(run) / "config.json", Path(run) / "log.csv"
        if not (cfg_path.is_file() and log_path.is_file() and (Path(run) / "evals.jsonl").is_file()):
            continue
        cfg = json.loads(cfg_path.read_text())
        log = pd.read_csv(log_path)
        evals = [json.loads(line) for line in (Path(run) / "evals.jsonl").read_text().splitlines() if line]
        main = log[log["phase"] == "main"]
        rows.append({"flag": cfg["flag"], "ipc": cfg["ipc"], "run": run,
                     "s_iteration": float(main["seconds"].median()),
                     "retrain_share": float((log["phase"] != "main").sum() / max(len(main), 1)),
                     "s_val_eval": float(np.median([e["seconds"] for e in evals if e.get("seconds")]))})
    return pd.DataFrame(rows)


def per_cell(m: pd.DataFrame) -> pd.DataFrame:
    """Median costs per measured (flag, ipc), and ipc 1 and 5 interpolated."""
    g = m.groupby(["flag", "ipc"]).agg(s_iteration=("s_iteration", "median"),
                                       retrain_share=("retrain_share", "mean"),
                                       s_val_eval=("s_val_eval", "median"),
                                       runs=("run", "count")).reset_index()
    out = []
    for flag, f in g.groupby("flag"):
        f = f.set_index("ipc")
        for ipc in IPCS:
            if ipc in f.index:
                out.append({"flag": flag, "ipc": ipc, **f.loc[ipc].to_dict(), "estimated": False})
            elif {2, 10} <= set(f.index):
                w = (ipc - 2) / 8
                # linear in ipc (ipc 1: extrapolated), never below 0
                row = {k: max(0.0, float((1 - w) * f.loc[2, k] + w * f.loc[10, k]))
                       for k in ("s_iteration", "retrain_share", "s_val_eval")}
                out.append({"flag": flag, "ipc": ipc, **row, "runs": 0, "estimated": True})
    return pd.DataFrame(out)


def price(cells: pd.DataFrame, iterations: int, eval_every: int, epochs: int = 300) -> pd.DataFrame:
    c = cells.copy()
    ev = c["s_val_eval"] * epochs / 300
    test = 2 * 5 / 3 * ev
    c["run_s"] = (iterations * c["s_iteration"] * (1 + c["retrain_share"])
                  + (iterations // eval_every + 1) * ev + test)
    # random + random at each method's α: test evaluations of 5 networks on the subset
    controls = (1 + len(METHODS)) * 5 / 3 * ev
    c["core_h"] = SEEDS * (len(METHODS) * c["run_s"] + controls) / 3600
    return c


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="*", help="run folders (globs allowed)")
    ap.add_argument("--md", default=None, help="write the tables here (Markdown)")
    args = ap.parse_args(argv)
    runs = sorted({r for pat in (args.runs or DEFAULT_RUNS) for r in glob.glob(pat)})
    m = measure(runs)
    if m.empty:
        raise SystemExit("grid_budget: no finished run folders found (config.json, log.csv, evals.jsonl)")
    cells = per_cell(m)
    lines = ["# What the benchmark grid costs (from measured runs)", "",
             f"Command: `.venv/bin/python benchmarks/grid_budget.py{' ' + ' '.join(args.runs) if args.runs else ''}`"
             f" ({len(m)} runs; model in the script's docstring).", "",
             "Measured per (flag, ipc) (median over runs; ipc 1 and 5 interpolated):", "",
             markdown_table(cells, ".3g"), "",
             f"Grid: 2 flags × ipc {IPCS} × {len(METHODS)} methods × {SEEDS} seeds, with the random "
             f"controls; wall on {WORKERS} one-thread workers (experts and full-data ceilings exist):", "",
             "| iterations | eval_every | evaluation epochs E | core hours | wall hours |",
             "|---|---|---|---|---|"]
    for it, ev, e in PRESETS:
        core = float(price(cells, it, ev, e)["core_h"].sum())
        lines.append(f"| {it} | {ev} | {e} | {core:.1f} | {core / WORKERS:.1f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.md:
        write_text(args.md, text)


if __name__ == "__main__":
    main()
