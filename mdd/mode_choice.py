"""Which exact way of differentiating the unroll is fastest here, chosen by measurement.

Both modes of :func:`mdd.matching.match` give the same loss and gradients (to rounding);
which one is faster depends on the problem and the machine: the unrolled graph wins on
tiny batches, the adjoint (with compiled kernels) on large ones, and a memory estimate
cannot tell (issue 13: `auto` by memory picked unrolled at every cpu-preset size).

``mode="auto"`` therefore:

1. leaves out unrolled where its graph would not fit (:func:`run_setup.estimate_unrolled_bytes`
   against ``unrolled_memory_gb``): adjoint, no timing;
2. takes a choice cached for this problem shape on this machine
   (``$MDD_CACHE/modes.json``, default ``~/.cache/mdd``);
3. otherwise times the first iteration: unrolled first (its result is used); if that
   call took less than ``small_s`` the adjoint cannot repay its compilation and unrolled
   is kept; else the adjoint runs once untimed (compilation, first allocations) and once
   timed, and the faster mode wins (its own result is returned, so no work is lost).

The choice and its timings go into the run's ``result.json``. The mode is not part of a
run's identity: a resumed run may differ from the first attempt in rounding only.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TypeVar

import torch

from .io import read_json, write_json

T = TypeVar("T")

#: A first unrolled call shorter than this keeps unrolled without timing the adjoint.
SMALL_S = 0.5


@dataclass
class ModeChoice:
    """The mode a run uses, and why (``source``: config, memory, cache, small, measured)."""
    mode: str
    source: str
    seconds: dict[str, float] = field(default_factory=dict)


def cache_file() -> Path:
    root = os.environ.get("MDD_CACHE") or Path.home() / ".cache" / "mdd"
    return Path(root) / "modes.json"


def shape_key(device: torch.device, batch: int, steps: int, width: int, channels: int,
              size: int, classes: int) -> str:
    """The problem's shape on this machine: what the relative speed of the modes depends on."""
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"cpu{os.cpu_count()}x{torch.get_num_threads()}"
    return (f"torch{torch.__version__}/{where}/b{batch}n{steps}w{width}"
            f"c{channels}s{size}k{classes}")


def cached(key: str) -> ModeChoice | None:
    try:
        entry = read_json(cache_file()).get(key)
    except (OSError, ValueError, AttributeError):
        return None   # no cache, or one that is not ours: measure again
    if not isinstance(entry, dict) or entry.get("mode") not in ("adjoint", "unrolled"):
        return None
    return ModeChoice(entry["mode"], "cache", dict(entry.get("seconds", {})))


def remember(key: str, choice: ModeChoice) -> None:
    """Add ``choice`` to the cache (atomic write; a concurrent writer may drop one entry,
    which is then measured again)."""
    path = cache_file()
    try:
        table = read_json(path)
        table = table if isinstance(table, dict) else {}
    except (OSError, ValueError):
        table = {}
    table[key] = {"mode": choice.mode, "seconds": choice.seconds}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, table)
    except OSError:
        pass   # a read-only home: the choice is still used, only not remembered


def _timed(call: Callable[[str], T], mode: str) -> tuple[T, float]:
    t = time.perf_counter()
    out = call(mode)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - t


def measure(call: Callable[[str], T], small_s: float = SMALL_S) -> tuple[ModeChoice, T]:
    """Time ``call("unrolled")`` and, unless it was faster than ``small_s``, a warm
    ``call("adjoint")``; return the faster mode and its result (see the module docstring)."""
    unrolled, t_unrolled = _timed(call, "unrolled")
    if t_unrolled < small_s:
        return ModeChoice("unrolled", "small", {"unrolled": round(t_unrolled, 4)}), unrolled
    _, t_first = _timed(call, "adjoint")   # compilation and first allocations
    adjoint, t_adjoint = _timed(call, "adjoint")
    seconds = {"unrolled": round(t_unrolled, 4), "adjoint": round(t_adjoint, 4),
               "adjoint_first": round(t_first, 4)}
    if t_adjoint < t_unrolled:
        return ModeChoice("adjoint", "measured", seconds), adjoint
    return ModeChoice("unrolled", "measured", seconds), unrolled
