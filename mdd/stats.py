"""Seed-level statistics of the protocol (DESIGN.md §2), used by every table and
notebook: a cell is ≥ 3 distillation seeds × K test networks; it is summarised by
the mean ± std over seeds of each seed's K-network mean, and two methods are compared
by the paired difference over the seeds they share (seed s fixes the initial real
subset of both), with a 95 % bootstrap CI (scipy.stats.bootstrap, percentile).

With 3 seeds a percentile bootstrap has only 10 distinct resamples and is optimistic;
the Student-t interval of the same mean is reported beside it, and a difference is
called resolved only when both intervals exclude 0.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
from scipy import stats as sps


def summarize(values: Sequence[float]) -> dict:
    """``mean``, ``std`` (sample, ddof = 1; 0 for one value) and ``n`` of per-seed values."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if len(v) == 0:
        return {"n": 0, "mean": None, "std": None}
    return {"n": int(len(v)), "mean": float(v.mean()),
            "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0}


def bootstrap_ci(values: Sequence[float], confidence: float = 0.95, n_resamples: int = 10_000,
                 seed: int = 0) -> tuple[float, float] | tuple[None, None]:
    """Percentile bootstrap CI of the mean; (None, None) for fewer than 2 values."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return None, None
    if np.all(v == v[0]):   # every resample has the same mean
        return float(v[0]), float(v[0])
    res = sps.bootstrap((v,), np.mean, confidence_level=confidence, n_resamples=n_resamples,
                        method="percentile", random_state=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def t_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float] | tuple[None, None]:
    """Student-t CI of the mean; (None, None) for fewer than 2 values."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return None, None
    half = sps.t.ppf(0.5 + confidence / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return float(v.mean() - half), float(v.mean() + half)


def paired_difference(a: Mapping[int, float], b: Mapping[int, float], confidence: float = 0.95,
                      n_resamples: int = 10_000, seed: int = 0) -> dict:
    """``a − b`` paired by seed (only seeds both have, with finite values).

    Returns ``n``, ``seeds``, ``diffs``, ``mean``, ``ci_low``/``ci_high`` (bootstrap),
    ``t_low``/``t_high`` (Student t), ``confidence`` and ``resolved`` (both intervals
    exclude 0).
    """
    seeds = sorted(s for s in set(a) & set(b)
                   if a[s] is not None and b[s] is not None and math.isfinite(a[s]) and math.isfinite(b[s]))
    d = [float(a[s]) - float(b[s]) for s in seeds]
    lo, hi = bootstrap_ci(d, confidence, n_resamples, seed)
    tlo, thi = t_ci(d, confidence)
    resolved = None if lo is None else bool((lo > 0 and tlo > 0) or (hi < 0 and thi < 0))
    return {"n": len(d), "seeds": seeds, "diffs": d, "mean": float(np.mean(d)) if d else None,
            "ci_low": lo, "ci_high": hi, "t_low": tlo, "t_high": thi,
            "confidence": confidence, "resolved": resolved}


def fmt_ci(diff: dict, scale: float = 100.0, digits: int = 1) -> str:
    """``+2.3 [−1.0, +5.6]`` (points, bootstrap CI) for a paired_difference result."""
    if diff["mean"] is None:
        return "n/a"
    m = f"{scale * diff['mean']:+.{digits}f}"
    if diff["ci_low"] is None:
        return f"{m} (n = {diff['n']})"
    return f"{m} [{scale * diff['ci_low']:+.{digits}f}, {scale * diff['ci_high']:+.{digits}f}]"
