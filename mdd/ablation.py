"""Small recorded ablations on the **val** split: how engine defaults are chosen.

An ablation runs named variants (DistillConfig overrides) of one distillation over
flags × ipcs × seeds, stops each run before its test evaluation (test is never read),
and records per run the val metrics of the checkpoint the protocol selects and of the
last iterate, with what makes a run readable at a glance: how far the images moved in
the second half of the run, α at the start and the end, DOM's checks and re-seeds.

Python::

    from mdd.ablation import AblationConfig, run_ablation, summary_markdown
    cfg = AblationConfig(name="engine_v2", flags=["breastmnist"], ipcs=[2],
                         variants={"v2": {}, "v1-optim": {"image_opt": "sgd", ...}},
                         reference="v2", seeds=[0, 1, 2])
    table = run_ablation(cfg)          # results/ablations/engine_v2.csv, resumable
    print(summary_markdown(table, "v2"))

Runs go to ``runs/ablations/<name>/<flag>-ipc<ipc>-<variant>-s<seed>`` and resume;
cells run side by side on local processes (one torch thread each) or on Dask.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import stats
from .io import read_json, write_text
from .locks import file_lock

#: Columns of an ablation CSV, one row per (flag, ipc, variant, seed).
COLUMNS = ("flag", "ipc", "variant", "seed", "method", "val_auc", "val_bacc", "val_acc",
           "selected_iteration", "last_val_auc", "last_val_bacc", "last_val_acc", "alpha_first",
           "alpha_last", "dx_first", "dx_second_half", "dom_checks", "replaced",
           "iterations", "distill_seconds", "overrides")
KEY = ("flag", "ipc", "variant", "seed")


@dataclass
class AblationConfig:
    """Variants × flags × ipcs × seeds of one distillation preset, scored on val."""

    name: str
    variants: dict[str, dict[str, Any]]
    reference: str                   # the variant the others are compared with (its rows
                                     # may come from another step of the same ablation)
    flags: list[str] = field(default_factory=lambda: ["breastmnist"])
    ipcs: list[int] = field(default_factory=lambda: [2])
    seeds: list[int] = field(default_factory=lambda: [0])
    method: str = "ptm+dom"
    preset: str = "cpu"
    root: str | None = None
    experts: str = "runs/experts/{flag}-{preset}"
    runs: str = "runs/ablations"
    results: str = "results/ablations"
    workers: int = 2
    scheduler: str | None = None

    def __post_init__(self) -> None:
        if not self.variants:
            raise ValueError("an ablation needs at least one variant")

    @property
    def csv(self) -> Path:
        return Path(self.results) / f"{self.name}.csv"

    def cells(self) -> list[tuple[str, int, str, int]]:
        return [(f, i, v, s) for f in self.flags for i in self.ipcs for v in self.variants
                for s in self.seeds]


def run_cell(cfg: AblationConfig, flag: str, ipc: int, variant: str, seed: int) -> dict:
    """Distill one cell up to its last iteration (val evaluations only) and return its row."""
    from .distill import DistillConfig, distill
    over = dict(cfg.variants[variant])
    method = over.pop("method", cfg.method)
    out = Path(cfg.runs) / cfg.name / f"{flag}-ipc{ipc}-{variant}-s{seed}"
    experts = over.pop("experts", cfg.experts).format(flag=flag, preset=cfg.preset)
    dc = DistillConfig(flag=flag, ipc=ipc, method=method, preset=cfg.preset, seed=seed,
                       root=cfg.root, experts=experts, out=str(out), progress=False, threads=1,
                       **over)
    t0 = time.perf_counter()
    from .distill_config import resolve
    iterations = resolve(dc, set(over)).iterations
    distill(dc, explicit=set(over), stop_after=iterations)
    return {**read_run(out), "flag": flag, "ipc": ipc, "variant": variant, "seed": seed,
            "method": method, "overrides": repr(cfg.variants[variant]),
            "wall_seconds": round(time.perf_counter() - t0, 1)}


def read_run(out: str | Path) -> dict:
    """The val record of a run folder: the candidate the protocol selects (val AUC, ties
    balanced accuracy; the init is no candidate), the last evaluation, and the image
    movement, α and DOM counters from its log."""
    from .run_folder import read_dom_events, read_evals, read_log
    evals = [e for e in read_evals(out) if e.get("candidate", e["iteration"] > 0)]
    finite = [e for e in evals if e["auc_mean"] is not None and math.isfinite(e["auc_mean"])]
    key = lambda e: (e["auc_mean"], e.get("bacc_mean") or -1.0)   # noqa: E731
    best = max(finite, key=key) if finite else {}
    last = evals[-1] if evals else {}
    log = read_log(out)
    dx = log["dx_rms"].astype(float) if "dx_rms" in log and len(log) else pd.Series(dtype=float)
    half = len(dx) // 2
    events = read_dom_events(out)
    cfg = read_json(Path(out) / "config.json")
    return {"val_auc": best.get("auc_mean"), "val_bacc": best.get("bacc_mean"),
            "val_acc": best.get("acc_mean"), "selected_iteration": best.get("iteration"),
            "last_val_auc": last.get("auc_mean"), "last_val_bacc": last.get("bacc_mean"),
            "last_val_acc": last.get("acc_mean"),
            "alpha_first": float(log["alpha"].iloc[0]) if len(log) else None,
            "alpha_last": float(log["alpha"].iloc[-1]) if len(log) else None,
            "dx_first": float(dx.iloc[:max(1, half)].sum()) if len(dx) else None,
            "dx_second_half": float(dx.iloc[half:].sum()) if len(dx) else None,
            "dom_checks": len(events), "replaced": sum(len(e.get("real_indices") or {}) for e in events),
            "iterations": cfg.get("iterations"),
            "distill_seconds": float(log["elapsed"].iloc[-1]) if len(log) else None}


def read_table(path: str | Path) -> pd.DataFrame:
    df = pd.read_csv(path)
    for c in COLUMNS:
        if c not in df.columns:
            df[c] = None
    return df


def add_rows(rows: list[dict], path: str | Path) -> pd.DataFrame:
    """Write ``rows`` into the ablation CSV at ``path`` (a row replaces the one with its
    key) and return the whole table; rows from elsewhere (e.g. a grid's run folders) enter
    an ablation this way and its runner skips their cells."""
    path, new = Path(path), pd.DataFrame(rows)
    old = read_table(path) if path.is_file() else None
    both = new if old is None else pd.concat([new, old], ignore_index=True)
    both = both.drop_duplicates(list(KEY), keep="first").sort_values(list(KEY))
    cols = [c for c in COLUMNS if c in both.columns] + [c for c in both.columns if c not in COLUMNS]
    write_text(path, both[cols].to_csv(index=False))
    return both.reset_index(drop=True)


def run_ablation(cfg: AblationConfig, progress: bool = True) -> pd.DataFrame:
    """Run every cell not yet in ``cfg.csv`` (side by side), write each row as it
    finishes, and return the table."""
    import concurrent.futures as cf

    from tqdm.auto import tqdm

    from .executors import open_executor
    path = cfg.csv
    path.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if path.is_file():
        t = read_table(path)
        done = {(r.flag, int(r.ipc), r.variant, int(r.seed)) for r in t.itertuples()}
    todo = [c for c in cfg.cells() if c not in done]
    with file_lock(path, "mdd ablation"), \
            open_executor(cfg.workers, len(todo), 1, cfg.scheduler) as place:
        futures = {place.executor.submit(run_cell, cfg, *c): c for c in todo}
        with tqdm(total=len(todo), desc=f"ablation {cfg.name}", disable=not progress) as bar:
            for fut in cf.as_completed(futures):
                add_rows([fut.result()], path)
                bar.update()
    return read_table(path) if path.is_file() else pd.DataFrame(columns=COLUMNS)


def summary_table(table: pd.DataFrame, reference: str, metric: str = "val_auc") -> pd.DataFrame:
    """Per (flag, ipc, variant): mean ± std of ``metric`` over seeds and its paired
    difference from ``reference`` (95 % bootstrap and t intervals)."""
    rows = []
    for (flag, ipc), g in table.groupby(["flag", "ipc"], sort=True):
        ref = g[g.variant == reference].set_index("seed")[metric].to_dict()
        for variant, v in g.groupby("variant", sort=False):
            vals = v.set_index("seed")[metric].to_dict()
            s = stats.summarize(list(vals.values()))
            d = stats.paired_difference(vals, ref) if variant != reference else None
            rows.append({"flag": flag, "ipc": int(ipc), "variant": variant, "seeds": s["n"],
                         "mean": s["mean"], "std": s["std"],
                         "diff": None if d is None else d["mean"],
                         "ci": "" if d is None else stats.fmt_ci(d, scale=1.0, digits=3),
                         "t_ci": "" if d is None or d["t_low"] is None else
                         f"[{d['t_low']:+.3f}, {d['t_high']:+.3f}]",
                         "dx_second_half": float(np.nanmean(v["dx_second_half"].astype(float))),
                         "alpha_last": float(np.nanmean(v["alpha_last"].astype(float))),
                         "replaced": float(np.nanmean(v["replaced"].astype(float)))})
    return pd.DataFrame(rows)


def summary_markdown(table: pd.DataFrame, reference: str, metric: str = "val_auc") -> str:
    """The summary table as Markdown (what results/ablations/*.md hold)."""
    s = summary_table(table, reference, metric)
    lines = [f"| flag | ipc | variant | seeds | {metric} | Δ vs {reference} [95 % bootstrap] | t CI "
             "| image movement, 2nd half (σ) | α last | re-seeded |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in s.itertuples():
        mean = "n/a" if pd.isna(r.mean) else f"{r.mean:.3f} ± {r.std:.3f}"
        diff = "—" if pd.isna(r.diff) else r.ci
        lines.append(f"| {r.flag} | {r.ipc} | {r.variant} | {r.seeds} | {mean} | {diff} | "
                     f"{r.t_ci or '—'} | {r.dx_second_half:.2f} | {r.alpha_last:.2e} | "
                     f"{r.replaced:.1f} |")
    return "\n".join(lines) + "\n"


def decide_defaults(table: pd.DataFrame, reference: str, reverts: list[str],
                    metric: str = "val_auc") -> pd.DataFrame:
    """The stated rule for defaults: the reference's choice stays unless reverting it
    raises the mean paired ``metric`` on **every** dataset (each dataset's difference is
    the mean over its ipc cells of the mean paired difference over seeds). Fixed before
    the ablation ran, so no single noisy cell can flip a default.

    Returns one row per reverted variant: its per-flag differences, the verdict and
    the number of paired runs behind it.
    """
    s = summary_table(table, reference, metric)
    flags = sorted(table.flag.unique())
    rows = []
    for variant in reverts:
        v = s[(s.variant == variant) & s["diff"].notna()]
        per_flag = v.groupby("flag")["diff"].mean().to_dict()
        covered = all(f in per_flag for f in flags)
        revert = covered and all(per_flag[f] > 0 for f in flags)
        rows.append({"variant": variant, **{f"diff_{f}": per_flag.get(f) for f in flags},
                     "runs": int(v.seeds.sum()),
                     "default": "revert to v1" if revert else
                     (f"keep {reference}" if covered else "undecided (a dataset is missing)")})
    return pd.DataFrame(rows)


def defaults_markdown(table: pd.DataFrame, reference: str, reverts: list[str],
                      metric: str = "val_auc") -> str:
    """:func:`decide_defaults` as a Markdown table."""
    d = decide_defaults(table, reference, reverts, metric)
    flags = [c[len("diff_"):] for c in d.columns if c.startswith("diff_")]
    head = "| reverted choice | " + " | ".join(f"Δ {metric}, {f}" for f in flags) + \
        " | paired runs | default |"
    lines = [head, "|" + "---|" * (len(flags) + 3)]
    for r in d.to_dict("records"):
        cells = ["n/a" if pd.isna(r[f"diff_{f}"]) else f"{r[f'diff_{f}']:+.3f}" for f in flags]
        lines.append(f"| {r['variant']} | " + " | ".join(cells) + f" | {r['runs']} | {r['default']} |")
    return "\n".join(lines) + "\n"
