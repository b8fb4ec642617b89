"""The claims verdict (DESIGN.md §3): the paper's three claims checked, by code, against
the benchmark grid's results CSV and, for stability, the run folders' per-iteration logs.
``mdd benchmark --claims`` writes the result as ``claims.md`` beside the CSV
(:mod:`mdd.claims_report`).

Inputs
------
* ``results_csv``: the grid's CSV (:data:`mdd.benchmark.COLUMNS`), one row per flag ×
  size × ipc × method × seed; ``acc_mean`` is a seed's test ACC (the mean of its K test
  networks, a fraction). Methods used here: ``mtt``, ``datm``, ``ptm``, ``ptm+dom``.
* ``runs`` (optional): the grid's runs folder; the run of a row is
  ``<runs>/<flag>-ipc<ipc>-<method>-s<seed>/log.jsonl`` (:func:`mdd.run_folder.read_log`,
  columns ``iteration, phase, loss, …``). Only ``phase == "main"`` rows are read.

Every difference is ``a − b`` paired by distillation seed (a seed fixes the initial real
subset of both methods), from :func:`mdd.stats.paired_difference`: a 95 % percentile
bootstrap CI and a Student-t CI; a difference is **resolved** only when both intervals
exclude 0 (with 3 seeds the bootstrap alone is optimistic). Accuracies are in points.

A **cell** is one flag × ipc. It is *complete* for a comparison when both methods have
at least :data:`MIN_SEEDS` (3, DESIGN.md §2) shared seeds (and, for stability, a log for
each of those runs). A cell the grid lacks, or one below that, is listed as missing or
incomplete with what it lacks; it is never filled in or guessed, and no verdict other
than "not resolved" is given on an average that misses a cell.

Claim 1 — stability (PTM vs MTT, every flag of the grid or the CSV, ipc 2 and 10)
    Per cell: test-ACC std over seeds of each method; per run, from the log, loss jumps
    (:func:`mdd.diagnostics.loss_jumps`, a change by more than ×1.5 between consecutive
    iterations) and the mean rolling variance of the loss
    (:func:`mdd.diagnostics.rolling_variance`, window
    :func:`mdd.diagnostics.default_window` of the run's length); PTM − MTT paired over
    seeds for both log measures. A complete cell is
      - *PTM stabler* when at least one log measure is resolved below 0, neither is
        resolved above 0, and PTM's ACC std is not larger than MTT's;
      - *PTM less stable* when a log measure is resolved above 0;
      - *unresolved* otherwise.
    Verdict: **supported** when every expected cell is complete and *PTM stabler*;
    **not supported** when any complete cell is *PTM less stable* (the claim is made for
    every modality, so one resolved counter-example refutes it); else **not resolved**
    (which is also the verdict without logs: ACC std over 3 seeds alone decides nothing).

Claim 2 — accuracy (PTM+DOM − the previous best, every flag × ipc of the CSV)
    The previous best of a cell is whichever of MTT and DATM has the higher mean test ACC
    over its seeds in that cell (a tie goes to MTT; one of them missing: the other, with
    the cell marked incomplete). Choosing the baseline by its *test* mean is what papers
    do when they report "the previous best", and it favours the baseline (a selection on
    test), so the gain measured here is if anything conservative. The per-cell
    difference is PTM+DOM − best, paired over seeds.
    The **average** over cells weights every cell equally (like a paper's average over
    its table) and gets two 95 % intervals: a two-level bootstrap (resample cells, then
    the seeds' paired differences within each resampled cell; percentile; 10 000
    resamples, seed 0), which counts the spread between cells, and a stratified
    Student-t interval with the cells fixed (standard error sqrt(Σ s_i²/k_i)/n from each
    cell's seed spread, Welch–Satterthwaite degrees of freedom; with one cell, that
    cell's own paired t interval), which counts the seed noise within cells. Requiring
    both to clear a bound is conservative on both counts. Two such averages are checked
    against the paper: all cells against +8.33 points, the ipc-2 cells against +11.7.
    Each gets a verdict:
      - **supported**: every expected cell complete, both intervals' lower ends above 0
        and both upper ends at or above the paper's figure (a gain, and one the data do
        not show to be smaller than claimed);
      - **not supported**: every expected cell complete and both upper ends below the
        paper's figure (the data exclude a gain that large; this includes any
        resolved loss);
      - **not resolved** otherwise.
    The claim's verdict: supported when both are; not supported when either is; else
    not resolved.

Claim 3 — DOM's own effect (PTM+DOM − PTM, every flag × ipc of the CSV)
    Per cell paired over seeds, averaged over cells as in claim 2. The paper states no
    size, so the verdict is on the sign: **supported** when every expected cell is
    complete and the average is resolved above 0 (both lower ends > 0); **not supported**
    when every expected cell is complete and both upper ends are ≤ 0 (no gain, or a loss,
    resolved); else **not resolved**.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from . import stats
from .stability import run_log_stats  # noqa: F401  (public here since its first release)

#: The paper's figures (arXiv 2403.13469, abstract), in points of test ACC.
PAPER_AVERAGE_GAIN = 8.33
PAPER_IPC2_GAIN = 11.7
#: Where the stability claim is checked.
STABILITY_IPCS = (2, 10)
#: The baselines of "the previous best".
BASELINES = ("mtt", "datm")
#: Seeds a cell needs (DESIGN.md §2: a cell is ≥ 3 distillation seeds).
MIN_SEEDS = 3
CONFIDENCE = 0.95
N_RESAMPLES = 10_000

SUPPORTED, NOT_SUPPORTED, NOT_RESOLVED = "supported", "not supported", "not resolved"


# ====================================================================== reading
def _results(results: str | Path | pd.DataFrame) -> pd.DataFrame:
    from .benchmark import read_results
    df = results.copy() if isinstance(results, pd.DataFrame) else read_results(results)
    df["ipc"] = pd.to_numeric(df["ipc"], errors="coerce").astype("Int64")
    df["acc_mean"] = pd.to_numeric(df["acc_mean"], errors="coerce")
    return df[df["ipc"].notna()]          # full (ipc empty) is no cell of these claims


def _by_seed(df: pd.DataFrame, flag: str, ipc: int, method: str) -> dict[int, float]:
    """{seed: test ACC} of one method in one cell (finite values only)."""
    g = df[(df["flag"] == flag) & (df["ipc"] == ipc) & (df["method"] == method)]
    return {int(s): float(a) for s, a in zip(g["seed"], g["acc_mean"]) if math.isfinite(a)}


Cells = Sequence[tuple[str, int]]


def _cells(df: pd.DataFrame, expected: Cells | None = None) -> list[tuple[str, int]]:
    """The ``expected`` flag × ipc cells (the grid that was asked for) first, then every
    other cell the CSV has a row for, in its order: a cell the grid has not reached yet is
    listed as missing, so a partial grid never reads as complete."""
    seen = [(str(f), int(i)) for f, i in zip(df["flag"], df["ipc"])]
    return list(dict.fromkeys([(str(f), int(i)) for f, i in (expected or [])] + seen))


# ====================================================================== statistics
def _pair(a: dict[int, float], b: dict[int, float]) -> dict:
    return stats.paired_difference(a, b, CONFIDENCE, N_RESAMPLES)


def _lows_highs(d: dict) -> tuple[list[float], list[float]] | None:
    """([bootstrap low, t low], [bootstrap high, t high]), or None without intervals."""
    if d.get("ci_low") is None or d.get("t_low") is None:
        return None
    return [d["ci_low"], d["t_low"]], [d["ci_high"], d["t_high"]]


def resolved_sign(d: dict) -> int:
    """+1 / −1 when both intervals lie above / below 0, else 0."""
    b = _lows_highs(d)
    if b is None:
        return 0
    lows, highs = b
    return 1 if min(lows) > 0 else -1 if max(highs) < 0 else 0


def average_difference(diffs: Sequence[Sequence[float]], confidence: float = CONFIDENCE,
                       n_resamples: int = N_RESAMPLES, seed: int = 0) -> dict:
    """The equally weighted average over cells of per-cell mean paired differences.

    ``diffs``: one list of per-seed paired differences per cell (empty cells are left
    out). Returns ``cells``, ``pairs`` (differences in all), ``mean``, ``ci_low``/``ci_high``
    (two-level percentile bootstrap: cells resampled with replacement, then each chosen
    cell's differences — the spread between cells counts), ``t_low``/``t_high`` (a
    stratified Student t with the cells fixed, :func:`_stratified_t` — the seed spread
    within cells counts; with one cell, that cell's own t interval) and ``resolved``
    (both exclude 0).
    """
    cells = [np.asarray(d, dtype=float) for d in diffs if len(d)]
    out = {"cells": len(cells), "pairs": int(sum(len(c) for c in cells)), "mean": None,
           "ci_low": None, "ci_high": None, "t_low": None, "t_high": None,
           "confidence": confidence, "resolved": None}
    if not cells:
        return out
    means = np.array([c.mean() for c in cells])
    out["mean"] = float(means.mean())
    rng = np.random.default_rng(seed)
    # each cell's bootstrap means (cells × resamples), then cells drawn per resample
    inner = np.stack([c[rng.integers(0, len(c), (n_resamples, len(c)))].mean(axis=1)
                      for c in cells])
    pick = rng.integers(0, len(cells), (n_resamples, len(cells)))
    avg = inner[pick, np.arange(n_resamples)[:, None]].mean(axis=1)
    if out["pairs"] >= 2:
        q = (1 - confidence) / 2
        out["ci_low"], out["ci_high"] = (float(v) for v in np.quantile(avg, [q, 1 - q]))
    out["t_low"], out["t_high"] = _stratified_t(cells, confidence)
    if out["ci_low"] is not None and out["t_low"] is not None:
        out["resolved"] = bool((out["ci_low"] > 0 and out["t_low"] > 0)
                               or (out["ci_high"] < 0 and out["t_high"] < 0))
    return out


def _stratified_t(cells: list[np.ndarray], confidence: float) -> tuple[float, float] | tuple[None, None]:
    """Student-t CI of the mean of cell means with the cells fixed (the table the paper
    averages is these flags × ipcs, not a sample of them): standard error from the
    within-cell seed spread, sqrt(Σ s_i²/k_i) / n, Welch–Satterthwaite degrees of
    freedom. One cell: exactly that cell's paired t interval. (None, None) when a cell
    has fewer than 2 seeds (its spread is unknown)."""
    if any(len(c) < 2 for c in cells):
        return None, None
    n, mean = len(cells), float(np.mean([c.mean() for c in cells]))
    parts = np.array([c.var(ddof=1) / len(c) / n ** 2 for c in cells])
    se2 = float(parts.sum())
    if se2 == 0:
        return mean, mean
    df = se2 ** 2 / float(sum(p ** 2 / (len(c) - 1) for p, c in zip(parts, cells)))
    half = float(sps.t.ppf(0.5 + confidence / 2, df)) * math.sqrt(se2)
    return mean - half, mean + half


def gain_verdict(avg: dict, claimed: float | None, complete: bool) -> tuple[str, str]:
    """(verdict, reason) of an average gain (fractions) against the paper's ``claimed``
    figure in points (None: a claim of sign only), by the module doc's rule."""
    if not complete:
        return NOT_RESOLVED, "cells are missing or have fewer than 3 seeds"
    b = _lows_highs(avg)
    if b is None:
        return NOT_RESOLVED, "no interval (fewer than 2 paired values)"
    lows, highs = [100 * v for v in b[0]], [100 * v for v in b[1]]
    target = 0.0 if claimed is None else claimed
    if claimed is None:
        if min(lows) > 0:
            return SUPPORTED, "both intervals lie above 0"
        if max(highs) <= 0:
            return NOT_SUPPORTED, "both intervals lie at or below 0"
        return NOT_RESOLVED, "an interval includes 0"
    if min(lows) > 0 and min(highs) >= target:
        return SUPPORTED, f"both intervals lie above 0 and reach {target:+.2f}"
    if max(highs) < target:
        return NOT_SUPPORTED, f"both intervals lie below the paper's {target:+.2f}"
    return NOT_RESOLVED, ("an interval includes 0" if min(lows) <= 0
                          else f"an interval stops below {target:+.2f}")


def _combine(verdicts: Sequence[str]) -> str:
    if verdicts and all(v == SUPPORTED for v in verdicts):
        return SUPPORTED
    if any(v == NOT_SUPPORTED for v in verdicts):
        return NOT_SUPPORTED
    return NOT_RESOLVED


# ====================================================================== the claims
def _log_stats(df: pd.DataFrame, grid, flag: str, ipc: int, method: str, seed: int) -> dict | None:
    """A run's loss jumps and rolling variance: from its CSV row (the grid records them,
    so the claim needs no run folder) or else from its log in the runs folder."""
    row = df[(df["flag"] == flag) & (df["ipc"] == ipc) & (df["method"] == method) & (df["seed"] == seed)]
    if len(row) and "loss_jumps" in row:
        jumps = pd.to_numeric(row["loss_jumps"], errors="coerce").iloc[0]
        rv = pd.to_numeric(row["loss_rolling_var"], errors="coerce").iloc[0]
        if math.isfinite(jumps) and math.isfinite(rv):
            return {"jumps": float(jumps), "rolling_var_mean": float(rv)}
    if grid is None:
        return None
    from .benchmark import _run_folder
    return run_log_stats(_run_folder(grid, flag, ipc, method, seed))


def stability_claim(df: pd.DataFrame, runs: str | Path | None = None,
                    ipcs: Sequence[int] = STABILITY_IPCS, expected: Cells | None = None) -> dict:
    """Claim 1. Returns ``cells`` (one dict per flag × ipc: ``flag, ipc, seeds, status,
    acc_std_ptm, acc_std_mtt`` (fractions), and with logs ``jumps_ptm/_mtt`` and
    ``rv_ptm/_mtt`` (means over the paired runs), ``d_jumps``/``d_rv`` (paired
    differences, :func:`mdd.stats.paired_difference`), ``outcome``), ``verdict`` and
    ``reason``. ``expected``: the grid's cells; its flags count even without a row."""
    from .benchmark import GridConfig
    grid = GridConfig(runs=str(runs)) if runs is not None else None
    flags = list(dict.fromkeys(f for f, _ in _cells(df, expected)))
    cells, logs_seen = [], False
    for flag in flags:
        for ipc in ipcs:
            ptm, mtt = _by_seed(df, flag, ipc, "ptm"), _by_seed(df, flag, ipc, "mtt")
            row = {"flag": flag, "ipc": ipc, "seeds": len(set(ptm) & set(mtt)),
                   "acc_std_ptm": stats.summarize(list(ptm.values()))["std"],
                   "acc_std_mtt": stats.summarize(list(mtt.values()))["std"],
                   "outcome": None}
            lacking = [m for m, v in (("ptm", ptm), ("mtt", mtt)) if not v]
            if lacking:
                row["status"] = "missing: " + ", ".join(lacking)
                cells.append(row)
                continue
            shared = sorted(set(ptm) & set(mtt))
            per = {m: {s: _log_stats(df, grid, flag, ipc, m, s) for s in shared} for m in ("ptm", "mtt")}
            if all(v is None for p in per.values() for v in p.values()):
                per = {}
            with_logs = [s for s in shared if per and all(per[m][s] is not None for m in per)]
            logs_seen |= bool(with_logs)
            if with_logs:
                for key, col in (("jumps", "jumps"), ("rv", "rolling_var_mean")):
                    vals = {m: {s: float(per[m][s][col]) for s in with_logs} for m in per}
                    row[f"{key}_ptm"] = float(np.nanmean(list(vals["ptm"].values())))
                    row[f"{key}_mtt"] = float(np.nanmean(list(vals["mtt"].values())))
                    row[f"d_{key}"] = _pair(vals["ptm"], vals["mtt"])
            if len(shared) < MIN_SEEDS:
                row["status"] = f"incomplete: {len(shared)} shared seed(s)"
            elif len(with_logs) < len(shared):
                row["status"] = f"incomplete: logs for {len(with_logs)} of {len(shared)} seeds"
            else:
                row["status"] = "complete"
                signs = [resolved_sign(row["d_jumps"]), resolved_sign(row["d_rv"])]
                if max(signs) > 0:
                    row["outcome"] = "PTM less stable"
                elif min(signs) < 0 and row["acc_std_ptm"] <= row["acc_std_mtt"]:
                    row["outcome"] = "PTM stabler"
                else:
                    row["outcome"] = "unresolved"
            cells.append(row)
    complete = [c for c in cells if c["status"] == "complete"]
    if any(c["outcome"] == "PTM less stable" for c in complete):
        verdict, reason = NOT_SUPPORTED, "a complete cell shows PTM resolved less stable"
    elif cells and len(complete) == len(cells) and all(c["outcome"] == "PTM stabler" for c in complete):
        verdict, reason = SUPPORTED, "every cell shows PTM resolved stabler"
    elif not cells:
        verdict, reason = NOT_RESOLVED, "no flag in the results"
    elif not logs_seen:
        verdict, reason = NOT_RESOLVED, "no loss logs (neither the CSV's loss_jumps nor a runs folder)"
    elif len(complete) < len(cells):
        verdict, reason = NOT_RESOLVED, f"{len(cells) - len(complete)} cell(s) missing or incomplete"
    else:
        verdict, reason = NOT_RESOLVED, "not every cell shows PTM resolved stabler"
    return {"cells": cells, "verdict": verdict, "reason": reason}


def best_baseline(df: pd.DataFrame, flag: str, ipc: int,
                  baselines: Sequence[str] = BASELINES) -> tuple[str | None, dict[str, float]]:
    """The previous best of a cell: the baseline with the highest mean test ACC over its
    seeds (ties: the first of ``baselines``); also every present baseline's mean."""
    means = {m: float(np.mean(list(v.values()))) for m in baselines
             if (v := _by_seed(df, flag, ipc, m))}
    if not means:
        return None, means
    return max(means, key=lambda m: (means[m], -baselines.index(m))), means


def _gain_cells(df: pd.DataFrame, a: str, b: str | None, expected: Cells | None = None) -> list[dict]:
    """Per cell ``a − b`` paired over seeds (``b`` None: the best baseline)."""
    out = []
    for flag, ipc in _cells(df, expected):
        va = _by_seed(df, flag, ipc, a)
        if b is None:
            ref, means = best_baseline(df, flag, ipc)
            absent = [m for m in BASELINES if m not in means]
        else:
            ref, means, absent = b, {}, []
            if not _by_seed(df, flag, ipc, b):
                ref = None
        row = {"flag": flag, "ipc": ipc, "a": a, "b": ref, "baseline_means": means,
               "diff": None, "seeds": 0}
        lacking = ([a] if not va else []) + ([b or "mtt/datm"] if ref is None else [])
        if lacking:
            row["status"] = "missing: " + ", ".join(lacking)
            out.append(row)
            continue
        d = _pair(va, _by_seed(df, flag, ipc, ref))
        row["diff"], row["seeds"] = d, d["n"]
        if d["n"] < MIN_SEEDS:
            row["status"] = f"incomplete: {d['n']} shared seed(s)"
        elif absent:
            row["status"] = "incomplete: " + ", ".join(absent) + " missing"
        else:
            row["status"] = "complete"
        out.append(row)
    return out


def _average(cells: list[dict], claimed: float | None) -> dict:
    avg = average_difference([c["diff"]["diffs"] for c in cells if c["diff"]])
    complete = bool(cells) and all(c["status"] == "complete" for c in cells)
    avg["verdict"], avg["reason"] = gain_verdict(avg, claimed, complete)
    avg["claimed"] = claimed
    return avg


def accuracy_claim(df: pd.DataFrame, expected: Cells | None = None) -> dict:
    """Claim 2. ``cells`` (per flag × ipc: ``b`` the chosen baseline, ``baseline_means``,
    ``diff`` a paired difference, ``status``), ``average`` and ``ipc2`` (averages with
    ``verdict``/``reason``, :func:`average_difference`), ``verdict``, ``reason``."""
    cells = _gain_cells(df, "ptm+dom", None, expected)
    average = _average(cells, PAPER_AVERAGE_GAIN)
    at2 = [c for c in cells if c["ipc"] == 2]
    ipc2 = _average(at2, PAPER_IPC2_GAIN) if at2 else {
        **average_difference([]), "verdict": NOT_RESOLVED, "reason": "no ipc-2 cell in the results",
        "claimed": PAPER_IPC2_GAIN}
    verdict = _combine([average["verdict"], ipc2["verdict"]])
    reason = f"average: {average['verdict']} ({average['reason']}); ipc 2: {ipc2['verdict']} ({ipc2['reason']})"
    return {"cells": cells, "average": average, "ipc2": ipc2, "verdict": verdict, "reason": reason}


def dom_claim(df: pd.DataFrame, expected: Cells | None = None) -> dict:
    """Claim 3: PTM+DOM − PTM per cell and averaged (``cells``, ``average``, ``verdict``)."""
    cells = _gain_cells(df, "ptm+dom", "ptm", expected)
    average = _average(cells, None)
    return {"cells": cells, "average": average, "verdict": average["verdict"],
            "reason": average["reason"]}


def claims(results: str | Path | pd.DataFrame, runs: str | Path | None = None,
           expected: Cells | None = None) -> dict:
    """All three claims: ``{"stability": …, "accuracy": …, "dom": …}`` (see each).
    ``expected``: the (flag, ipc) cells the grid was asked for (``mdd benchmark --claims``
    passes its ``--flags`` × ``--ipcs``); None: the cells the CSV has rows for."""
    df = _results(results)
    return {"stability": stability_claim(df, runs, expected=expected),
            "accuracy": accuracy_claim(df, expected), "dom": dom_claim(df, expected)}
