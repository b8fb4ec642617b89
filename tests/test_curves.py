"""Val curves that size a preset (mdd.curves): the plateau rule and the figure."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import pandas as pd

from mdd import curves

matplotlib.use("Agg")


def _curve(flag: str, method: str, seed: int, values: list[float]) -> list[dict]:
    return [{"flag": flag, "ipc": 2, "method": method, "seed": seed, "iteration": 25 * k,
             "auc_mean": v, "bacc_mean": v, "acc_mean": v, "alpha": 0.01}
            for k, v in enumerate(values)]


def test_plateau_is_the_first_iteration_within_tol_of_the_best() -> None:
    rows = (_curve("a", "mtt", 0, [0.5, 0.70, 0.80, 0.812, 0.815, 0.80])
            + _curve("a", "mtt", 1, [0.5, 0.72, 0.82, 0.818, 0.815, 0.81])
            + _curve("a", "ptm", 0, [0.9, 0.60, 0.70, 0.74, 0.78, 0.80]))
    p = curves.plateau_table(pd.DataFrame(rows), tol=0.005).set_index("method")
    # mtt means: 0.71, 0.81, 0.815, 0.815, 0.805 → best 0.815 at 75; 0.81 is within 0.005
    assert p.loc["mtt", "best_iteration"] == 75
    assert p.loc["mtt", "plateau_iteration"] == 50
    assert p.loc["mtt", "seeds"] == 2
    # the initialisation (iteration 0) is no candidate, however high
    assert p.loc["ptm", "best_iteration"] == 125 == p.loc["ptm", "plateau_iteration"]
    assert curves.preset_budget(p.reset_index()) == 125


def test_a_run_still_going_does_not_stretch_the_mean() -> None:
    # seed 1 has reached iteration 50 only: past it, the "mean" would be seed 0 alone
    rows = (_curve("a", "mtt", 0, [0.5, 0.70, 0.80, 0.90, 0.95])
            + _curve("a", "mtt", 1, [0.5, 0.72, 0.82]))
    p = curves.plateau_table(pd.DataFrame(rows)).set_index("method")
    assert p.loc["mtt", "last_iteration"] == 50 and p.loc["mtt", "best_iteration"] == 50
    assert p.loc["mtt", "seeds"] == 2


def test_read_curves_and_figure(tmp_path: Path) -> None:
    run = tmp_path / "breastmnist-ipc2-mtt-s0"
    run.mkdir()
    (run / "evals.jsonl").write_text("".join(
        json.dumps({"iteration": i, "auc_mean": 0.5 + i / 1000, "bacc_mean": 0.5, "acc_mean": 0.6,
                    "alpha": 0.01}) + "\n" for i in (0, 25, 50)))
    where = curves.curve_runs(tmp_path.parent, tmp_path.name, ["breastmnist"], [2], ["mtt", "ptm"], [0])
    c = curves.read_curves(where)                 # the missing ptm run is skipped
    assert list(c["iteration"]) == [0, 25, 50] and set(c["method"]) == {"mtt"}
    # with DOM, the log's iteration counts retraining too: the curve is in matching iterations
    ptm = tmp_path / "breastmnist-ipc2-ptm-s0"
    ptm.mkdir()
    (ptm / "evals.jsonl").write_text("".join(
        json.dumps({"iteration": it, "main_iteration": main, "auc_mean": 0.6, "bacc_mean": 0.5,
                    "acc_mean": 0.6, "alpha": 0.01}) + "\n" for it, main in ((0, 0), (25, 25), (55, 50))))
    c = curves.read_curves(where)
    assert list(c[c["method"] == "ptm"]["iteration"]) == [0, 25, 50]
    fig = curves.curves_figure(c, curves.plateau_table(c), budget=50, title="t")
    assert len(fig.axes) == 1 and fig.axes[0].get_title() == "breastmnist, ipc 2"


def _networks(method: str, seed: int, per_iteration: dict[int, list[float]]) -> list[dict]:
    return [{"flag": "a", "ipc": 2, "method": method, "seed": seed, "iteration": it,
             "network": j, "auc": v, "bacc": 0.5}
            for it, values in per_iteration.items() for j, v in enumerate(values)]


def test_heldout_selection_chooses_on_the_other_networks() -> None:
    # at 25 the networks disagree: networks 1 and 2 like it, network 0 does not
    nets = pd.DataFrame(_networks("mtt", 0, {0: [0.9, 0.9, 0.9], 25: [0.5, 0.9, 0.9],
                                             50: [0.7, 0.7, 0.7], 75: [0.6, 0.6, 0.6]}))
    fine = curves.heldout_selection(nets, every=25, budget=75).iloc[0]
    # held out 0: picks 25 (others 0.9) and scores 0.5; held out 1 or 2: 25 → 0.9
    assert fine["picks"] == [25, 25, 25] and abs(fine["heldout_auc"] - (0.5 + 0.9 + 0.9) / 3) < 1e-12
    coarse = curves.heldout_selection(nets, every=50, budget=75).iloc[0]
    # every 50: candidates 50 and the budget 75 (the last iterate), never iteration 0
    assert coarse["candidates"] == 2 and coarse["picks"] == [50, 50, 50]
    assert abs(coarse["heldout_auc"] - 0.7) < 1e-12
    # a run that has not reached the budget is left out
    assert curves.heldout_selection(nets, every=25, budget=100).empty


def test_eval_every_rule() -> None:
    rows = []
    for seed in (0, 1, 2):
        rows += _networks("mtt", seed, {25: [0.8, 0.8, 0.8], 50: [0.81, 0.81, 0.81]})
    t = curves.eval_every_table(pd.DataFrame(rows), budget=50, coarse=50, fine=25)
    assert list(t["diff"]) == [0.0] and curves.coarse_selection_ok(t)
    rows = []
    for seed in (0, 1, 2):   # the coarse grid misses the peak at 25 by 0.02
        rows += _networks("mtt", seed, {25: [0.83, 0.83, 0.83], 50: [0.81, 0.81, 0.81],
                                        75: [0.80, 0.80, 0.80]})
    t = curves.eval_every_table(pd.DataFrame(rows), budget=75, coarse=50, fine=25)
    assert abs(t["diff"].iloc[0] + 0.02) < 1e-12 and curves.coarse_selection_ok(t) is False
    assert curves.coarse_selection_ok(pd.DataFrame()) is None


def test_read_network_curves(tmp_path: Path) -> None:
    run = tmp_path / "breastmnist-ipc2-mtt-s0"
    run.mkdir()
    (run / "evals.jsonl").write_text("".join(
        json.dumps({"iteration": i, "aucs": [0.6, 0.7], "baccs": [0.5, 0.55]}) + "\n" for i in (0, 25)))
    n = curves.read_network_curves({("breastmnist", 2, "mtt", 0): str(run)})
    assert len(n) == 4 and list(n["network"]) == [0, 1, 0, 1] and list(n["auc"]) == [0.6, 0.7] * 2
