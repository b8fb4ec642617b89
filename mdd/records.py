"""Artifacts of record: the distilled sets behind committed results, kept in the repository.

A results row (``results/benchmark.csv``, see :mod:`mdd.compare`) names its distilled set
in its ``artifact`` column. Run folders live under the git-ignored ``runs/``, so a row
pointing there shows nothing on a fresh clone; :func:`save_record` copies the finished
artifact (:mod:`mdd.artifact`: ``distilled.npz``, ``manifest.json``, ``grid.png``) to ::

    results/artifacts/<flag>-ipc<ipc>-<method>-s<seed>/

and returns the path to write into the row: relative to the project root (absolute when
the records folder lies outside the project, e.g. a temporary one). Each artifact is a
few tens of kB (≤ 50 images of 28×28), so the whole ``results/`` folder stays small.

:func:`adopt` does the same for every row of an existing results CSV whose artifact is
on this machine, and rewrites the CSV's ``artifact`` column to the copies.
"""
from __future__ import annotations

import filecmp
import os
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from .artifact import GRID, MANIFEST, NPZ, artifact_folder, load_distilled
from .notebooks import resolve_path, shown_path

RECORDS = "results/artifacts"
FILES = (NPZ, GRID, MANIFEST)   # the manifest last: a folder with a manifest is complete


def record_name(flag: str, ipc: int, method: str, seed: int) -> str:
    """``<flag>-ipc<ipc>-<method>-s<seed>``, the folder name of one record."""
    return f"{flag}-ipc{int(ipc)}-{method}-s{int(seed)}"


def record_folder(flag: str, ipc: int, method: str, seed: int,
                  root: str | os.PathLike = RECORDS) -> Path:
    """The absolute folder of one record under ``root`` (relative roots start at the
    project root)."""
    return resolve_path(root) / record_name(flag, ipc, method, seed)


def is_saved(path: str | os.PathLike | None) -> bool:
    """True when ``path`` (relative paths start at the project root) holds a complete
    artifact: ``distilled.npz`` and ``manifest.json``, in it or in its ``distilled/``."""
    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        return False
    try:
        artifact_folder(resolve_path(path))
        return True
    except (FileNotFoundError, OSError):
        return False


def _same_files(a: Path, b: Path) -> bool:
    return all((a / f).is_file() == (b / f).is_file() and
               (not (a / f).is_file() or filecmp.cmp(a / f, b / f, shallow=False))
               for f in FILES)


def save_record(artifact_dir: str | os.PathLike, flag: str, ipc: int, method: str, seed: int,
                root: str | os.PathLike = RECORDS) -> str:
    """Copy the finished artifact at ``artifact_dir`` (an artifact folder or the run
    folder holding one) to ``root/<flag>-ipc<ipc>-<method>-s<seed>/`` and return that
    folder as a results row stores it (relative to the project root when inside it).

    The artifact is checked first (npz against its manifest's sha256; flag, ipc and
    method against the manifest). The copy is atomic: the files go to a temporary folder
    beside the target, which then replaces it; an identical record is left as it is.
    """
    src = artifact_folder(resolve_path(artifact_dir))
    ds = load_distilled(src)                       # raises on a truncated or changed npz
    got = {"flag": ds.flag, "ipc": ds.ipc, "method": ds.method}
    want = {"flag": flag, "ipc": int(ipc), "method": method}
    if any(got[k] != want[k] for k in got if not (k == "method" and got[k] == "?")):
        raise ValueError(f"artifact {src} holds {got}, not {want}")
    dest = record_folder(flag, ipc, method, seed, root)
    if src.resolve() == dest.resolve() or (dest.is_dir() and _same_files(src, dest)):
        return shown_path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    old = None
    try:
        for f in FILES:
            if (src / f).is_file():
                shutil.copyfile(src / f, tmp / f)
                os.chmod(tmp / f, 0o644)
        os.chmod(tmp, 0o755)
        if dest.exists():   # rename(2) cannot replace a non-empty folder: move it aside
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".old", dir=dest.parent))
            os.rmdir(old)
            os.rename(dest, old)
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.exists() and not dest.exists():
            os.rename(old, dest)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return shown_path(dest)


def adopt(csv: str | os.PathLike = "results/benchmark.csv", root: str | os.PathLike | None = None) -> list[dict]:
    """For every row of ``csv`` whose ``artifact`` exists on this machine and is not yet
    under ``root`` (default: ``artifacts/`` beside the CSV), :func:`save_record` it and
    point the row at the copy; the CSV is rewritten atomically with every other column
    as it was. Rows whose artifact is missing are left as they are (they show as "not
    saved"). Returns one dict per row with an artifact: ``flag, ipc, method, seed,
    artifact, status`` (recorded, kept, missing)."""
    from .io import write_text
    csv = resolve_path(csv)
    root = resolve_path(root) if root is not None else csv.parent / "artifacts"
    df = pd.read_csv(csv, dtype={"artifact": object})
    if "artifact" not in df.columns:
        return []
    report, changed = [], False
    for i, r in df.iterrows():
        art = r["artifact"]
        if not is_saved(art) and not (isinstance(art, str) and art.strip()):
            continue
        seed = 0 if "seed" not in df.columns or pd.isna(r["seed"]) else int(r["seed"])
        if not is_saved(art):
            status = "missing"
        elif resolve_path(art).resolve().is_relative_to(root.resolve()):
            status = "kept"
        else:
            df.at[i, "artifact"] = save_record(art, r["flag"], int(r["ipc"]), r["method"], seed, root)
            status, changed = "recorded", True
        report.append({"flag": r["flag"], "ipc": None if pd.isna(r["ipc"]) else int(r["ipc"]),
                       "method": r["method"], "seed": seed, "artifact": df.at[i, "artifact"],
                       "status": status})
    if changed:
        write_text(csv, df.to_csv(index=False))
    return report
