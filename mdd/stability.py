"""Stability numbers of one distillation run's loss log (claim 1 of :mod:`mdd.claims`;
the grid records them in its CSV, :mod:`mdd.benchmark`)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from .diagnostics import default_window, loss_jumps, rolling_variance
from .run_folder import read_log


def run_log_stats(folder: str | Path, rel: float = 0.5) -> dict | None:
    """Stability numbers of one run folder's log, or None when it has no logged loss:
    ``iterations`` (main-phase rows), ``jumps`` (loss jumps, ×(1 + rel)), ``jump_rate``,
    ``window`` and ``rolling_var_mean`` (mean rolling variance of the loss)."""
    log = read_log(folder)
    if log.empty:
        return None
    if log["phase"].notna().any():   # DOM's retrain iterations match other targets
        log = log[log["phase"] == "main"]
    log = log.sort_values("iteration")
    loss = pd.to_numeric(log["loss"], errors="coerce").to_numpy(dtype=float)
    if not np.isfinite(loss).any():
        return None
    window = default_window(len(loss))
    rv = rolling_variance(loss, window)
    jumps = loss_jumps(loss, rel)
    return {"iterations": len(loss), "jumps": jumps["jumps"], "jump_rate": jumps["jump_rate"],
            "window": window,
            "rolling_var_mean": float(np.nanmean(rv)) if np.isfinite(rv).any() else math.nan}
