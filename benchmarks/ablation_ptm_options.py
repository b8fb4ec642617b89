"""PTM's open options (DESIGN.md §1.2), tried on the **val** split after the grid of record
found PTM + DOM behind DATM at ipc 2: what would each option have done to the preset the
grid ran with (a fixed start at θ*₀, N fixed, stages of fixed length)?

- ``anchored``: start drawn from the anchored window [0, T₁ − 1] (the widest allowed), for
  the start diversity MTT and DATM get from their random windows;
- ``grow``: N grows with the segment (N_k = N · T_k / T₁, capped at 4 N), so the student
  need not stretch α to reach the later targets;
- ``plateau``: a stage ends when its moving-average loss stops improving (at most its
  fixed length), so easy stages give their iterations to the last one.

BreastMNIST and PneumoniaMNIST at ipc 2, seeds 0–2, the grid's experts. The reference
(``ptm+dom``) and the baselines (``mtt``, ``datm``) are the grid's own runs, read from
their run folders (or, where runs/ was not kept, their val columns in
results/benchmark.csv), so every variant is paired with the exact run of record.

Rule, stated before the runs: the grid of record keeps the preset it ran with (its
defaults were fixed on val before it started); an option that raises the mean paired val
AUC on both datasets is named here as the candidate default for the next grid.

    MDD_DATA=../shared/medmnist python benchmarks/ablation_ptm_options.py [--workers 2]
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

import pandas as pd

from mdd.ablation import (AblationConfig, add_rows, decide_defaults, read_run, read_table,
                          run_ablation, summary_markdown)
from mdd.distill_config import PRESETS
from mdd.io import write_text

NAME = "ptm_options"
RESULTS = Path("results/ablations")
GRID_RUNS = Path("runs/benchmark_v2")
GRID_CSV = Path("results/benchmark.csv")
OPTIONS = {"anchored": {"start_window": PRESETS["cpu"]["first_target"] - 1},
           "grow": {"step_rule": "grow"},
           "plateau": {"advance": "plateau"}}
#: Variants whose rows are the grid's runs (variant name = grid method).
FROM_GRID = {"ptm+dom": {}, "mtt": {"method": "mtt"}, "datm": {"method": "datm"}}


def config(workers: int = 2) -> AblationConfig:
    return AblationConfig(name=NAME, reference="ptm+dom", root=os.environ.get("MDD_DATA"),
                          workers=workers, results=str(RESULTS),
                          flags=["breastmnist", "pneumoniamnist"], ipcs=[2], seeds=[0, 1, 2],
                          experts=str(GRID_RUNS / "experts" / "{flag}-{preset}"),
                          variants={**FROM_GRID, **OPTIONS})


def grid_row(cfg: AblationConfig, grid: pd.DataFrame, flag: str, ipc: int, variant: str,
             seed: int) -> dict | None:
    """The grid's run of this cell as an ablation row: from its run folder when it
    finished here, else from its val columns in the grid's CSV; None when neither."""
    method = FROM_GRID[variant].get("method", cfg.method)
    key = {"flag": flag, "ipc": ipc, "variant": variant, "seed": seed, "method": method,
           "overrides": repr(FROM_GRID[variant])}
    folder = GRID_RUNS / f"{flag}-ipc{ipc}-{method}-s{seed}"
    if (folder / "result.json").is_file():
        return {**read_run(folder), **key, "source": str(folder)}
    r = grid[(grid.flag == flag) & (grid.ipc == ipc) & (grid.method == method) & (grid.seed == seed)]
    if r.empty or not math.isfinite(float(r.val_auc.iloc[0])):
        return None
    r = r.iloc[0]
    return {**key, "val_auc": r.val_auc, "selected_iteration": r.selected_iteration,
            "last_val_auc": None, "alpha_last": r.alpha, "iterations": r.iterations,
            "distill_seconds": r.distill_seconds, "source": str(GRID_CSV)}


def take_grid_rows(cfg: AblationConfig) -> int:
    """Enter the grid's finished cells into the ablation CSV; returns how many."""
    grid = pd.read_csv(GRID_CSV) if GRID_CSV.is_file() else pd.DataFrame(
        columns=["flag", "ipc", "method", "seed", "val_auc"])
    rows = [row for (f, i, v, s) in cfg.cells() if v in FROM_GRID
            if (row := grid_row(cfg, grid, f, i, v, s)) is not None]
    if rows:
        add_rows(rows, cfg.csv)
    return len(rows)


def report(cfg: AblationConfig) -> str:
    table = read_table(cfg.csv)
    verdict = decide_defaults(table, "ptm+dom", list(OPTIONS))
    verdict["default"] = verdict["default"].replace(
        {"revert to v1": "candidate for the next grid", "keep ptm+dom": "no gain on val"})
    flags = [c for c in verdict.columns if c.startswith("diff_")]
    lines = ["| option | " + " | ".join(f"Δ val AUC, {c[5:]}" for c in flags) +
             " | paired runs | verdict |", "|" + "---|" * (len(flags) + 3)]
    for r in verdict.to_dict("records"):
        diffs = ["n/a" if pd.isna(r[c]) else f"{r[c]:+.3f}" for c in flags]
        lines.append(f"| {r['variant']} | " + " | ".join(diffs) + f" | {r['runs']} | {r['default']} |")
    text = ["# PTM's open options (val split only)", "",
            __doc__.split("\n\n")[0].replace("\n", " "), "",
            "`anchored`: start in [0, T₁ − 1] steps; `grow`: N_k = N · T_k / T₁ (≤ 4 N); "
            "`plateau`: a stage ends when its 10-iteration mean loss stops falling by 1 %. "
            "`ptm+dom`, `mtt`, `datm`: the grid of record's runs (same seeds, experts and "
            "val networks). Val AUC of the checkpoint the protocol selects, mean ± std over "
            "seeds, paired difference from the grid's PTM + DOM with 95 % bootstrap and t "
            "intervals. Image movement: RMS per-pixel change (σ) summed over the second half "
            "(n/a where a grid run was read from the CSV).", "",
            "Rule, stated before the runs: the grid keeps its preset; an option that raises "
            "the mean paired val AUC on both datasets is the candidate default for the next "
            "grid.", "",
            "Command: `MDD_DATA=../shared/medmnist python benchmarks/ablation_ptm_options.py`", "",
            summary_markdown(table, "ptm+dom"), "", "## Verdict", "", "\n".join(lines)]
    out = "\n".join(text) + "\n"
    write_text(RESULTS / f"{NAME}.md", out)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=2, help="cells side by side (default 2)")
    args = ap.parse_args(argv)
    cfg = config(args.workers)
    missing = [f for f in cfg.flags if not (Path(cfg.experts.format(flag=f, preset=cfg.preset))
                                            / "manifest.json").is_file()]
    if missing:
        print(f"ablation_ptm_options: no grid experts for {missing} under {GRID_RUNS}/experts; "
              "run the grid first (benchmarks/grid_of_record.sh trains them)", file=sys.stderr)
        sys.exit(2)
    print(f"{take_grid_rows(cfg)} rows taken from the grid", flush=True)
    run_ablation(cfg)
    print(report(cfg))


if __name__ == "__main__":
    main()
