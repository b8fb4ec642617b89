"""Atomic file writes: every file mdd writes appears whole or not at all; JSON is
strict (no NaN or Infinity: a number that could not be computed is written as null,
with the reason beside it, see :func:`strict`)."""
from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

#: The suffix of a sibling key that says why a value is null: ``"auc_mean": null,
#: "auc_mean_null_reason": "…"``.
NULL_REASON = "_null_reason"
#: What :func:`strict` says when the producer gave no reason of its own.
NOT_FINITE = "could not be computed (the value was {value})"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    The temp file lives in the same directory so the final ``os.replace`` is atomic;
    on error it is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:   # a read-only or full folder: name the file meant, not the temp
        e.filename = str(path)
        raise
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual file mode
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException as e:
        tmp_path.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.filename is None:
            e.filename = str(path)   # "No space left on device" says which file
        raise


def remove_partial_writes(folder: str | os.PathLike, of: str | None = None) -> list[Path]:
    """Delete the temp files that killed :func:`atomic_path` writes left in ``folder``
    (and below), or only those of the file named ``of`` in ``folder``; call it only
    while holding the lock of what it cleans. Returns what it removed."""
    folder = Path(folder)
    gone = []
    for tmp in (folder.glob(f".{of}.*.tmp") if of else folder.rglob(".*.tmp")):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            gone.append(tmp)
    return gone


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as strict JSON (see :func:`strict`), atomically."""
    write_text(path, dumps(obj, indent=2) + "\n")


def dumps(obj: Any, **kw: Any) -> str:
    """``json.dumps`` of :func:`strict` ``(obj)`` with ``allow_nan=False``: valid JSON
    for every reader, never ``NaN``."""
    return json.dumps(strict(obj), allow_nan=False, **kw)


def strict(obj: Any) -> Any:
    """``obj`` with every NaN or ±inf float replaced by None; in the dict that held it
    (directly or in a list), a sibling key ``"<name>_null_reason"`` says why. A reason
    the producer already set there is kept. Other values are returned as they are."""
    if isinstance(obj, dict):
        out: dict = {}
        reasons: dict[str, str] = {}
        for k, v in obj.items():
            out[k] = strict(v)
            bad = _first_non_finite(v)
            if bad is not None and not isinstance(v, dict):
                reasons[f"{k}{NULL_REASON}"] = NOT_FINITE.format(value=bad)
        for k, reason in reasons.items():
            if out.get(k) is None:
                out[k] = reason
        return out
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _first_non_finite(v: Any) -> float | None:
    """The first NaN/inf in ``v`` or in the list ``v`` (not in nested dicts: those carry
    their own reasons)."""
    if isinstance(v, float):
        return None if math.isfinite(v) else v
    if isinstance(v, (list, tuple)):
        for x in v:
            bad = _first_non_finite(x)
            if bad is not None:
                return bad
    return None


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())
