"""Seed-level statistics (mdd.stats): known toy cases."""
from __future__ import annotations

import numpy as np

from mdd import stats


def test_bootstrap_ci_covers_the_mean_of_a_known_normal_and_matches_t() -> None:
    rng = np.random.default_rng(0)
    v = rng.normal(1.0, 1.0, 400)
    lo, hi = stats.bootstrap_ci(v)
    tlo, thi = stats.t_ci(v)
    assert lo < 1.0 < hi
    assert abs((hi - lo) - 2 * 1.96 / 20) < 0.03          # width ≈ 2·1.96·σ/√n
    assert abs(lo - tlo) < 0.02 and abs(hi - thi) < 0.02


def test_paired_difference_pairs_by_seed_and_ignores_unpaired() -> None:
    a = {0: 0.80, 1: 0.70, 2: 0.75, 7: 0.1}
    b = {0: 0.70, 1: 0.60, 2: 0.65, 3: 0.9}
    d = stats.paired_difference(a, b)
    assert d["seeds"] == [0, 1, 2] and d["n"] == 3
    assert np.allclose(d["diffs"], 0.1) and abs(d["mean"] - 0.1) < 1e-12
    assert abs(d["ci_low"] - 0.1) < 1e-9 and abs(d["ci_high"] - 0.1) < 1e-9   # constant diffs
    assert d["resolved"] is True


def test_a_noisy_difference_around_zero_is_not_resolved() -> None:
    d = stats.paired_difference({0: 0.5, 1: 0.7, 2: 0.6}, {0: 0.6, 1: 0.5, 2: 0.65})
    assert d["ci_low"] < 0 < d["ci_high"] and d["resolved"] is False
    assert stats.fmt_ci(d).startswith("+1.7 [")


def test_summaries_use_the_sample_std_and_skip_missing() -> None:
    s = stats.summarize([0.5, None, 0.7, float("nan")])
    assert s["n"] == 2 and abs(s["mean"] - 0.6) < 1e-12 and abs(s["std"] - np.std([0.5, 0.7], ddof=1)) < 1e-12
    assert stats.summarize([]) == {"n": 0, "mean": None, "std": None}
    assert stats.paired_difference({0: 1.0}, {0: 0.5})["ci_low"] is None
