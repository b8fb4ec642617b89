"""Diagnostics of distillation runs (notebooks 02–05): the runs a notebook shows (run
here, or read from a grid), their logs, stability statistics and bands across seeds,
and the benchmark grid of notebook 05. Similarity, overlap and DOM are in
:mod:`mdd.dom_diagnostics`; synthetic and nearest real images in
:mod:`mdd.image_diagnostics`.

Everything here reads run folders written by :func:`mdd.distill.distill` (through its
readers ``read_log`` and ``read_evals``) or works on plain DataFrames, so tests use
small hand-made inputs. Figures are drawn by :mod:`mdd.viz`.

Definitions (the numbers of notebook 02's stability table):

* **rolling variance** of the matching loss: the sample variance (ddof 1) over the last
  ``window`` iterations (:func:`rolling_variance`); its mean over a run.
* **loss jump**: a change between consecutive logged iterations by more than a factor
  ``1 + rel`` either way, ``|log L_t − log L_{t−1}| > log(1 + rel)`` (scale-free, so MTT's
  and PTM's normalized losses are compared alike); counted per run, with the mean
  absolute size ``|L_t − L_{t−1}|`` of those changes (:func:`loss_jumps`).
* **std across seeds**: the sample standard deviation (ddof 1; 0 for a single seed) of a
  per-run number over the seeds of a method, e.g. the final val accuracy
  (:func:`seed_band`, :func:`stability_table`).
* **skipped / non-finite**: updates the engine skipped (non-finite loss or gradients, or
  a loss above ``skip_loss_above``), and the non-finite ones among them.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from .runtime import torch_threads

#: Methods as they may appear in file names (``+`` is not allowed there).
SAFE = {"ptm+dom": "ptm_dom"}


def safe_name(method: str) -> str:
    """``ptm+dom`` → ``ptm_dom`` (figure names allow letters, digits, ``._-``)."""
    return SAFE.get(method, method).replace("+", "_")


# ====================================================================== run folders
def run_name(flag: str, ipc: int, method: str, seed: int, tag: str = "") -> str:
    """Folder name of one run: ``breastmnist-ipc2-ptm+dom-s0`` (``tag`` before the seed)."""
    return f"{flag}-ipc{ipc}-{method}{'-' + tag if tag else ''}-s{seed}"


def preset_threads(preset: str, threads: int | str | None = "auto") -> int | None:
    """Torch threads for runs at ``preset``: ``"auto"`` gives 1 at ``smoke`` (its problems
    are tiny: on a busy 2-core machine two threads mostly wait on each other, measured
    3–10× slower) and None (leave torch's setting) otherwise; an int or None as given."""
    if threads == "auto":
        return 1 if preset == "smoke" else None
    return threads


def ensure_runs(experts: Any, flag: str, ipc: int, methods: Sequence[str], seeds: Sequence[int],
                preset: str, folder: str | os.PathLike, root: str | os.PathLike | None = None,
                device: str = "auto", overrides: dict | None = None, tag: str = "",
                threads: int | str | None = "auto", progress: bool = False) -> pd.DataFrame:
    """Run (or resume, or reuse) one distillation per method × seed under ``folder``.

    ``experts``: an :class:`mdd.experts.ExpertSet` or its folder. ``overrides`` are
    DistillConfig fields set over the preset (they are part of a run's identity: use a
    ``tag`` so that runs with other overrides get other folders). Notebooks that pass
    the same arguments share the same folders, so a finished run is read back at once.
    ``threads``: torch threads of the runs (:func:`preset_threads`; not part of a run's
    identity).

    Returns one row per run: method, seed, run (folder), test acc/auc mean and std,
    val_acc (of the selected images), alpha, selected_iteration, counters, seconds
    (wall time of this call for that run).
    """
    import time

    from .distill import DistillConfig, distill
    folder = Path(folder)
    experts_dir = str(getattr(experts, "folder", experts))
    rows = []
    for method in methods:
        for seed in seeds:
            out = folder / run_name(flag, ipc, method, seed, tag)
            t0 = time.perf_counter()
            res = distill(DistillConfig(flag=flag, ipc=ipc, method=method, preset=preset,
                                        experts=experts_dir, out=str(out), seed=int(seed),
                                        root=None if root is None else str(root), device=device,
                                        threads=preset_threads(preset, threads),
                                        progress=progress), **(overrides or {}))
            rows.append(_run_row(method, seed, out, res, time.perf_counter() - t0))
    return pd.DataFrame(rows)


def _run_row(method: str, seed: int, out: Path, res: dict, seconds: float) -> dict:
    return {"method": method, "seed": int(seed), "run": str(out),
            **{k: res.get(k) for k in ("acc_mean", "acc_std", "auc_mean", "auc_std",
                                       "val_acc", "alpha", "selected_iteration")},
            "skips": res["counters"].get("skips", 0),
            "nonfinite": res["counters"].get("nonfinite", 0),
            "replaced": res["counters"].get("replaced", 0),
            "seconds": round(seconds, 2)}


def finished_runs(folder: str | os.PathLike, flag: str, ipc: int, methods: Sequence[str],
                  seeds: Sequence[int]) -> pd.DataFrame:
    """The rows :func:`ensure_runs` returns, read from finished runs under ``folder`` (a
    benchmark grid's ``--runs``: the same folder names) without running anything;
    FileNotFoundError naming the runs that are not finished there. ``seconds`` is the
    run's own compute time (``result.json``)."""
    from .io import read_json
    folder = Path(folder)
    want = [(m, int(s), folder / run_name(flag, ipc, m, s)) for m in methods for s in seeds]
    missing = [str(out) for _, _, out in want if not (out / "result.json").is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} run(s) not finished under {folder}: "
                                + ", ".join(missing[:4]) + (" …" if len(missing) > 4 else ""))
    rows = []
    for m, s, out in want:
        res = read_json(out / "result.json")
        rows.append(_run_row(m, s, out, res, res.get("seconds") or 0.0))
    return pd.DataFrame(rows)


def run_experts(run: str | os.PathLike):
    """The :class:`mdd.experts.ExpertSet` a finished run was distilled from (its config)."""
    from .experts import ExpertSet
    from .io import read_json
    return ExpertSet(read_json(Path(run) / "config.json")["experts"])


def run_records(runs: pd.DataFrame | Iterable[dict]) -> list[dict]:
    """The runs a notebook shows (a DataFrame of :func:`ensure_runs` or
    :func:`finished_runs`, or dicts with at least ``method``, ``seed`` and ``run``) as
    a list of dicts."""
    return runs.to_dict("records") if isinstance(runs, pd.DataFrame) else list(runs)


def load_logs(runs: pd.DataFrame | Iterable[dict]) -> pd.DataFrame:
    """Per-iteration logs of ``runs`` (rows with method, seed, run) as one long table:
    method, seed, then :data:`mdd.distill.LOG_FIELDS`, numeric columns as floats (a
    non-finite loss logged as null becomes NaN)."""
    from .distill_config import LOG_FIELDS
    from .run_folder import read_log
    parts = []
    for r in run_records(runs):
        log = read_log(r["run"])
        log.insert(0, "seed", int(r["seed"]))
        log.insert(0, "method", r["method"])
        parts.append(log)
    if not parts:
        return pd.DataFrame(columns=["method", "seed", *LOG_FIELDS])
    return _numeric(pd.concat(parts, ignore_index=True))


def _numeric(log: pd.DataFrame) -> pd.DataFrame:
    log = log.copy()
    for c in ("loss", "alpha", "grad_norm", "grad_alpha", "overlap_ratio", "mean_similarity",
              "seconds", "elapsed"):
        if c in log:
            log[c] = pd.to_numeric(log[c], errors="coerce").astype(float)
    for c in ("iteration", "replaced", "skips", "nonfinite"):
        if c in log:
            log[c] = pd.to_numeric(log[c], errors="coerce").fillna(0).astype(int)
    if "skipped" in log:
        log["skipped"] = log["skipped"].fillna(False).astype(bool)
    return log


def load_evals(runs: pd.DataFrame | Iterable[dict]) -> pd.DataFrame:
    """Every val evaluation of ``runs``: method, seed, iteration, alpha, acc/auc mean, std."""
    from .run_folder import read_evals
    cols = ["method", "seed", "iteration", "alpha", "acc_mean", "acc_std", "auc_mean", "auc_std"]
    rows = [{"method": r["method"], "seed": int(r["seed"]), **{k: e.get(k) for k in cols[2:]}}
            for r in run_records(runs) for e in read_evals(r["run"])]
    df = pd.DataFrame(rows, columns=cols)
    for c in cols[3:]:
        df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    return df


# ====================================================================== statistics
def default_window(iterations: int) -> int:
    """Rolling window for a run of ``iterations``: a fifth of it, between 2 and 20."""
    return int(max(2, min(20, iterations // 5)))


def rolling_variance(values: Sequence[float], window: int) -> np.ndarray:
    """Sample variance (ddof 1) over the last ``window`` values at each position, from
    the second value on (the first is NaN); NaN values are left out of a window."""
    if window < 2:
        raise ValueError(f"window must be ≥ 2, got {window}")
    s = pd.Series(np.asarray(values, dtype=float))
    return s.rolling(window, min_periods=2).var(ddof=1).to_numpy()


def loss_jumps(values: Sequence[float], rel: float = 0.5) -> dict:
    """Large iteration-to-iteration changes of a positive loss (see module doc).

    Non-finite and non-positive values are dropped first. Returns ``jumps`` (count),
    ``changes`` (consecutive pairs compared), ``jump_rate`` (jumps / changes),
    ``mean_jump`` (mean |ΔL| of the jumps, NaN without jumps), ``max_change`` (largest
    |ΔL| of any pair, NaN with fewer than two values) and ``threshold`` (the factor).
    """
    if rel <= 0:
        raise ValueError(f"rel must be > 0, got {rel}")
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    if len(v) < 2:
        return {"jumps": 0, "changes": 0, "jump_rate": math.nan, "mean_jump": math.nan,
                "max_change": math.nan, "threshold": 1 + rel}
    d = np.diff(v)
    big = np.abs(np.diff(np.log(v))) > math.log1p(rel)
    return {"jumps": int(big.sum()), "changes": len(d), "jump_rate": float(big.mean()),
            "mean_jump": float(np.abs(d[big]).mean()) if big.any() else math.nan,
            "max_change": float(np.abs(d).max()), "threshold": 1 + rel}


def add_rolling_variance(logs: pd.DataFrame, window: int, column: str = "loss") -> pd.DataFrame:
    """``logs`` with ``rolling_var`` (of ``column``) computed within each method × seed."""
    out = logs.sort_values(["method", "seed", "iteration"]).copy()
    out["rolling_var"] = np.nan
    for _, idx in out.groupby(["method", "seed"], sort=False).groups.items():
        out.loc[idx, "rolling_var"] = rolling_variance(out.loc[idx, column], window)
    return out


def seed_band(df: pd.DataFrame, value: str, x: str = "iteration", by: str = "method",
              ddof: int = 1) -> pd.DataFrame:
    """Mean, std (ddof; 0 for one seed), min, max and count of ``value`` across seeds at
    each ``x`` within each ``by``: columns by, x, mean, std, min, max, n."""
    if df.empty:
        return pd.DataFrame(columns=[by, x, "mean", "std", "min", "max", "n"])
    g = df.dropna(subset=[value]).groupby([by, x], sort=True)[value]
    band = g.agg(mean="mean", min="min", max="max", n="count").reset_index()
    std = g.std(ddof=ddof).reset_index(drop=True)
    band.insert(3, "std", std.fillna(0.0).to_numpy())
    return band


def final_evals(evals: pd.DataFrame) -> pd.DataFrame:
    """The last val evaluation of each method × seed."""
    if evals.empty:
        return evals
    return (evals.sort_values(["method", "seed", "iteration"])
            .groupby(["method", "seed"], sort=False).tail(1).reset_index(drop=True))


def run_statistics(logs: pd.DataFrame, evals: pd.DataFrame | None = None,
                   runs: pd.DataFrame | None = None, window: int | None = None,
                   rel: float = 0.5) -> pd.DataFrame:
    """One row per method × seed: iterations, loss (final, mean), rolling-variance mean,
    loss jumps (count, mean size, max change), α (final, min), skipped and non-finite
    updates, and, when given, the final and best val accuracy (``evals``) and the test
    accuracy (``runs``, the output of :func:`ensure_runs`)."""
    rows = []
    for (method, seed), log in logs.groupby(["method", "seed"], sort=False):
        log = log.sort_values("iteration")
        w = window or default_window(len(log))
        loss = log["loss"].to_numpy(dtype=float)
        jumps = loss_jumps(loss, rel)
        rv = rolling_variance(loss, w)
        finite = loss[np.isfinite(loss)]
        alpha = log["alpha"].to_numpy(dtype=float)
        rows.append({"method": method, "seed": int(seed), "iterations": len(log), "window": w,
                     "loss_final": float(finite[-1]) if len(finite) else math.nan,
                     "loss_mean": float(finite.mean()) if len(finite) else math.nan,
                     "rolling_var_mean": float(np.nanmean(rv)) if np.isfinite(rv).any() else math.nan,
                     "loss_jumps": jumps["jumps"], "jump_size": jumps["mean_jump"],
                     "max_loss_change": jumps["max_change"],
                     "alpha_final": float(alpha[-1]) if len(alpha) else math.nan,
                     "alpha_min": float(np.nanmin(alpha)) if len(alpha) else math.nan,
                     "skipped": int(log["skipped"].astype(bool).sum()),
                     "nonfinite": int(log["nonfinite"].max()) if len(log) else 0})
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    if evals is not None and not evals.empty:
        last = final_evals(evals)[["method", "seed", "acc_mean"]].rename(
            columns={"acc_mean": "val_acc_final"})
        best = (evals.groupby(["method", "seed"])["acc_mean"].max().rename("val_acc_best")
                .reset_index())
        out = out.merge(last, on=["method", "seed"], how="left").merge(best, on=["method", "seed"],
                                                                        how="left")
    if runs is not None and not runs.empty:
        test = runs[["method", "seed", "acc_mean", "auc_mean"]].rename(
            columns={"acc_mean": "test_acc", "auc_mean": "test_auc"})
        out = out.merge(test, on=["method", "seed"], how="left")
    return out


def _std(values: pd.Series) -> float:
    v = values.dropna()
    return float(v.std(ddof=1)) if len(v) > 1 else 0.0


def stability_table(per_run: pd.DataFrame, logs: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per method from :func:`run_statistics`: seeds; mean and std across seeds
    of the final val accuracy and of the test accuracy; loss jumps per run (mean) and
    their mean size; mean rolling variance; α final (mean, std across seeds) and lowest;
    skipped and non-finite updates (totals). With ``logs``, also ``loss_seed_std``: the
    std of the loss across seeds at each iteration, averaged over iterations."""
    rows = []
    for method, g in per_run.groupby("method", sort=False):
        row = {"method": method, "seeds": len(g)}
        for col, name in (("val_acc_final", "val_acc_final"), ("test_acc", "test_acc")):
            if col in g:
                row[f"{name}_mean"] = float(g[col].mean())
                row[f"{name}_std"] = _std(g[col])
        row["loss_jumps_mean"] = float(g["loss_jumps"].mean())
        sizes = g["jump_size"] * g["loss_jumps"]
        row["jump_size_mean"] = (float(sizes.sum() / g["loss_jumps"].sum())
                                 if g["loss_jumps"].sum() else math.nan)
        row["max_loss_change"] = float(g["max_loss_change"].max())
        row["rolling_var_mean"] = float(g["rolling_var_mean"].mean())
        if logs is not None and not logs.empty:
            band = seed_band(logs[logs["method"] == method], "loss")
            row["loss_seed_std"] = float(band["std"].mean()) if len(band) else math.nan
        row["alpha_final_mean"] = float(g["alpha_final"].mean())
        row["alpha_final_std"] = _std(g["alpha_final"])
        row["alpha_min"] = float(g["alpha_min"].min())
        row["skipped"] = int(g["skipped"].sum())
        row["nonfinite"] = int(g["nonfinite"].sum())
        rows.append(row)
    return pd.DataFrame(rows)


# ====================================================================== benchmark
def link_experts(source: str | os.PathLike, target: str | os.PathLike) -> bool:
    """Make ``target`` (an experts folder another tool expects, e.g. the benchmark grid's
    ``<runs>/experts/<flag>-<preset>``) a symlink to the experts in ``source``, when
    ``target`` does not exist yet; True when linked. Training then finds them finished."""
    source, target = Path(source).resolve(), Path(target)
    if target.exists() or target.is_symlink() or not (source / "manifest.json").is_file():
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(source, target_is_directory=True)
    return True


def load_benchmark(path: str | os.PathLike) -> pd.DataFrame:
    """A saved results CSV (``mdd benchmark`` writes ``results/benchmark.csv``; relative
    paths start at the project root), or FileNotFoundError saying how to make one."""
    from .benchmark import read_results
    from .compare import read_benchmark
    from .notebooks import resolve_path, shown_path
    p = resolve_path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no benchmark results at {p}: run the grid (`mdd benchmark`, or "
                                "this notebook with run=True) or point results_csv at a results CSV")
    head = pd.read_csv(p, nrows=0).columns
    if "protocol" in head and "seed" in head:   # the grid's own rows: one per seed
        return read_results(p).assign(source=shown_path(p))
    return read_benchmark(p)


def benchmark_grid(flag: str, ipcs: Sequence[int], methods: Sequence[str], preset: str,
                   out: str | os.PathLike, experts: Any = None, root: str | os.PathLike | None = None,
                   seed: int = 0, device: str = "auto",
                   threads: int | str | None = "auto") -> pd.DataFrame:
    """Run (resumably) the benchmark grid of one flag into ``out``: run folders in
    ``out/benchmark/``, results in ``out/benchmark.csv`` (never the project's
    ``results/``). ``experts`` (an ExpertSet or folder, e.g. notebook 01's) is linked
    where the grid looks for its experts, so they are not trained again. ``threads`` as
    in :func:`ensure_runs`."""
    from .benchmark import GridConfig, run_grid
    out = Path(out)
    if experts is not None:
        link_experts(getattr(experts, "folder", experts),
                     out / "benchmark" / "experts" / f"{flag}-{preset}")
    cfg = GridConfig(flags=[flag], ipcs=[int(i) for i in ipcs], methods=list(methods),
                     preset=preset, seeds=[seed], root=None if root is None else str(root),
                     runs=str(out / "benchmark"), results=str(out / "benchmark.csv"),
                     device=device, progress=False, workers=0)   # in the kernel's process
    with torch_threads(preset_threads(preset, threads)):
        return run_grid(cfg)
