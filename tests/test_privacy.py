"""The privacy audit (issue 12): cases whose answer is known, on tiny fake MedMNIST data.

An artifact whose images *are* training images must have DCR 0 and be flagged as its
own init; perfectly separated attack scores must give AUC 1; the distilled target and
the random reference must agree when they are the same images trained the same way.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import mdd
from mdd import data as mdata, privacy, privacy_metrics as pm, privacy_nearest, privacy_report
from mdd.artifact import save_distilled
from mdd.baselines import random_subset
from mdd.cli import main

SMALL = dict(models=1, epochs=2, shadow=2, full_models=1, full_epochs=1, feature_epochs=1,
             bootstrap=50, threads=1)


def _strict(text: str):
    """json.loads that refuses NaN/Infinity (the audit's JSON contract)."""
    def bad(c):
        raise ValueError(f"non-strict JSON constant {c}")
    return json.loads(text, parse_constant=bad)


def _artifact(folder: Path, data, x, y, idx=None, **info) -> Path:
    base = {"flag": data.flag, "size": 28, "ipc": len(y) // data.num_classes, "method": "ptm",
            "alpha": 0.01, "num_classes": data.num_classes, "seed": 0, "selected_iteration": 8,
            "config": {"init": "real", "seed": 0}, "results": {"test": {"epochs": 2}}}
    if idx is not None:
        base["init_indices"] = [int(i) for i in idx]
    base.update(info)
    return save_distilled(folder, x, y, data.norm, base, data.class_names, grid=False)


@pytest.fixture
def fake(make_fake):
    root = make_fake("breastmnist", n=(24, 8, 10))
    return root, mdata.load("breastmnist", root=root)


# ---------------------------------------------------------------- end to end
def test_training_images_are_flagged_with_dcr_zero_and_match_the_random_reference(fake, tmp_path):
    root, data = fake
    x, y, idx = random_subset(data, 2, seed=0)
    art = _artifact(tmp_path / "art", data, x, y, idx, reseeds=[])
    res = mdd.audit(art, root=root, cache=tmp_path / "cache", **SMALL)

    assert {"nearest", "dcr", "mia", "references"} <= set(res)
    for block in (res["mia"], res["references"]["random"]["mia"], res["references"]["full"]["mia"]):
        assert 0 <= block["auc"] <= 1 and 0 <= block["tpr_at_1pct_fpr"] <= 1
        assert block["attack"] in ("loss", "lira") and len(block["auc_ci"]) == 2
    near = res["nearest"]
    assert near["n_flagged"] == 4 and near["init_source"] == "manifest"
    for r in near["images"]:
        assert r["nearest_is_init"] == {"pixel": True, "ssim": True, "feature": True}
        assert r["moved"]["pixel"] == 0 and r["moved"]["init_rank_pixel"] == 1
        assert r["ssim"]["ssim"][0] == pytest.approx(1, abs=1e-5)
    assert res["dcr"]["synthetic"]["max"] < 1e-6 and res["dcr"]["n_exact_copies"] == 4
    assert res["dcr"]["share_below_test_p5"] == 1.0
    # the released images are the seeds: the distance attack finds every one of them
    seeds = res["mia"]["attacks"]["distance"]["seeds"]
    assert seeds["auc"] == 1.0 and seeds["tpr_at_1pct_fpr"] == 1.0 and seeds["members"] == 4
    # same images, same lr, same seeds: the distilled target is the random reference
    ref = res["references"]["random"]
    assert ref["same_as_init"] and ref["indices"] == [int(i) for i in idx]
    assert ref["mia"]["attacks"]["loss"]["all"]["auc"] == res["mia"]["attacks"]["loss"]["all"]["auc"]
    assert res["references"]["full"]["mia"]["attacks"]["distance"]["all"]["auc"] == 1.0

    out = art / "audit"
    assert {p.name for p in out.iterdir()} >= {"audit.json", "summary.md", "arrays.npz",
                                               "nearest.png", "dcr.png", "roc.png"}
    assert _strict((out / "audit.json").read_text())["mia"]["auc"] == res["mia"]["auc"]
    summary = (out / "summary.md").read_text()
    assert "## Limits" in summary and "lower bound" in summary and "Threat model" in summary
    arrays = privacy.load_arrays(art)
    assert arrays["score_distilled_loss"].shape == (len(data.train) + len(data.test),)
    # a second call with the same parameters reads audit.json back; the cache makes a
    # recomputation give the same numbers
    assert mdd.audit(art, root=root, cache=tmp_path / "cache", **SMALL)["seconds"] == res["seconds"]
    again = mdd.audit(art, root=root, cache=tmp_path / "cache", reuse=False, figures=False, **SMALL)
    assert again["mia"]["attacks"] == res["mia"]["attacks"]
    # the README's one-row-per-audit overview
    row = privacy_report.overview_row(res)
    assert row["own_init_nearest"] == "4 / 4 / 4" and row["exact_copies"] == 4
    assert row["random_auc"] == res["references"]["random"]["mia"]["auc"]
    # four exact copies of their seeds: the pixel-distance attack finds them all
    assert row["distance_auc_seeds"] == res["mia"]["attacks"]["distance"]["seeds"]["auc"] == 1.0
    table = privacy_report.overview_markdown([res, res]).splitlines()
    assert len(table) == 4 and "4 / 4 / 4 of 4" in table[2]


def test_copies_of_other_images_are_not_flagged_and_reseeds_before_selection_count(fake, tmp_path):
    root, data = fake
    x, y, idx = random_subset(data, 2, seed=0)
    # each synthetic image is an exact copy of another training image of its class; row
    # 1's copy is the image DOM re-seeded it from before the selected iteration (8)
    pool = [i for i in range(len(data.train)) if i not in idx.tolist()]
    copies = []
    for r in range(len(y)):
        copies.append(next(i for i in pool if int(data.train.y[i]) == int(y[r]) and i not in copies))
    art = _artifact(tmp_path / "run" / "distilled", data, data.train.x[copies], y, idx,
                    method="ptm+dom", reseeds=[{"iteration": 3, "index": 1, "real_index": copies[1]},
                                               {"iteration": 8, "index": 0, "real_index": copies[0]}])
    res = privacy.audit(art, root=root, cache=None, figures=False, references=(), **SMALL)
    rows = res["init"]["rows"]
    assert rows[1] == copies[1] and rows[0] == int(idx[0]) and res["init"]["reseeded"] == [1]
    assert res["nearest"]["flagged"] == [1]
    for r in res["nearest"]["images"]:
        assert r["pixel"]["nearest"][0] == copies[r["index"]]
        if r["index"] != 1:
            assert r["moved"]["pixel"] > 0 and r["moved"]["init_rank_pixel"] > 1
    assert res["dcr"]["n_exact_copies"] == 4
    assert res["references"] == {} and res["mia"]["seeds_n"] == 5


def test_init_fallbacks_noise_and_config(fake, tmp_path):
    root, data = fake
    x, y, idx = random_subset(data, 1, seed=3)
    ds = mdd.load_distilled(_artifact(tmp_path / "a", data, x, y, seed=3))
    prov = privacy_nearest.init_provenance(ds, data)   # no init_indices: recomputed from the seed
    assert prov["source"] == "config" and prov["rows"].tolist() == idx.tolist()
    ds = mdd.load_distilled(_artifact(tmp_path / "b", data, x, y, idx, config={"init": "noise"},
                                      method="ptm+dom"))
    prov = privacy_nearest.init_provenance(ds, data)
    assert prov["rows"].tolist() == [-1, -1] and prov["seeds"] == []
    assert "re-seeds unknown" in prov["source"]


def test_cli_prints_strict_json(fake, tmp_path, capsys):
    root, data = fake
    x, y, idx = random_subset(data, 1, seed=0)
    art = _artifact(tmp_path / "art", data, x, y, idx)
    # a network that diverges (lr 1e6) outputs NaN: the JSON must still be strict
    art_args = ["audit", "--distilled", str(art), "--root", str(root), "--models", "1",
                "--epochs", "2", "--references", "random", "--random-lr", "1e6",
                "--feature-epochs", "1", "--bootstrap", "20", "--threads", "1", "--no-cache",
                "--no-figures", "--quiet", "--out", str(tmp_path / "o")]
    assert main(art_args) == 0
    res = _strict(capsys.readouterr().out)
    assert res["mia"]["auc"] is not None and "full" not in res["references"]
    assert res["references"]["random"]["mia"]["lr"] == 1e6
    assert (tmp_path / "o" / "audit.json").is_file() and not (tmp_path / "o" / "roc.png").exists()


def test_package_exports_audit_the_function():
    assert callable(mdd.audit) and mdd.audit is privacy.audit
    assert mdd.privacy.__name__ == "mdd.privacy"


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="at least 2 shadow"):
        privacy.resolve(privacy.AuditConfig(shadow=1), None)
    with pytest.raises(ValueError, match="unknown reference"):
        privacy.resolve(privacy.AuditConfig(references=("nope",)), None)
    with pytest.raises(ValueError, match="topk=0"):
        privacy.resolve(privacy.AuditConfig(topk=0), None)
    cfg = privacy.resolve(privacy.AuditConfig(models=2), "cpu", {"models"})
    assert cfg.models == 2 and cfg.shadow == privacy.PRESETS["cpu"]["shadow"]


# ---------------------------------------------------------------- metrics
def test_perfectly_separated_members_give_auc_one_and_reversed_zero():
    members, nonmembers = np.linspace(1, 2, 30), np.linspace(-2, -1, 200)
    m = pm.roc_metrics(members, nonmembers, bootstrap=100)
    assert m["auc"] == 1.0 and m["tpr_at_1pct_fpr"] == 1.0
    assert m["auc_ci"] == [1.0, 1.0] and m["tpr_ci"] == [1.0, 1.0]
    r = pm.roc_metrics(nonmembers, members, bootstrap=0)
    assert r["auc"] == 0.0 and r["tpr_at_1pct_fpr"] == 0.0 and r["auc_ci"] is None
    assert pm.roc_metrics(members, np.zeros(0)) is None


def test_bootstrap_statistics_match_sklearn_on_tied_scores():
    rng = np.random.default_rng(0)
    pos, neg = rng.integers(0, 6, 40).astype(float), rng.integers(0, 5, 250).astype(float)

    class Identity:   # resamples that are the samples themselves
        def integers(self, lo, hi, size):
            return np.broadcast_to(np.arange(size[1]), size)

    auc, tpr = pm._boot_stats(pos, neg, Identity(), 1, pm.FPR)
    ref = pm.roc_metrics(pos, neg, bootstrap=0)
    assert auc[0] == pytest.approx(ref["auc"]) and tpr[0] == pytest.approx(ref["tpr_at_1pct_fpr"])
    ci = pm.roc_metrics(pos, neg, bootstrap=400)["auc_ci"]
    assert ci[0] < ref["auc"] < ci[1]


def test_lira_scores_an_example_the_target_fits_better_than_its_shadows():
    rng = np.random.default_rng(0)
    shadow = rng.normal(0, 1, (16, 50)) + np.linspace(-5, 5, 50)   # per-example difficulty
    target = shadow.mean(0, keepdims=True).copy()
    target[0, 7] += 4   # only example 7 is fitted better than shadows that never saw it
    for s, kind in ((shadow, "per-example"), (shadow[:4], "global")):
        scores, got = pm.lira_offline(target, s)
        assert got == kind and int(np.argmax(scores)) == 7
    # the plain loss score would rank the easiest example first instead
    assert int(np.argmax(target[0])) == 49
    with pytest.raises(ValueError, match="at least 2"):
        pm.lira_offline(target, shadow[:1])


def test_example_scores_are_the_logit_scaled_confidence_and_the_loss():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    x, y = torch.randn(7, 1, 2, 2), torch.tensor([0, 1, 2, 0, 1, 2, 0])
    out = pm.example_scores(net, x, y)
    p = torch.softmax(net(x), 1).detach().double()[torch.arange(7), y]
    assert np.allclose(out["phi"], torch.log(p / (1 - p)).numpy(), atol=1e-6)
    assert np.allclose(out["loss"], -torch.log(p).numpy(), atol=1e-6)


def test_nearest_search_in_three_spaces_finds_the_copy():
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(50, 1, 28, 28, generator=g)
    query = torch.stack([ref[17], ref[3] + 0.01 * torch.randn(1, 28, 28, generator=g)])
    idx, d = pm.topk_pixel(query, ref, k=3, batch=16)
    assert idx[:, 0].tolist() == [17, 3] and d[0, 0] < 1e-6 and (np.diff(d, axis=1) >= 0).all()
    norm = mdata.Normalization((0.5,), (0.25,))
    si, sv = pm.topk_ssim(pm.to_unit_pixels(query, norm), ref, norm, k=2, batch=16)
    assert si[:, 0].tolist() == [17, 3] and sv[0, 0] == pytest.approx(1, abs=1e-5)
    f = torch.nn.functional.normalize(ref.flatten(1), dim=1)
    ci, cv = pm.topk_cosine(f[[17, 3]], f, k=1)
    assert ci[:, 0].tolist() == [17, 3] and cv[0, 0] == pytest.approx(1)
    # an exact duplicate in the reference: the lower index (stable order) comes first
    dup = torch.cat([ref, ref[17:18]])
    assert pm.topk_pixel(ref[17:18], dup, k=2, batch=7)[0][0].tolist() == [17, 50]


def test_dcr_summary_and_sanitize():
    s = pm.dcr_summary(np.array([0.0, 0.5, 2.0]), np.linspace(0.1, 1.1, 101))
    assert s["test_p5"] == pytest.approx(0.15) and s["n_below_test_p5"] == 1
    assert s["n_exact_copies"] == 1 and s["share_below_test_p5"] == pytest.approx(1 / 3)
    clean = privacy.sanitize({"a": float("nan"), "b": [np.float32(1.5), np.inf], "c": np.int64(2),
                              "d": np.array([True])})
    assert clean == {"a": None, "b": [1.5, None], "c": 2, "d": [True]}
    json.dumps(clean, allow_nan=False)
    fixed, bad = pm.finite_scores(np.array([1.0, np.nan, np.inf, -np.inf, 3.0]))
    assert bad == 3 and fixed.tolist() == [1.0, 2.0, 3.0, 1.0, 3.0]
    assert math.isfinite(pm.roc_metrics(fixed[:2], fixed[2:], bootstrap=0)["auc"])


# ---------------------------------------------------------------- notebook 07, real data
@pytest.mark.slow
def test_notebook_07_audits_a_real_breastmnist_artifact(real_root, tmp_path):
    """Notebook 07 at preset smoke on an artifact made here from real BreastMNIST
    images (slightly moved from their init), then re-run by nbval: its check cell holds."""
    import subprocess
    import sys

    from mdd import notebooks as nb
    data = mdata.load("breastmnist", root=real_root)
    x, y, idx = random_subset(data, 2, seed=0)
    moved = x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    art = _artifact(tmp_path / "run" / "distilled", data, moved, y, idx, method="ptm+dom",
                    reseeds=[], results={"test": {"epochs": 5}})
    out = tmp_path / "out"
    runs = nb.run_notebooks(out, preset="smoke", flag="breastmnist", root=real_root, only=["07"],
                            parameters={"distilled": str(art)}, cell_timeout=300)
    assert [r["notebook"] for r in runs] == ["07_privacy.ipynb"] and runs[0]["ok"]
    tag = "breastmnist_ipc2_ptm_dom"
    want = {f"07_{k}_{tag}.png" for k in ("nearest", "dcr", "roc")} | \
        {f"07_privacy_{tag}.csv", f"07_privacy_{tag}.md", f"07_summary_{tag}.md"}
    assert want <= {p.name for p in (out / "figures").iterdir()}
    res = _strict((art / "audit" / "audit.json").read_text())
    assert res["nearest"]["n_flagged"] == 4 and 0.04 < res["dcr"]["synthetic"]["min"] < 0.06
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "-q",
         "-p", "no:cacheprovider", "--rootdir", str(tmp_path), runs[0]["executed"]],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
