"""One writer per folder: an exclusive advisory lock held for as long as a run writes.

``flock`` locks belong to the open file, so the kernel drops them when the process
dies, however it dies: a lock left by a killed run is never stale, the next run simply
takes it. The lock file records the holder's pid and command, for the message a
second writer gets. Used by ``mdd experts`` (the experts folder), ``mdd distill`` (the
run folder), ``mdd benchmark`` (its runs folder and results CSV) and ``mdd demo``.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

LOCK = ".lock"


class FolderBusy(ValueError):
    """Another live process holds the lock (a one-line message; the CLI exits 2)."""


@contextlib.contextmanager
def lock_file(path: str | os.PathLike, what: str, target: str | None = None) -> Iterator[Path]:
    """Hold an exclusive lock on ``path`` (created if missing) while the block runs.

    ``what`` names the writer ("mdd distill"); ``target`` is what the message says is
    busy (default: the lock's folder). Raises :class:`FolderBusy` at once, without
    waiting, when another process holds it.
    """
    path = Path(path)
    target = target or str(path.parent)
    try:
        import fcntl
    except ImportError:  # Windows: no flock; one run per folder is on the user
        yield path
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise FolderBusy(f"{target} is being written by another run ({holder}); wait for "
                             f"it to finish or pick another folder") from None
        # who holds it, for the message above (the lock itself is the flock, not this text)
        f.seek(0)
        f.truncate()
        f.write(f"{what}, pid {os.getpid()}")
        f.flush()
        yield path


def folder_lock(folder: str | os.PathLike, what: str) -> contextlib.AbstractContextManager[Path]:
    """Lock ``folder`` (its ``.lock`` file) for one writer: ``with folder_lock(out, "mdd distill"):``."""
    return lock_file(Path(folder) / LOCK, what, str(folder))


def file_lock(path: str | os.PathLike, what: str) -> contextlib.AbstractContextManager[Path]:
    """Lock one file that several runs might rewrite (a results CSV), via a hidden
    ``.<name>.lock`` beside it."""
    path = Path(path)
    return lock_file(path.parent / f".{path.name}.lock", what, str(path))
