"""Val-only ablations (mdd.ablation): cells run to their last iteration without a test
evaluation, one row each, resumable, summarised with paired differences."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from mdd.ablation import (AblationConfig, add_rows, decide_defaults, defaults_markdown,
                          read_table, run_ablation, summary_markdown, summary_table)


def test_two_variants_two_seeds_inline(distill_env, tmp_path: Path) -> None:
    cfg = AblationConfig(name="tiny", reference="v2", preset="smoke", seeds=[0, 1], ipcs=[2],
                         variants={"v2": {}, "sgd": {"image_opt": "sgd", "lr_images": 100.0}},
                         root=str(distill_env["root"]), experts=str(distill_env["experts"]),
                         runs=str(tmp_path / "runs"), results=str(tmp_path / "results"),
                         workers=0)
    table = run_ablation(cfg, progress=False)
    assert len(table) == 4 and set(table["variant"]) == {"v2", "sgd"}
    assert table["val_auc"].notna().all() and (table["selected_iteration"] > 0).all()
    assert (table["dx_second_half"] >= 0).all() and table["alpha_last"].gt(0).all()
    for run in (tmp_path / "runs" / "tiny").iterdir():
        assert not (run / "result.json").exists()     # test was never read
    # resumable: a second call finds every row and runs nothing
    before = (tmp_path / "results" / "tiny.csv").read_text()
    again = run_ablation(cfg, progress=False)
    assert len(again) == 4 and (tmp_path / "results" / "tiny.csv").read_text() == before
    s = summary_table(table, "v2")
    sgd = s[s.variant == "sgd"].iloc[0]
    assert sgd["seeds"] == 2 and sgd["ci"] and pd.isna(s[s.variant == "v2"].iloc[0]["diff"])
    md = summary_markdown(table, "v2")
    assert md.count("\n") == 4 and "| breastmnist | 2 | sgd | 2 |" in md


def test_rows_from_elsewhere_are_kept_and_their_cells_skipped(distill_env, tmp_path: Path) -> None:
    cfg = AblationConfig(name="mixed", reference="v2", preset="smoke", seeds=[0, 1], ipcs=[2],
                         variants={"v2": {}}, root=str(distill_env["root"]),
                         experts=str(distill_env["experts"]), runs=str(tmp_path / "runs"),
                         results=str(tmp_path / "results"), workers=0)
    theirs = {"flag": "breastmnist", "ipc": 2, "variant": "v2", "seed": 0, "val_auc": 0.123,
              "source": "a grid run"}
    add_rows([{**theirs, "val_auc": 0.5}], cfg.csv)
    add_rows([theirs], cfg.csv)                    # a row replaces the one with its key
    assert len(read_table(cfg.csv)) == 1
    table = run_ablation(cfg, progress=False).set_index("seed")
    assert table.loc[0, "val_auc"] == 0.123 and table.loc[0, "source"] == "a grid run"
    assert table.loc[1, "val_auc"] != 0.123 and not (tmp_path / "runs" / "mixed" /
                                                      "breastmnist-ipc2-v2-s0").exists()


def test_summary_pairs_by_seed() -> None:
    t = pd.DataFrame({"flag": ["f"] * 6, "ipc": [2] * 6, "variant": ["a", "a", "a", "b", "b", "b"],
                      "seed": [0, 1, 2, 0, 1, 2], "val_auc": [0.6, 0.7, 0.8, 0.65, 0.75, 0.85],
                      "dx_second_half": [1.0] * 6, "alpha_last": [0.01] * 6, "replaced": [0] * 6})
    s = summary_table(t, "a").set_index("variant")
    assert s.loc["b", "diff"] == pytest.approx(0.05) and s.loc["b", "seeds"] == 3
    assert s.loc["a", "mean"] == pytest.approx(0.7)


def test_a_config_needs_variants() -> None:
    with pytest.raises(ValueError, match="variant"):
        AblationConfig(name="x", reference="v2", variants={})


def test_defaults_revert_only_when_every_dataset_gains() -> None:
    rows = []
    for flag, gain in (("a", 0.02), ("b", -0.01)):
        for seed in (0, 1):
            rows += [{"flag": flag, "ipc": 2, "variant": "v2", "seed": seed, "val_auc": 0.8},
                     {"flag": flag, "ipc": 2, "variant": "x", "seed": seed, "val_auc": 0.8 + gain},
                     {"flag": flag, "ipc": 2, "variant": "y", "seed": seed, "val_auc": 0.81}]
    t = pd.DataFrame(rows)
    for c in ("dx_second_half", "alpha_last", "replaced"):
        t[c] = 0.0
    d = decide_defaults(t, "v2", ["x", "y", "z"]).set_index("variant")
    assert d.loc["x", "default"] == "keep v2"          # gains on a, loses on b
    assert d.loc["y", "default"] == "revert to v1"     # gains on both
    assert d.loc["z", "default"].startswith("undecided")
    assert d.loc["x", "diff_a"] == pytest.approx(0.02)
    assert "revert to v1" in defaults_markdown(t, "v2", ["y"])
