"""Allocator tuning for CPU training loops.

With glibc's default malloc, tensors above the mmap threshold are mapped and unmapped
on every allocation; for ConvNet-sized activations that page-faults fresh memory over
and over (measured here: 35–40 % of CPU time in the unrolled matching loop). Telling
glibc to keep freed memory in its heap removes that cost in-process, with no
LD_PRELOAD. The cost is that freed memory is not returned to the OS while the
setting is active, so it is scoped to mdd's hot loops and restored afterwards.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
from typing import Iterator

# mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4
# glibc's documented defaults, restored on exit
_DEFAULTS = {M_TRIM_THRESHOLD: 128 * 1024, M_MMAP_MAX: 65536}
_depth = 0  # nesting: only the outermost block restores the defaults


def _libc():
    if os.name != "posix":
        return None
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return lib if hasattr(lib, "mallopt") else None
    except OSError:
        return None


@contextlib.contextmanager
def tuned_malloc(enabled: bool = True) -> Iterator[bool]:
    """Keep freed memory in glibc's heap for the duration of the block.

    Yields whether the tuning is active (False off glibc, or when ``enabled`` is
    False or ``MDD_TUNED_MALLOC=0``).
    """
    libc = _libc() if enabled and os.environ.get("MDD_TUNED_MALLOC", "1") != "0" else None
    global _depth
    if libc is None:
        yield _depth > 0
        return
    if _depth == 0:
        libc.mallopt(M_MMAP_MAX, 0)
        libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)
    _depth += 1
    try:
        yield True
    finally:
        _depth -= 1
        if _depth == 0:
            for param, value in _DEFAULTS.items():
                libc.mallopt(param, value)
            libc.malloc_trim(0)
