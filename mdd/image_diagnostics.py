"""Synthetic images of distillation runs (notebook 04): snapshots over a run, the
real images a set started from, and the nearest real image of each synthetic one (by
pixels or by expert features).

Reads run folders written by :func:`mdd.distill.distill`; figures are drawn by
:mod:`mdd.viz`.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from .diagnostics import run_records


def snapshot_series(run: str | os.PathLike, max_snapshots: int | None = 6) -> tuple[list[int], np.ndarray, np.ndarray]:
    """(iterations, x T×N×C×H×W normalized, y N) of up to ``max_snapshots`` snapshots,
    evenly spaced, always the first and the last."""
    from .run_folder import list_snapshots, load_snapshot
    snaps = list_snapshots(run)
    if not snaps:
        raise FileNotFoundError(f"no snapshots in {run}/snapshots")
    if max_snapshots:
        max_snapshots = max(2, int(max_snapshots))
    if max_snapshots and len(snaps) > max_snapshots:
        keep = np.unique(np.linspace(0, len(snaps) - 1, max_snapshots).round().astype(int))
        snaps = [snaps[i] for i in keep]
    loaded = [load_snapshot(p) for _, p in snaps]
    return [it for it, _ in snaps], np.stack([s["x"] for s in loaded]), loaded[-1]["y"]


def init_indices(run: str | os.PathLike, data) -> np.ndarray:
    """Train index each synthetic image started from: the seeded random subset of the
    run's config (``init="real"``), updated by DOM re-seeds in order; -1 for noise init."""
    from .baselines import random_subset
    from .run_folder import read_dom_events
    from .io import read_json
    cfg = read_json(Path(run) / "config.json")
    if cfg.get("init", "real") != "real":
        idx = -np.ones(int(cfg["ipc"]) * data.num_classes, dtype=np.int64)
    else:
        idx = random_subset(data, int(cfg["ipc"]), seed=int(cfg["seed"]))[2].numpy().copy()
    for e in read_dom_events(run):
        for k, v in (e.get("real_indices") or {}).items():
            idx[int(k)] = int(v)
    return idx


def _features(x: torch.Tensor, space: str, student=None, theta=None) -> torch.Tensor:
    if space == "pixel":
        return x.reshape(len(x), -1).float()
    from .overlap import embed
    return embed(student, theta, x.float())


def nearest_real(query: torch.Tensor, real, query_labels: Sequence[int] | None = None,
                 real_labels: Sequence[int] | None = None, space: str = "pixel",
                 student=None, theta: torch.Tensor | None = None,
                 batch: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """For each query image the index of the nearest ``real`` image and the distance.

    ``query`` N×C×H×W and ``real`` M×C×H×W (a tensor or anything indexable by slices,
    e.g. :class:`mdd.data.MappedImages`), both normalized the same way. ``space``:
    ``"pixel"`` (root-mean-square difference per pixel value, i.e. the Euclidean
    distance over √(C·H·W), in the images' normalized units) or ``"feature"``
    (Euclidean distance between L2-normalized penultimate features of ``student`` at
    ``theta``, i.e. √(2 − 2·cos)). With both label arrays the search stays within the query's class.
    Real images are read ``batch`` at a time.
    """
    if space not in ("pixel", "feature"):
        raise ValueError(f"space must be 'pixel' or 'feature', got {space!r}")
    if space == "feature" and (student is None or theta is None):
        raise ValueError("space='feature' needs student and theta")
    q = _features(torch.as_tensor(query), space, student, theta)
    n, m = len(q), len(real)
    if m == 0:
        raise ValueError("no real images to search")
    ql = None if query_labels is None or real_labels is None else \
        torch.as_tensor(np.asarray(query_labels)).reshape(-1).long()
    rl = None if ql is None else torch.as_tensor(np.asarray(real_labels)).reshape(-1).long()
    best_d = torch.full((n,), float("inf"))
    best_i = torch.full((n,), -1, dtype=torch.long)
    for s in range(0, m, batch):
        r = _features(torch.as_tensor(real[s:s + batch]), space, student, theta)
        d = torch.cdist(q.double(), r.double())
        if ql is not None:
            d = d.masked_fill(ql[:, None] != rl[s:s + len(r)][None, :], float("inf"))
        v, i = d.min(1)
        better = v < best_d
        best_d[better] = v[better].float()
        best_i[better] = i[better] + s
    if (best_i < 0).any():
        raise ValueError("a query's class has no real image to compare with")
    if space == "pixel":
        best_d = best_d / math.sqrt(max(1, q.shape[1]))
    return best_i.numpy(), best_d.numpy()


def nearest_table(method: str, labels: Sequence[int], nearest: np.ndarray, distances: np.ndarray,
                  init: np.ndarray | None = None, space: str = "pixel") -> pd.DataFrame:
    """One row per synthetic image: method, index, label, nearest (train index),
    distance, space and, with ``init``, whether the nearest is the image it started from."""
    df = pd.DataFrame({"method": method, "index": np.arange(len(nearest)),
                       "label": np.asarray(labels).reshape(-1).astype(int),
                       "nearest": np.asarray(nearest).astype(int),
                       "distance": np.asarray(distances, dtype=float), "space": space})
    if init is not None:
        df["init"] = np.asarray(init).astype(int)
        df["nearest_is_init"] = df["nearest"] == df["init"]
    return df


def image_panels(runs: pd.DataFrame | Iterable[dict], data, init: bool = True
                 ) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Grid panels ``(title, uint8 pixels, labels)``: with ``init`` the real images the
    first run started from (its snapshot at iteration 0), then each run's distilled set
    (the val-selected images of its artifact) titled with method, selected iteration
    and test accuracy."""
    from .artifact import load_distilled
    from .pixels import to_pixels
    from .run_folder import list_snapshots, load_snapshot
    from .io import read_json
    runs = run_records(runs)
    panels = []
    if init and runs:
        snaps = list_snapshots(runs[0]["run"])
        if snaps and snaps[0][0] == 0:
            s0 = load_snapshot(snaps[0][1])
            panels.append(("initialization (real)", to_pixels(torch.as_tensor(s0["x"]), data.norm),
                           s0["y"]))
    for r in runs:
        ds = load_distilled(r["run"])
        res = read_json(Path(r["run"]) / "result.json")
        panels.append((f"{r['method']} (it {res['selected_iteration']}; "
                       f"test acc {100 * res['acc_mean']:.1f}%)", ds.pixels, ds.y.numpy()))
    return panels


def evolution_series(runs: pd.DataFrame | Iterable[dict], norm, max_snapshots: int = 6
                     ) -> list[tuple[str, list[int], np.ndarray, np.ndarray]]:
    """Per run ``(method, iterations, uint8 pixels T×N×H×W[×3], labels)`` from up to
    ``max_snapshots`` snapshots (:func:`snapshot_series`)."""
    from .pixels import to_pixels
    out = []
    for r in run_records(runs):
        its, x, y = snapshot_series(r["run"], max_snapshots)
        out.append((r["method"], its, np.stack([to_pixels(torch.as_tensor(xt), norm) for xt in x]), y))
    return out


def nearest_for_runs(runs: pd.DataFrame | Iterable[dict], data, space: str = "pixel",
                     experts: Any = None, same_class: bool = True
                     ) -> tuple[list[tuple], pd.DataFrame]:
    """The nearest real training image of every distilled image of each run.

    Returns (panels for :func:`mdd.run_viz.nearest_figure`, a table of
    :func:`nearest_table` rows for all runs). ``space="feature"`` uses ``experts``'
    first expert at its last epoch; ``same_class`` searches the image's class only.
    """
    from .artifact import load_distilled
    student = theta = None
    if space == "feature":
        if experts is None:
            raise ValueError("space='feature' needs the experts")
        from .matching import Student
        student = Student(experts.net(), experts.layout)
        theta = experts.snapshots(0, [experts.epochs])[0]
    real_y = data.train.y
    panels, tables = [], []
    for r in run_records(runs):
        ds = load_distilled(r["run"])
        idx, dist = nearest_real(ds.x, data.train.x, ds.y if same_class else None,
                                 real_y if same_class else None, space, student, theta)
        real = data.pixels(data.train.x[torch.as_tensor(idx)])
        panels.append((r["method"], ds.pixels, real, ds.y.numpy(), dist))
        tables.append(nearest_table(r["method"], ds.y.numpy(), idx, dist,
                                    init_indices(r["run"], data), space))
    return panels, pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
