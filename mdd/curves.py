"""Val curves that size a preset: how many iterations before a method stops gaining?

A *curve run* is a distillation run carried well past the preset's budget, with val
evaluations every ``eval_every`` iterations and no test evaluation (it is an ablation
cell, :mod:`mdd.ablation`). PTM keeps the preset's stage length, so the first
``iterations`` of a long run are the preset's run and the rest extends its last stage:
the curve then reads "what would a longer budget have given" for the same schedule.

The rule that turns curves into a budget is stated here, before any curve is seen:
for each (flag, ipc, method), the **plateau iteration** is the first evaluated
iteration whose mean val AUC over seeds comes within ``tol`` of the best mean val AUC
of the curve; the preset's budget is the largest plateau iteration over all cells (one
preset for every dataset, nothing tuned per dataset).

Python::

    from mdd import curves
    c = curves.read_curves({("breastmnist", 2, "mtt", 0): "runs/…/breastmnist-ipc2-mtt-s0", …})
    p = curves.plateau_table(c)          # one row per (flag, ipc, method)
    curves.curves_figure(c, p)
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping

import pandas as pd
from matplotlib.figure import Figure

#: One row per val evaluation of a curve run.
CURVE_COLUMNS = ("flag", "ipc", "method", "seed", "iteration", "auc_mean", "bacc_mean", "acc_mean",
                 "alpha")
KEYS = ["flag", "ipc", "method"]


def read_curves(runs: Mapping[tuple[str, int, str, int], str | os.PathLike]) -> pd.DataFrame:
    """Every val evaluation of the runs ``{(flag, ipc, method, seed): run folder}`` that
    exist, iteration 0 (the initialisation) included; columns :data:`CURVE_COLUMNS`,
    ``iteration`` counting matching iterations (``main_iteration`` of the log)."""
    from .run_folder import read_evals
    rows = []
    for (flag, ipc, method, seed), run in runs.items():
        if not os.path.isfile(os.path.join(run, "evals.jsonl")):
            continue
        for e in read_evals(run):
            # x = matching iterations (the preset's unit): DOM's retraining iterations
            # differ between seeds and would misalign their curves
            rows.append({"flag": flag, "ipc": int(ipc), "method": method, "seed": int(seed),
                         **{k: e.get(k) for k in CURVE_COLUMNS[4:]},
                         "iteration": e.get("main_iteration", e["iteration"])})
    return pd.DataFrame(rows, columns=list(CURVE_COLUMNS))


def mean_curves(curves: pd.DataFrame, metric: str = "auc_mean") -> pd.DataFrame:
    """Mean, std and seed count of ``metric`` per (flag, ipc, method, iteration)."""
    g = curves.dropna(subset=[metric]).groupby(KEYS + ["iteration"])[metric]
    return g.agg(mean="mean", std="std", seeds="count").reset_index()


def complete_means(means: pd.DataFrame) -> pd.DataFrame:
    """Rows of :func:`mean_curves` at iterations that every seed of their (flag, ipc,
    method) reached: a run still going would otherwise make the mean one seed's curve."""
    most = means.groupby(KEYS)["seeds"].transform("max")
    return means[means["seeds"] == most]


def plateau_table(curves: pd.DataFrame, tol: float = 0.005, metric: str = "auc_mean",
                  min_seeds: int = 1) -> pd.DataFrame:
    """The stated rule (module docstring): per (flag, ipc, method), the best mean val
    ``metric`` over the evaluated iterations > 0, where it is reached, and the plateau
    iteration (first within ``tol`` of the best). Only iterations that every seed of the
    cell reached count (a run still going would otherwise turn the mean into one seed's
    curve past its point), and none seen by fewer than ``min_seeds`` seeds."""
    m = mean_curves(curves[curves["iteration"] > 0], metric)
    m = m[m["seeds"] >= min_seeds]
    rows = []
    for key, g in complete_means(m).groupby(KEYS, sort=True):
        g = g.sort_values("iteration")
        best = g.loc[g["mean"].idxmax()]
        plateau = g[g["mean"] >= best["mean"] - tol].iloc[0]
        rows.append({**dict(zip(KEYS, key)), "seeds": int(g["seeds"].max()),
                     "last_iteration": int(g["iteration"].max()),
                     "best": float(best["mean"]), "best_iteration": int(best["iteration"]),
                     "plateau_iteration": int(plateau["iteration"]),
                     "at_plateau": float(plateau["mean"]), "tol": tol})
    return pd.DataFrame(rows)


def preset_budget(plateaus: pd.DataFrame) -> int | None:
    """The preset's iteration budget by the stated rule: the largest plateau iteration
    over every cell (None without curves)."""
    return int(plateaus["plateau_iteration"].max()) if len(plateaus) else None


#: One row per val network per evaluation of a curve run (held-out selection).
NETWORK_COLUMNS = ("flag", "ipc", "method", "seed", "iteration", "network", "auc", "bacc")


def read_network_curves(runs: Mapping[tuple[str, int, str, int], str | os.PathLike]) -> pd.DataFrame:
    """Like :func:`read_curves`, one row per val network (``aucs``/``baccs`` of each
    evaluation; ``network`` is its index in the evaluation's ``val_seeds``)."""
    from .run_folder import read_evals
    rows = []
    for (flag, ipc, method, seed), run in runs.items():
        if not os.path.isfile(os.path.join(run, "evals.jsonl")):
            continue
        for e in read_evals(run):
            it = e.get("main_iteration", e["iteration"])
            for j, (auc, bacc) in enumerate(zip(e.get("aucs") or [], e.get("baccs") or [])):
                rows.append({"flag": flag, "ipc": int(ipc), "method": method, "seed": int(seed),
                             "iteration": it, "network": j, "auc": auc, "bacc": bacc})
    return pd.DataFrame(rows, columns=list(NETWORK_COLUMNS))


def heldout_selection(nets: pd.DataFrame, every: int, budget: int) -> pd.DataFrame:
    """What selecting every ``every`` iterations gives, scored on val networks the choice
    did not see (the second stated rule, ``benchmarks/eval_every.py``).

    Per run reaching ``budget``: the candidates are the iterations in (0, budget] that
    are multiples of ``every``, and ``budget`` itself (a run's last iterate is always a
    candidate). For each val network j, the checkpoint is chosen on the others (mean AUC,
    ties mean balanced ACC, then the earlier) and scored by j's AUC. One row per run:
    ``heldout_auc`` (mean over j) and the ``picks``.
    """
    rows = []
    for (flag, ipc, method, seed), g in nets.groupby(KEYS + ["seed"], sort=True):
        if g["iteration"].max() < budget:
            continue
        g = g[(g["iteration"] > 0) & (g["iteration"] <= budget)
              & ((g["iteration"] % every == 0) | (g["iteration"] == budget))]
        auc = g.pivot(index="iteration", columns="network", values="auc")
        bacc = g.pivot(index="iteration", columns="network", values="bacc")
        scores, picks = [], []
        for j in auc.columns:
            others = [c for c in auc.columns if c != j]
            table = pd.DataFrame({"auc": auc[others].mean(axis=1), "bacc": bacc[others].mean(axis=1)})
            table = table.reset_index().sort_values(["auc", "bacc", "iteration"],
                                                    ascending=[False, False, True])
            pick = int(table["iteration"].iloc[0])
            scores.append(float(auc.loc[pick, j]))
            picks.append(pick)
        rows.append({"flag": flag, "ipc": int(ipc), "method": method, "seed": int(seed),
                     "every": every, "budget": budget, "candidates": len(auc),
                     "heldout_auc": sum(scores) / len(scores), "picks": picks})
    return pd.DataFrame(rows)


def eval_every_table(nets: pd.DataFrame, budget: int, coarse: int, fine: int) -> pd.DataFrame:
    """Per (flag, ipc, method): held-out val AUC selecting every ``fine`` and every
    ``coarse`` iterations, and their paired difference (coarse − fine) over seeds with
    95 % intervals (:func:`mdd.stats.paired_difference`)."""
    from .stats import paired_difference
    a, b = heldout_selection(nets, coarse, budget), heldout_selection(nets, fine, budget)
    rows: list[dict] = []
    if a.empty:
        return pd.DataFrame(rows)
    fine_runs = dict(tuple(b.groupby(KEYS, sort=True)))
    for key, ga in a.groupby(KEYS, sort=True):
        gb = fine_runs[key]   # the same runs: both grids need the same budget reached
        d = paired_difference(dict(zip(ga["seed"], ga["heldout_auc"])),
                              dict(zip(gb["seed"], gb["heldout_auc"])))
        rows.append({**dict(zip(KEYS, key)), "seeds": d["n"], f"every_{fine}": float(gb["heldout_auc"].mean()),
                     f"every_{coarse}": float(ga["heldout_auc"].mean()), "diff": d["mean"],
                     "ci_low": d["ci_low"], "ci_high": d["ci_high"]})
    return pd.DataFrame(rows)


def coarse_selection_ok(table: pd.DataFrame, tol: float = 0.005, cell_tol: float = 0.01) -> bool | None:
    """The stated rule: the coarser candidate grid is kept when the mean paired
    difference over all runs is ≥ −``tol`` and no cell's mean is below −``cell_tol``
    (None without cells). Runs, not cells, are averaged: every cell has its seeds."""
    if table.empty:
        return None
    overall = float((table["diff"] * table["seeds"]).sum() / table["seeds"].sum())
    return bool(overall >= -tol and (table["diff"] >= -cell_tol).all())


def curves_figure(curves: pd.DataFrame, plateaus: pd.DataFrame | None = None,
                  metric: str = "auc_mean", budget: int | None = None, title: str = "") -> Figure:
    """One panel per (flag, ipc): each method's mean val ``metric`` over seeds against
    iteration with a ±std band, thin lines per seed, a dotted mark at each method's
    plateau iteration and a dashed line at ``budget`` (the preset's iterations)."""
    cells = sorted({(f, int(i)) for f, i in zip(curves["flag"], curves["ipc"])})
    n = max(1, len(cells))
    cols = min(n, 2)
    rows = math.ceil(n / cols)
    from .viz import new_figure
    fig, axes = new_figure(rows, cols, figsize=(5.2 * cols, 3.6 * rows))
    means = complete_means(mean_curves(curves, metric))
    for ax, (flag, ipc) in zip(axes.flat, cells):
        sub = curves[(curves["flag"] == flag) & (curves["ipc"] == ipc)]
        for k, method in enumerate(sorted(sub["method"].unique())):
            color = f"C{k}"
            for _, s in sub[sub["method"] == method].groupby("seed"):
                ax.plot(s["iteration"], s[metric], color=color, alpha=0.25, lw=0.8)
            m = means[(means["flag"] == flag) & (means["ipc"] == ipc) & (means["method"] == method)]
            ax.plot(m["iteration"], m["mean"], color=color, lw=2,
                    label=f"{method} ({int(m['seeds'].max()) if len(m) else 0} seeds)")
            ax.fill_between(m["iteration"], m["mean"] - m["std"].fillna(0),
                            m["mean"] + m["std"].fillna(0), color=color, alpha=0.15)
            if plateaus is not None and len(plateaus):
                p = plateaus[(plateaus["flag"] == flag) & (plateaus["ipc"] == ipc)
                             & (plateaus["method"] == method)]
                if len(p):
                    ax.axvline(p["plateau_iteration"].iloc[0], color=color, ls=":", lw=1.2)
        if budget:
            ax.axvline(budget, color="k", ls="--", lw=1, label=f"budget {budget}")
        ax.set(title=f"{flag}, ipc {ipc}", xlabel="iteration", ylabel=f"val {metric.split('_')[0].upper()}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    for ax in list(axes.flat)[len(cells):]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def curve_runs(root: str | os.PathLike, name: str, flags: list[str], ipcs: list[int],
               methods: list[str], seeds: list[int]) -> dict[tuple[str, int, str, int], str]:
    """The run folders an ablation named ``name`` gives its cells (variants named after
    the methods), whether or not they exist yet."""
    return {(f, i, m, s): os.path.join(root, name, f"{f}-ipc{i}-{m}-s{s}")
            for f in flags for i in ipcs for m in methods for s in seeds}
