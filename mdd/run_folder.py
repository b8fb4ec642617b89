"""A distillation run folder's logs (:class:`RunLog`, the writer) and their readers:
the per-iteration log, the val evaluations, image snapshots and DOM events (the layout
is in :mod:`mdd.distill`'s docstring)."""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np

from .distill_config import LOG_FIELDS
from .io import atomic_path, dumps


def _rows_to_csv(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=LOG_FIELDS, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())


class RunLog:
    """Append-only JSONL + CSV logs; on resume, rows at or after the checkpoint are
    dropped first (they will be recomputed identically)."""

    def __init__(self, folder: Path, resume_from: int, refile: set[int] = frozenset()):
        """``resume_from``: the checkpoint's iteration, -1 on a fresh start; ``refile``:
        val evaluations the checkpoint still had queued (asked again, so their rows go)."""
        self.jsonl, self.csv = folder / "log.jsonl", folder / "log.csv"
        self.evals, self.dom = folder / "evals.jsonl", folder / "dom_events.jsonl"
        rows = [r for r in read_jsonl(self.jsonl) if r["iteration"] < resume_from]
        with atomic_path(self.jsonl) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        _rows_to_csv(self.csv, rows)
        # log and DOM rows carry the iteration they ran in (< the checkpoint's count); a
        # val row carries the count it followed, and the checkpoint at k already holds
        # eval k (its best images): that row is kept, not recomputed
        for path, last in ((self.evals, resume_from), (self.dom, resume_from - 1)):
            kept = [r for r in read_jsonl(path) if r["iteration"] <= last
                    and not (path == self.evals and r["iteration"] in refile)]
            with atomic_path(path) as tmp:
                tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))

    def row(self, row: dict) -> None:
        with open(self.jsonl, "a") as f:
            f.write(json.dumps(row) + "\n")
        with open(self.csv, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=LOG_FIELDS, extrasaction="ignore").writerow(row)

    def event(self, path: Path, row: dict) -> None:
        with open(path, "a") as f:
            f.write(dumps(row) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    if not Path(path).is_file():
        return []
    rows = []
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:   # a line cut by a kill: dropped, recomputed on resume
            break
    return rows


def read_log(run: str | os.PathLike):
    """Per-iteration log of a run folder as a pandas DataFrame (columns: LOG_FIELDS)."""
    import pandas as pd
    return pd.DataFrame(read_jsonl(Path(run) / "log.jsonl"), columns=list(LOG_FIELDS))


def read_evals(run: str | os.PathLike) -> list[dict]:
    """Every val evaluation of a run (iteration, alpha, acc/auc mean ± std, per model)."""
    return read_jsonl(Path(run) / "evals.jsonl")


def list_snapshots(run: str | os.PathLike) -> list[tuple[int, Path]]:
    """(iteration, path) of every image snapshot, in order."""
    paths = sorted((Path(run) / "snapshots").glob("iter_*.npz"))
    return [(int(p.stem.split("_")[1]), p) for p in paths]


def load_snapshot(path: str | os.PathLike) -> dict:
    """A snapshot: x (normalized M×C×H×W float32), y, alpha, iteration, and sim_class{c}
    (within-class cosine matrices) when logged at that iteration."""
    with np.load(path, allow_pickle=False) as z:
        out = {k: z[k] for k in z.files}
    out["alpha"], out["iteration"] = float(out["alpha"]), int(out["iteration"])
    return out


def read_dom_events(run: str | os.PathLike) -> list[dict]:
    """Every DOM check: iteration, reason, stage, target, overlap_ratio, mean_similarity,
    replace (set indices), real_indices, pairs, per_class, file (its npz)."""
    return read_jsonl(Path(run) / "dom_events.jsonl")


def load_dom_event(run: str | os.PathLike, event: dict | int) -> dict:
    """The arrays of one DOM event (a row of read_dom_events or its iteration): before,
    after (M×C×H×W), labels, replaced, real_indices, sim_class{c}."""
    if isinstance(event, int):
        event = next(e for e in read_dom_events(run) if e["iteration"] == event)
    with np.load(Path(run) / event["file"], allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
