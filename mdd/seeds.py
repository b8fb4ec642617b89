"""Disjoint seed ranges of the evaluation protocol (DESIGN.md §2).

A distillation seed ``s`` (0 ≤ s < MAX_SEED) fixes the initial real subset and every
random draw of a run. The networks that *select* a checkpoint on val and the networks
that *report* on test are trained from seeds in two other, non-overlapping ranges, so
no test network ever took part in a choice::

    distillation   s                          [0, 1 000)
    val selection  1 000 000 + 1 000·s + k    k < 1 000
    test           2 000 000 + 1 000·s + k    k < 1 000

Baselines (random subset, full data) use the same ranges with their subset seed as s.
"""
from __future__ import annotations

MAX_SEED = 1_000
MAX_MODELS = 1_000
BASES = {"val": 1_000_000, "test": 2_000_000}


def model_seeds(role: str, seed: int, models: int) -> list[int]:
    """Seeds of ``models`` networks of ``role`` ("val" or "test") for distillation seed
    ``seed``; the two roles never share a seed."""
    if role not in BASES:
        raise ValueError(f"seed role must be one of {', '.join(BASES)}, got {role!r}")
    if not 0 <= seed < MAX_SEED:
        raise ValueError(f"seed must be in [0, {MAX_SEED}), got {seed}")
    if not 1 <= models <= MAX_MODELS:
        raise ValueError(f"models must be in [1, {MAX_MODELS}], got {models}")
    base = BASES[role] + MAX_MODELS * seed
    return list(range(base, base + models))


def ranges() -> dict:
    """The ranges, for result files (every result records the protocol it follows)."""
    return {"distillation": [0, MAX_SEED],
            **{role: {"base": b, "stride": MAX_MODELS, "rule": f"{b} + {MAX_MODELS}·seed + k"}
               for role, b in BASES.items()}}
