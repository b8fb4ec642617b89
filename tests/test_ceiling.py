"""The full-data ceiling (mdd.ceiling): epochs chosen on val by a fixed doubling search."""
from __future__ import annotations

from mdd import ceiling as C, data as D
from mdd.evaluate import EvalConfig


def test_the_search_doubles_while_val_auc_improves_and_never_reads_test(make_fake, monkeypatch):
    d = D.load("breastmnist", root=make_fake("breastmnist", n=(20, 6, 8)))   # 1 step per epoch at 256
    calls: list[tuple[str, int]] = []
    val_auc = {2: 0.70, 4: 0.80, 8: 0.801, 16: 0.99}   # 8 gains < min_gain: stop there

    def fake(x, y, data, cfg, lr=None, split="test", progress=True, seeds=None):
        calls.append((split, cfg.epochs))
        auc = val_auc[cfg.epochs] if split == "val" else 0.5
        return {"acc_mean": 0.5, "bacc_mean": 0.5, "auc_mean": auc, "val_seeds": [1], "seconds": 0.0,
                "test_seeds": [2], "epochs": cfg.epochs}

    monkeypatch.setattr(C, "evaluate_set", fake)
    res = C.full_ceiling(d, EvalConfig(models=3, width=8, device="cpu"),
                         C.CeilingConfig(first_steps=2, max_steps=16))
    sel = res["epoch_selection"]
    assert [c["epochs"] for c in sel["candidates"]] == [2, 4, 8]
    assert sel["epochs"] == 8 and sel["steps_per_epoch"] == 1    # 8 is no worse: ties go long
    assert calls == [("val", 2), ("val", 4), ("val", 8), ("test", 8)]
    assert res["protocol"]["epochs"] == 8


def test_candidates_are_sgd_steps_turned_into_epochs_by_the_data():
    assert C.steps_per_epoch(546, 256) == 3 and C.steps_per_epoch(4708, 256) == 19


def test_a_cut_ceiling_resumes_from_its_cache(make_fake, monkeypatch, tmp_path):
    d = D.load("breastmnist", root=make_fake("breastmnist", n=(20, 6, 8)))
    calls: list[tuple[str, int]] = []

    def fake(x, y, data, cfg, lr=None, split="test", progress=True, seeds=None):
        calls.append((split, cfg.epochs))
        if len(calls) == 3 and fail:
            raise KeyboardInterrupt   # the stop of a session, mid-search
        return {"acc_mean": 0.5, "bacc_mean": 0.5, "auc_mean": 0.5 + cfg.epochs / 100,
                "val_seeds": [1], "seconds": 1.0, "test_seeds": [2], "epochs": cfg.epochs}

    monkeypatch.setattr(C, "evaluate_set", fake)
    cfg, search = EvalConfig(models=3, width=8, device="cpu"), C.CeilingConfig(first_steps=2, max_steps=8)
    fail = True
    try:
        C.full_ceiling(d, cfg, search, cache=tmp_path / "full")
    except KeyboardInterrupt:
        pass
    assert calls == [("val", 2), ("val", 4), ("val", 8)]
    fail, calls[:] = False, []
    res = C.full_ceiling(d, cfg, search, cache=tmp_path / "full")
    assert calls == [("val", 8), ("test", 8)]          # the two finished candidates read back
    assert [c["epochs"] for c in res["epoch_selection"]["candidates"]] == [2, 4, 8]
    calls.clear()
    assert C.full_ceiling(d, cfg, search, cache=tmp_path / "full") == res and calls == []
    # another protocol (here: width) is not served from that cache
    C.full_ceiling(d, EvalConfig(models=3, width=16, device="cpu"), search, cache=tmp_path / "full")
    assert calls == [("val", 2), ("val", 4), ("val", 8), ("test", 8)]
