"""mdd.claims on hand-made results CSVs and run logs: the differences, the choice of the
previous best, each verdict in each direction, and missing cells."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mdd import claims as C, claims_report as R, stats
from mdd.benchmark import upsert_results
from mdd.cli import main

SEEDS = (0, 1, 2)


def rows(flag: str, ipc: int, method: str, accs) -> list[dict]:
    return [{"flag": flag, "size": 28, "ipc": ipc, "method": method, "seed": s, "acc_mean": a,
             "bacc_mean": a, "auc_mean": 0.5} for s, a in zip(SEEDS, accs)]


def grid(gain: float = 0.12, dom: float = 0.03, noise=(0.0, 0.004, -0.004), flags=("f",),
         ipcs=(2, 10)) -> list[dict]:
    """mtt < datm at ipc 2, datm < mtt at ipc 10; ptm+dom = best + gain (+ noise), ptm =
    ptm+dom − dom."""
    out = []
    for flag in flags:
        for ipc in ipcs:
            base = np.array([0.60, 0.62, 0.64])
            mtt, datm = (base, base + 0.02) if ipc == 2 else (base + 0.03, base)
            best = np.maximum(mtt.mean(), datm.mean())
            best_seeds = datm if ipc == 2 else mtt
            pd_ = best_seeds + gain + np.array(noise)
            out += rows(flag, ipc, "mtt", mtt) + rows(flag, ipc, "datm", datm)
            out += rows(flag, ipc, "ptm+dom", pd_) + rows(flag, ipc, "ptm", pd_ - dom)
            assert best in (mtt.mean(), datm.mean())
    return out


def csv(tmp_path: Path, rs: list[dict], name: str = "benchmark.csv") -> Path:
    path = tmp_path / name
    upsert_results(rs, path)
    return path


# ---------------------------------------------------------------- claim 2: accuracy
def test_best_baseline_is_the_higher_test_mean_ties_go_to_mtt():
    df = pd.DataFrame(grid())
    assert C.best_baseline(df, "f", 2)[0] == "datm"
    assert C.best_baseline(df, "f", 10)[0] == "mtt"
    tie = pd.DataFrame(rows("f", 2, "mtt", [0.5, 0.6, 0.7]) + rows("f", 2, "datm", [0.7, 0.6, 0.5]))
    best, means = C.best_baseline(tie, "f", 2)
    assert best == "mtt" and means == pytest.approx({"mtt": 0.6, "datm": 0.6})
    only = pd.DataFrame(rows("f", 2, "datm", [0.5, 0.6, 0.7]))
    assert C.best_baseline(only, "f", 2)[0] == "datm"
    assert C.best_baseline(only, "f", 5) == (None, {})


def test_differences_are_paired_per_cell_and_averaged_over_cells(tmp_path):
    rs = grid(gain=0.10, noise=(0.0, 0.0, 0.0))
    # a third cell with a different gain: the average weights cells, not seeds
    rs += [r for r in grid(gain=0.04, noise=(0.0, 0.0, 0.0), ipcs=(5,))]
    a = C.claims(csv(tmp_path, rs))["accuracy"]
    diffs = {(c["flag"], c["ipc"]): c["diff"] for c in a["cells"]}
    assert diffs[("f", 2)]["diffs"] == pytest.approx([0.10] * 3)
    assert diffs[("f", 5)]["mean"] == pytest.approx(0.04)
    assert a["average"]["mean"] == pytest.approx((0.10 + 0.10 + 0.04) / 3)
    assert a["average"]["cells"] == 3 and a["average"]["pairs"] == 9
    # ipc 2 alone: one cell, its own (degenerate) intervals
    assert a["ipc2"]["mean"] == pytest.approx(0.10) and a["ipc2"]["cells"] == 1


def test_average_difference_bootstrap_over_cells_and_seeds():
    same = C.average_difference([[0.1, 0.1], [0.1, 0.1, 0.1]])
    assert same["ci_low"] == pytest.approx(0.1) and same["ci_high"] == pytest.approx(0.1)
    spread = C.average_difference([[0.0, 0.02, 0.01], [0.10, 0.12, 0.11]])
    assert spread["mean"] == pytest.approx(0.06)
    assert spread["ci_low"] < 0.06 < spread["ci_high"]
    # the between-cell spread enters: the interval reaches toward each cell's mean
    assert spread["ci_low"] < 0.03 and spread["ci_high"] > 0.09
    # the stratified t sees only the seed noise within the (fixed) cells: sd 0.01, k 3
    half = 2.7764451 * np.sqrt((0.01 ** 2 / 3 + 0.01 ** 2 / 3) / 4)      # t(0.975, df 4)
    assert (spread["t_low"], spread["t_high"]) == pytest.approx((0.06 - half, 0.06 + half))
    assert spread["ci_low"] < spread["t_low"] and spread["t_high"] < spread["ci_high"]
    one = C.average_difference([[0.0, 0.02, 0.07]])
    assert (one["t_low"], one["t_high"]) == pytest.approx(stats.t_ci([0.0, 0.02, 0.07]))
    assert C.average_difference([])["mean"] is None
    assert C.average_difference([[0.05]])["ci_low"] is None


def test_accuracy_supported_when_the_gain_reaches_the_papers(tmp_path):
    a = C.claims(csv(tmp_path, grid(gain=0.13)))["accuracy"]
    assert a["average"]["verdict"] == C.SUPPORTED and a["ipc2"]["verdict"] == C.SUPPORTED
    assert a["verdict"] == C.SUPPORTED


def test_accuracy_not_supported_when_the_gain_is_resolved_smaller(tmp_path):
    a = C.claims(csv(tmp_path, grid(gain=0.01)))["accuracy"]
    # a resolved gain of +1 point: real, but the data exclude +8.33 and +11.7
    assert a["average"]["resolved"] and a["average"]["ci_high"] < 0.0833
    assert a["average"]["verdict"] == C.NOT_SUPPORTED and a["verdict"] == C.NOT_SUPPORTED
    loss = C.claims(csv(tmp_path, grid(gain=-0.05), "loss.csv"))["accuracy"]
    assert loss["verdict"] == C.NOT_SUPPORTED


def test_accuracy_not_resolved_when_the_interval_holds_zero_and_the_claim(tmp_path):
    a = C.claims(csv(tmp_path, grid(gain=0.02, noise=(-0.15, 0.05, 0.25))))["accuracy"]
    assert a["average"]["ci_low"] < 0 < 0.0833 < a["average"]["ci_high"]
    assert a["average"]["verdict"] == C.NOT_RESOLVED and a["verdict"] == C.NOT_RESOLVED


def test_missing_cells_are_reported_and_block_a_verdict(tmp_path):
    rs = [r for r in grid(gain=0.13) if not (r["ipc"] == 10 and r["method"] == "datm")]
    rs = [r for r in rs if not (r["ipc"] == 10 and r["method"] == "ptm+dom" and r["seed"] == 2)]
    rs += rows("g", 2, "mtt", [0.5, 0.5, 0.5])            # a flag without ptm+dom at all
    c = C.claims(csv(tmp_path, rs))
    status = {(x["flag"], x["ipc"]): x["status"] for x in c["accuracy"]["cells"]}
    assert status[("f", 2)] == "complete"
    assert status[("f", 10)] == "incomplete: 2 shared seed(s)"
    assert status[("g", 2)] == "missing: ptm+dom"
    assert c["accuracy"]["average"]["verdict"] == C.NOT_RESOLVED
    assert c["accuracy"]["verdict"] == C.NOT_RESOLVED
    # the average is over the cells that have differences; nothing is filled in for g
    assert c["accuracy"]["average"]["cells"] == 2
    rs2 = [r for r in grid(gain=0.13) if not (r["ipc"] == 10 and r["method"] == "datm")]
    one = C.claims(pd.DataFrame(rs2))["accuracy"]["cells"]
    assert [x["status"] for x in one] == ["complete", "incomplete: datm missing"]
    md = R.claims_markdown(csv(tmp_path, rs, "m.csv"))
    assert "missing: ptm+dom" in md and "incomplete: 2 shared seed(s)" in md


# ---------------------------------------------------------------- claim 3: DOM
def test_dom_effect_in_each_direction(tmp_path):
    assert C.claims(csv(tmp_path, grid(dom=0.03), "a.csv"))["dom"]["verdict"] == C.SUPPORTED
    assert C.claims(csv(tmp_path, grid(dom=-0.03), "b.csv"))["dom"]["verdict"] == C.NOT_SUPPORTED
    rs = grid(dom=0.0)
    for r, n in zip([r for r in rs if r["method"] == "ptm"], [0.02, -0.03, 0.01, -0.02, 0.03, 0.0]):
        r["acc_mean"] += n
    d = C.claims(csv(tmp_path, rs, "c.csv"))["dom"]
    assert d["verdict"] == C.NOT_RESOLVED
    assert d["cells"][0]["diff"]["diffs"] == pytest.approx([-0.02, 0.03, -0.01])


# ---------------------------------------------------------------- claim 1: stability
def write_log(runs: Path, flag: str, ipc: int, method: str, seed: int, loss) -> None:
    folder = runs / f"{flag}-ipc{ipc}-{method}-s{seed}"
    folder.mkdir(parents=True)
    with open(folder / "log.jsonl", "w") as f:
        for i, v in enumerate(loss):
            f.write(json.dumps({"iteration": i, "phase": "main", "loss": v}) + "\n")
        # a DOM retrain row is not part of the main matching loss
        f.write(json.dumps({"iteration": len(loss), "phase": "retrain", "loss": 100.0}) + "\n")


def stability_runs(tmp_path: Path, jumpy: str = "mtt") -> Path:
    runs = tmp_path / "runs"
    smooth = lambda s: list(np.linspace(1.0, 0.8, 20) + 0.001 * s)             # noqa: E731
    rough = lambda s: [1.0 if i % 2 else 3.0 + s for i in range(20)]          # noqa: E731
    for ipc in (2, 10):
        for s in SEEDS:
            write_log(runs, "f", ipc, "ptm", s, rough(s) if jumpy == "ptm" else smooth(s))
            write_log(runs, "f", ipc, "mtt", s, rough(s) if jumpy == "mtt" else smooth(s))
    return runs


def test_run_log_stats_reads_the_main_phase(tmp_path):
    runs = stability_runs(tmp_path)
    st = C.run_log_stats(runs / "f-ipc2-mtt-s0")
    assert st["iterations"] == 20 and st["jumps"] == 19 and st["window"] == 4
    smooth = C.run_log_stats(runs / "f-ipc2-ptm-s0")
    assert smooth["jumps"] == 0 and smooth["rolling_var_mean"] < 1e-3 < st["rolling_var_mean"]
    assert C.run_log_stats(tmp_path / "nothing") is None


def test_stability_in_each_direction_and_without_logs(tmp_path):
    results = csv(tmp_path, grid())
    # mtt's test ACC spread 0.02 per seed step; make ptm's tighter
    df = pd.read_csv(results)
    df.loc[df.method == "ptm", "acc_mean"] = [0.70, 0.701, 0.702] * 2
    df.to_csv(results, index=False)
    s = C.claims(results, stability_runs(tmp_path / "a"))["stability"]
    assert [c["outcome"] for c in s["cells"]] == ["PTM stabler", "PTM stabler"]
    assert s["cells"][0]["d_jumps"]["mean"] == pytest.approx(-19)
    assert s["verdict"] == C.SUPPORTED
    worse = C.claims(results, stability_runs(tmp_path / "b", jumpy="ptm"))["stability"]
    assert worse["verdict"] == C.NOT_SUPPORTED
    assert {c["outcome"] for c in worse["cells"]} == {"PTM less stable"}
    none = C.claims(results)["stability"]
    assert none["verdict"] == C.NOT_RESOLVED and "no loss logs" in none["reason"]
    # stabler losses but a wider ACC spread than MTT's: not called stabler
    df.loc[df.method == "ptm", "acc_mean"] = [0.60, 0.70, 0.80] * 2
    df.to_csv(results, index=False)
    spread = C.claims(results, tmp_path / "a" / "runs")["stability"]
    assert {c["outcome"] for c in spread["cells"]} == {"unresolved"}
    assert spread["verdict"] == C.NOT_RESOLVED


def test_stability_from_the_csv_alone(tmp_path):
    """The grid records each run's loss stats in its row: claim 1 needs no run folder."""
    results = csv(tmp_path, grid())
    df = pd.read_csv(results)
    df.loc[df.method == "ptm", "acc_mean"] = [0.70, 0.701, 0.702] * 2
    runs = stability_runs(tmp_path / "a")
    for i, r in df.iterrows():
        st = C.run_log_stats(runs / f"{r.flag}-ipc{r.ipc}-{r.method}-s{r.seed}")
        if st is not None:
            df.loc[i, "loss_jumps"], df.loc[i, "loss_rolling_var"] = st["jumps"], st["rolling_var_mean"]
    df.to_csv(results, index=False)
    with_csv = C.claims(results)["stability"]
    with_runs = C.claims(results, runs)["stability"]
    assert with_csv["verdict"] == with_runs["verdict"] == C.SUPPORTED
    assert with_csv["cells"][0]["d_jumps"]["mean"] == pytest.approx(-19)
    # a row without the stats falls back on the runs folder, and without one says so
    df.loc[(df.method == "mtt") & (df.seed == 0), ["loss_jumps", "loss_rolling_var"]] = None
    df.to_csv(results, index=False)
    assert C.claims(results)["stability"]["verdict"] == C.NOT_RESOLVED
    assert C.claims(results, runs)["stability"]["verdict"] == C.SUPPORTED


def test_stability_missing_ipc_and_missing_logs(tmp_path):
    results = csv(tmp_path, [r for r in grid() if r["ipc"] == 2])
    runs = stability_runs(tmp_path)
    (runs / "f-ipc2-mtt-s2" / "log.jsonl").unlink()
    s = C.claims(results, runs)["stability"]
    status = {c["ipc"]: c["status"] for c in s["cells"]}
    assert status == {2: "incomplete: logs for 2 of 3 seeds", 10: "missing: ptm, mtt"}
    assert s["verdict"] == C.NOT_RESOLVED


def test_expected_cells_the_grid_has_not_reached_block_every_verdict(tmp_path):
    # ipc 2 and 10 of flag f are complete and supported; the grid also asked for ipc 5
    # and a flag g: a partial grid must not read as complete
    results = csv(tmp_path, grid(gain=0.13))
    assert C.claims(results)["accuracy"]["verdict"] == C.SUPPORTED
    c = C.claims(results, expected=[("f", 2), ("f", 5), ("g", 2)])
    status = {(x["flag"], x["ipc"]): x["status"] for x in c["accuracy"]["cells"]}
    assert status == {("f", 2): "complete", ("f", 5): "missing: ptm+dom, mtt/datm",
                      ("g", 2): "missing: ptm+dom, mtt/datm", ("f", 10): "complete"}
    assert c["accuracy"]["average"]["verdict"] == C.NOT_RESOLVED
    assert c["accuracy"]["ipc2"]["verdict"] == C.NOT_RESOLVED      # g's ipc 2 is missing
    assert c["dom"]["verdict"] == C.NOT_RESOLVED
    assert {(x["flag"], x["ipc"]) for x in c["stability"]["cells"]} == {("f", 2), ("f", 10), ("g", 2), ("g", 10)}
    assert c["stability"]["verdict"] == C.NOT_RESOLVED
    rows = R.summary_rows(c)
    assert [r["complete cells"] for r in rows] == ["0 of 4", "2 of 4", "1 of 2", "2 of 4"]
    assert {r["verdict"] for r in rows} == {C.NOT_RESOLVED}


# ---------------------------------------------------------------- files and CLI
def test_write_claims_and_the_cli(tmp_path, capsys):
    results = csv(tmp_path / "results", grid(gain=0.13))
    runs = stability_runs(tmp_path)
    md = R.write_claims(results, tmp_path / "out" / "claims.md", runs=runs)
    assert (tmp_path / "out" / "claims.md").read_text() == md
    for line in ("## Summary", "## Claim 1", "## Claim 2", "## Claim 3", "**Verdict: supported**",
                 "+8.33", "+11.70"):
        assert line in md
    summary = R.summary_rows(C.claims(results, runs))
    assert [r["verdict"] for r in summary] == [C.SUPPORTED] * 4
    assert summary[0]["complete cells"] == "2 of 2" and summary[1]["measured"].startswith("+13.0 [")
    rc = main(["benchmark", "--claims", "--results", str(results), "--runs", str(runs)])
    assert rc == 0
    printed = capsys.readouterr().out
    written = (results.parent / "claims.md").read_text()
    assert "## Claim 2" in printed and written.strip() in printed
    assert not (runs / "experts").exists()   # nothing ran
    # the CLI expects its --flags × --ipcs (by default the grid): f alone is partial
    assert "breastmnist | 1 | 0 | missing" in written and "**Verdict: supported**" not in written
