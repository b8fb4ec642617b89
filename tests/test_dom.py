"""DOM v2 inside a run (mdd.dom): a data-relative τ that fires on a planted duplicate,
re-seeds that are never an image the set already used, and the record of them."""
from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import distill_cfg as cfg

dm = importlib.import_module("mdd.distill")


@pytest.fixture
def planted(monkeypatch):
    """Images 0 and 1 (class 0) identical at the start, and again before every check."""
    real_init = dm.DistillRun.init_state
    real_check = dm.DistillRun.dom_check

    def init(self):
        real_init(self)
        self.images[1] = self.images[0]

    def check(self, it, reason):
        self.images[1] = self.images[0]
        return real_check(self, it, reason)

    monkeypatch.setattr(dm.DistillRun, "init_state", init)
    monkeypatch.setattr(dm.DistillRun, "dom_check", check)


def test_v2_fires_on_a_duplicate_and_never_reuses_a_real_image(distill_env, tmp_path: Path,
                                                                 planted) -> None:
    out = tmp_path / "r"
    res = dm.distill(cfg(distill_env, out, method="ptm+dom", iterations=6, dom_every=1,
                         retrain_iterations=1, eval_every=0))
    events = dm.read_dom_events(out)
    fired = [e for e in events if e["real_indices"]]
    assert len(fired) >= 2                              # the duplicate comes back each time
    for e in events:   # the data-relative τ is recorded with every check
        assert e["tau"]["percentile"] == 99.0 and set(e["tau"]["per_class"]) == {"0", "1"}
    used = [int(v) for e in fired for v in e["real_indices"].values()]
    manifest = json.loads((out / "distilled" / "manifest.json").read_text())
    init = set(manifest["init_indices"])
    assert len(used) == len(set(used)) and not (set(used) & init)
    assert [r["real_index"] for r in manifest["reseeds"]] == used
    assert res["counters"]["replaced"] == len(used)
    # the checkpoint carries every used image, so a resumed run keeps excluding them
    from safetensors import safe_open
    with safe_open(str(out / "checkpoint.safetensors"), framework="pt") as f:
        state = json.loads(f.metadata()["state"])
    assert set(state["used"]) == init | set(used)


def test_no_check_in_the_last_r_iterations_and_evals_come_first(distill_env, tmp_path: Path,
                                                                  planted) -> None:
    out = tmp_path / "r"
    dm.distill(cfg(distill_env, out, method="ptm+dom", iterations=6, dom_every=1,
                   retrain_iterations=2, eval_every=2))
    events = dm.read_dom_events(out)
    assert events and max(e["main_iteration"] for e in events) <= 6 - 2
    log = dm.read_log(out)
    evals = dm.read_evals(out)
    for e in evals[1:]:
        # an evaluated iteration is a main one, never inside a retraining
        row = log[log["iteration"] == e["iteration"] - 1].iloc[0]
        assert row["phase"] == "main"
    retrain = log[log["phase"] == "retrain"]
    assert len(retrain) == 2 * sum(1 for e in events if e["real_indices"])


def test_v1_space_and_threshold_stay_available(distill_env, tmp_path: Path, planted) -> None:
    out = tmp_path / "r"
    dm.distill(cfg(distill_env, out, method="ptm+dom", iterations=4, dom_every=1, eval_every=0,
                   dom_space="pooled", dom_center=False, dom_theta="target", tau_rule="fixed",
                   tau=0.999, reseed="farthest"))
    events = dm.read_dom_events(out)
    assert events[0]["tau"] == 0.999 and events[0]["replace"] in ([0], [1])
    assert np.isfinite(events[0]["mean_similarity"])
