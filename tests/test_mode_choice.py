"""mode="auto": the faster exact mode, timed at the first iteration, cached per shape."""
from __future__ import annotations

import time
from pathlib import Path

import torch

from conftest import distill_cfg
from mdd import mode_choice as mc
from mdd.artifact import load_distilled
from mdd.distill import distill, read_log


def fake(seconds: dict[str, float], calls: list[str]):
    def call(mode: str) -> str:
        calls.append(mode)
        time.sleep(seconds[mode])
        return f"result of {mode}"
    return call


def test_a_quick_unrolled_call_is_kept_without_timing_the_adjoint():
    calls: list[str] = []
    choice, out = mc.measure(fake({"unrolled": 0.0, "adjoint": 0.0}, calls), small_s=0.5)
    assert (choice.mode, choice.source, out, calls) == ("unrolled", "small", "result of unrolled",
                                                        ["unrolled"])


def test_the_faster_mode_wins_and_its_own_result_is_returned():
    calls: list[str] = []
    choice, out = mc.measure(fake({"unrolled": 0.12, "adjoint": 0.02}, calls), small_s=0.05)
    assert (choice.mode, choice.source, out) == ("adjoint", "measured", "result of adjoint")
    assert calls == ["unrolled", "adjoint", "adjoint"]   # one untimed warm-up call
    assert choice.seconds["adjoint"] < choice.seconds["unrolled"]
    choice, out = mc.measure(fake({"unrolled": 0.06, "adjoint": 0.15}, []), small_s=0.05)
    assert (choice.mode, out) == ("unrolled", "result of unrolled")


def test_cache_round_trip_and_a_broken_cache_is_measured_again(tmp_path, monkeypatch):
    monkeypatch.setenv("MDD_CACHE", str(tmp_path))
    key = mc.shape_key(torch.device("cpu"), 4, 20, 128, 1, 28, 2)
    assert mc.cached(key) is None
    mc.remember(key, mc.ModeChoice("adjoint", "measured", {"adjoint": 1.0, "unrolled": 2.0}))
    mc.remember("other", mc.ModeChoice("unrolled", "small", {}))
    got = mc.cached(key)
    assert (got.mode, got.source, got.seconds["unrolled"]) == ("adjoint", "cache", 2.0)
    assert key != mc.shape_key(torch.device("cpu"), 4, 20, 128, 3, 28, 2)
    mc.cache_file().write_text("[not a table")
    assert mc.cached(key) is None
    mc.remember(key, mc.ModeChoice("unrolled", "measured", {}))   # and it repairs the file
    assert mc.cached(key).mode == "unrolled"


def test_a_run_records_its_choice_and_the_next_run_reads_the_cache(distill_env, tmp_path: Path,
                                                                    monkeypatch):
    monkeypatch.setenv("MDD_CACHE", str(tmp_path / "cache"))   # empty: other tests' runs filled the shared one
    first = distill(distill_cfg(distill_env, tmp_path / "a", method="mtt"))
    assert first["mode"] == "unrolled" and first["mode_choice"]["source"] == "small"
    second = distill(distill_cfg(distill_env, tmp_path / "b", method="mtt"))
    assert second["mode_choice"]["source"] == "cache" and second["mode"] == "unrolled"
    forced = distill(distill_cfg(distill_env, tmp_path / "c", method="mtt", mode="adjoint",
                                 compile=False))
    assert forced["mode_choice"] == {"mode": "adjoint", "source": "config", "seconds": {}}
    # every log row says which mode computed it (val-only runs have no result.json)
    assert set(read_log(tmp_path / "a")["mode"]) == {"unrolled"}
    assert set(read_log(tmp_path / "c")["mode"]) == {"adjoint"}
    # exact either way: the same images to rounding
    diff = (load_distilled(tmp_path / "c").x - load_distilled(tmp_path / "a").x).abs().max()
    assert float(diff) < 1e-3
