"""DOM and overlap diagnostics of distillation runs (notebook 03): within-class
similarity matrices from snapshots, overlap over time, DOM's checks and replacements.

Reads run folders written by :func:`mdd.distill.distill` (``list_snapshots``,
``load_snapshot``, ``read_dom_events``, ``load_dom_event`` of :mod:`mdd.run_folder`);
figures are drawn by :mod:`mdd.viz`. Run-level loading and stability statistics are in
:mod:`mdd.diagnostics`.
"""
from __future__ import annotations

import math
import os
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from .diagnostics import run_records


def similarity_snapshots(run: str | os.PathLike) -> list[tuple[int, dict[int, np.ndarray]]]:
    """(iteration, {class: within-class cosine matrix}) of every snapshot that logged them."""
    from .run_folder import list_snapshots, load_snapshot
    out = []
    for it, path in list_snapshots(run):
        snap = load_snapshot(path)
        mats = {int(k.removeprefix("sim_class")): np.asarray(v) for k, v in snap.items()
                if k.startswith("sim_class")}
        if mats:
            out.append((it, dict(sorted(mats.items()))))
    return out


def class_similarity_matrices(x: torch.Tensor, y: torch.Tensor | np.ndarray, experts: Any,
                              epoch: int | None = None, expert: int = 0) -> dict[int, np.ndarray]:
    """Within-class cosine matrices of images ``x`` (normalized N×C×H×W) recomputed in the
    penultimate features of ``expert`` at ``epoch`` (default its last): for snapshots
    saved without matrices."""
    from .matching import Student
    from .overlap import class_similarity, embed
    student = Student(experts.net(), experts.layout)
    epoch = experts.epochs if epoch is None else epoch
    theta = experts.snapshots(expert, [epoch])[0]
    x = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    y = torch.as_tensor(np.asarray(y)).long()
    feats = embed(student, theta, x)
    num = int(experts.manifest["net"]["num_classes"])
    return {c: s.numpy() for c, (_, s) in class_similarity(feats, y, num).items()}


def pair_stats(mats: dict[int, np.ndarray], tau: float) -> dict:
    """Over within-class pairs (upper triangles): mean and max similarity, pairs, and the
    fraction above ``tau`` (the overlap ratio of :func:`mdd.overlap.detect`)."""
    vals = np.concatenate([m[np.triu_indices(len(m), 1)] for m in mats.values()] or [np.zeros(0)])
    if not len(vals):
        return {"pairs": 0, "mean_similarity": math.nan, "max_similarity": math.nan,
                "overlap_ratio": 0.0}
    return {"pairs": len(vals), "mean_similarity": float(vals.mean()),
            "max_similarity": float(vals.max()), "overlap_ratio": float((vals > tau).mean())}


def dom_events_table(run: str | os.PathLike) -> pd.DataFrame:
    """One row per DOM check of a run: iteration, reason, stage, target, tau,
    overlap_ratio, mean_similarity, max_similarity (from the event's matrices),
    overlapping pairs, replaced (count), which set indices ← which train indices, and
    tau_per_class. Under the data-relative rule (DOM v2: the event's τ is a summary with
    one τ_c per class) ``tau`` is their mean and ``tau_per_class`` lists them
    (``0: 0.586, 1: 0.549``); under a fixed τ it is empty."""
    from .run_folder import load_dom_event, read_dom_events
    rows = []
    for e in read_dom_events(run):
        arrays = load_dom_event(run, e)
        mats = {k: v for k, v in arrays.items() if k.startswith("sim_class")}
        real = e.get("real_indices") or {}
        tau, per_class = e.get("tau"), ""
        if isinstance(tau, dict):
            taus = sorted((int(c), v["tau"]) for c, v in (tau.get("per_class") or {}).items())
            per_class = ", ".join(f"{c}: {t:.4g}" for c, t in taus)
            tau = tau.get("tau_mean")
        rows.append({"iteration": e["iteration"], "reason": e.get("reason"), "stage": e.get("stage"),
                     "target": e.get("target"), "tau": tau,
                     "overlap_ratio": e.get("overlap_ratio"), "mean_similarity": e.get("mean_similarity"),
                     "max_similarity": pair_stats(mats, 1.0 if tau is None else tau)["max_similarity"],
                     "pairs": len(e.get("pairs") or []), "replaced": len(real),
                     "replaced_from": ", ".join(f"{k}←{v}" for k, v in sorted(real.items(),
                                                                           key=lambda kv: int(kv[0]))),
                     "tau_per_class": per_class})
    cols = ["iteration", "reason", "stage", "target", "tau", "overlap_ratio", "mean_similarity",
            "max_similarity", "pairs", "replaced", "replaced_from", "tau_per_class"]
    return pd.DataFrame(rows, columns=cols)


def similarity_panels(runs: pd.DataFrame | Iterable[dict], experts: Any = None,
                      which: Sequence[str] = ("first", "last")) -> list[tuple[str, dict]]:
    """Heatmap panels ``(label, {class: matrix})`` per run: its first and/or last snapshot
    that logged similarity matrices. A run whose snapshots have none gets them
    recomputed from its last snapshot's images with ``experts``' last epoch
    (:func:`class_similarity_matrices`)."""
    from .run_folder import list_snapshots, load_snapshot
    panels = []
    for r in run_records(runs):
        snaps = similarity_snapshots(r["run"])
        label = f"{r['method']} s{r['seed']}"
        if snaps:
            picks = {"first": snaps[0], "last": snaps[-1]}
            chosen = [picks[w] for w in which]
            if len(snaps) == 1:
                chosen = chosen[:1]
            panels += [(f"{label}\nit {it}", mats) for it, mats in chosen]
        elif experts is not None and list_snapshots(r["run"]):
            it, path = list_snapshots(r["run"])[-1]
            snap = load_snapshot(path)
            panels.append((f"{label}\nit {it} (recomputed)",
                           class_similarity_matrices(snap["x"], snap["y"], experts)))
    return panels


def load_dom_events(runs: pd.DataFrame | Iterable[dict]) -> pd.DataFrame:
    """:func:`dom_events_table` of every run (runs without DOM add no rows), with
    method and seed in front."""
    parts = []
    for r in run_records(runs):
        t = dom_events_table(r["run"])
        if len(t):
            t.insert(0, "seed", int(r["seed"]))
            t.insert(0, "method", r["method"])
            parts.append(t)
    if not parts:
        return pd.DataFrame(columns=["method", "seed", "iteration", "reason", "stage", "target", "tau",
                                  "overlap_ratio", "mean_similarity", "max_similarity", "pairs",
                                  "replaced", "replaced_from", "tau_per_class"])
    return pd.concat(parts, ignore_index=True)


def overlap_summary(logs: pd.DataFrame, events: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per method × seed: the logged within-class similarity and overlap ratio
    at the first and last iteration and their means; with ``events``, DOM checks,
    images replaced and the highest pair similarity seen at a check."""
    rows = []
    for (method, seed), log in logs.groupby(["method", "seed"], sort=False):
        log = log.sort_values("iteration")
        sim, ratio = log["mean_similarity"].astype(float), log["overlap_ratio"].astype(float)
        row = {"method": method, "seed": int(seed),
               "similarity_first": float(sim.iloc[0]), "similarity_last": float(sim.iloc[-1]),
               "similarity_mean": float(sim.mean()), "overlap_first": float(ratio.iloc[0]),
               "overlap_last": float(ratio.iloc[-1]), "overlap_mean": float(ratio.mean()),
               "dom_checks": 0, "replaced": 0, "max_similarity_at_checks": math.nan}
        if events is not None and len(events):
            ev = events[(events["method"] == method) & (events["seed"] == seed)]
            if len(ev):
                row.update(dom_checks=len(ev), replaced=int(ev["replaced"].sum()),
                           max_similarity_at_checks=float(ev["max_similarity"].max()))
        rows.append(row)
    return pd.DataFrame(rows)


def dom_replacements(run: str | os.PathLike) -> list[dict]:
    """Every image a DOM check replaced, in order: iteration, index (in the set), label,
    real_index (train image it was re-seeded from), before and after (normalized
    C×H×W), and final (the same index in the run's last snapshot, None without one)."""
    from .run_folder import list_snapshots, load_dom_event, load_snapshot, read_dom_events
    snaps = list_snapshots(run)
    final = load_snapshot(snaps[-1][1])["x"] if snaps else None
    out = []
    for e in read_dom_events(run):
        if not e.get("real_indices"):
            continue
        a = load_dom_event(run, e)
        for i, r in zip(a["replaced"].tolist(), a["real_indices"].tolist()):
            out.append({"iteration": int(e["iteration"]), "index": int(i), "label": int(a["labels"][i]),
                        "real_index": int(r), "before": a["before"][i], "after": a["after"][i],
                        "final": None if final is None else final[i]})
    return out
