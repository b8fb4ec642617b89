"""Val curves that size the cpu preset (issue: benchmark v2, item 1).

MTT and PTM+DOM at the cpu preset, carried to ``LONG`` = 3× the preset's iterations with
a val evaluation every 25 (PTM keeps the preset's stage length, so the first 150
iterations are the preset's run), 3 seeds, BreastMNIST and PneumoniaMNIST at ipc 2 and
10. Val only (ablation cells, :mod:`mdd.ablation`); the plateau rule of
:mod:`mdd.curves` turns the curves into the preset's budget. Resumable: run rows land in
``results/ablations/preset_curves.csv`` as cells finish, every val evaluation of the runs
found in ``results/ablations/preset_curves_evals.csv``, the plateau table and the budget
in ``results/ablations/preset_curves.md``.

    MDD_DATA=../shared/medmnist python benchmarks/preset_curves.py [ipc2|ipc10 ...]
    python benchmarks/preset_curves.py --report      # tables from the runs found, no runs

The same runs decide how often the grid evaluates candidates (a second rule, stated on
2026-12-07 before its numbers were computed). Candidates every 50 iterations instead
of 25 halve the val evaluations, which cost about as much as the matching. Whether the
selection loses by it is measured on val alone, by held-out networks
(:func:`mdd.curves.heldout_selection`): in each run, for each of its 3 val networks, the
checkpoint is chosen on the other two among the candidates up to the budget, and scored
by the held-out network's AUC. **Rule**: ``eval_every`` becomes 50 if the mean paired
difference (every 50 − every 25) over all runs of the 8 complete cells, at the budget
the curves give, is ≥ −0.005 and no cell's mean is below −0.01; otherwise it stays 25.
Written to ``results/ablations/eval_every.md``.

Cost measured on engine v2 (2 cores, one run per core): an ipc 2 run of 150 iterations
is about 4.5 min wall, an ipc 10 run about 18 min; 3× as long here.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from mdd import curves
from mdd.ablation import AblationConfig, run_ablation
from mdd.io import write_text
from mdd.viz import markdown_table

#: The cpu preset the curves measured (engine v2: 150 iterations, 4 stages, val every
#: 25), carried to 3× its iterations. Fixed numbers, not read from PRESETS: the curves
#: size the preset, and a resized preset must not change the runs that sized it.
MEASURED = dict(iterations=150, num_stages=4, eval_every=25)
LONG = 3 * MEASURED["iterations"]
#: The measured preset's stage length, kept fixed so a long run extends the last stage.
LONG_RUN = dict(iterations=LONG, eval_every=MEASURED["eval_every"],
                stage_iterations=MEASURED["iterations"] // MEASURED["num_stages"])
METHODS = ["mtt", "ptm+dom"]
FLAGS = ["breastmnist", "pneumoniamnist"]
SEEDS = [0, 1, 2]
BLOCKS = {"ipc2": 2, "ipc10": 10}
NAME = "preset_curves"
RESULTS = Path("results/ablations")
RUNS = "runs/ablations"


def config(ipc: int) -> AblationConfig:
    return AblationConfig(name=NAME, reference="ptm+dom", root=os.environ.get("MDD_DATA"),
                          results=str(RESULTS), runs=RUNS, flags=FLAGS, ipcs=[ipc], seeds=SEEDS,
                          variants={m: {"method": m, **LONG_RUN} for m in METHODS})


def report() -> None:
    where = curves.curve_runs(RUNS, NAME, FLAGS, list(BLOCKS.values()), METHODS, SEEDS)
    c = curves.read_curves(where)
    if not len(c):
        print("no curve runs found under", Path(RUNS) / NAME)
        return
    write_text(RESULTS / f"{NAME}_evals.csv", c.to_csv(index=False))
    p = curves.plateau_table(c)
    # evidence: all seeds, carried to the end (a shorter curve's plateau may still move)
    p["complete"] = (p["seeds"] == len(SEEDS)) & (p["last_iteration"] >= LONG)
    cells = len(FLAGS) * len(BLOCKS) * len(METHODS)
    final = int(p["complete"].sum()) == cells
    budget = curves.preset_budget(p[p["complete"]])
    text = ["# Val curves that size the cpu preset", "",
            f"MTT and PTM+DOM carried to {LONG} iterations (the measured cpu preset's "
            f"{MEASURED['iterations']} × 3, PTM's stage length kept at {LONG_RUN['stage_iterations']}), "
            f"val AUC every {MEASURED['eval_every']} iterations, mean over seeds. Rule, stated "
            "before the curves (mdd.curves): a cell's plateau is the first iteration whose "
            "mean val AUC is within 0.005 of its best; the preset's budget is the largest "
            "plateau over all cells.", "",
            "Command: `MDD_DATA=../shared/medmnist python benchmarks/preset_curves.py`", "",
            markdown_table(p, ".3f"), "",
            (f"Budget by the rule: **{budget} iterations**." if final else
             f"Not final: {int(p['complete'].sum())} of {cells} cells complete (all "
             f"{len(SEEDS)} seeds carried to {LONG}); largest plateau among them so far: "
             f"{budget}.")]
    write_text(RESULTS / f"{NAME}.md", "\n".join(text) + "\n")
    print("\n".join(text))
    eval_every_report(where, p[p["complete"]], budget, final)


def eval_every_report(where: dict, complete, budget: int | None, final: bool) -> None:
    """The second rule (module docstring), on the complete cells' runs at ``budget``."""
    if budget is None:
        return
    nets = curves.read_network_curves(where)
    keep = set(map(tuple, complete[curves.KEYS].values))
    nets = nets[[k in keep for k in map(tuple, nets[curves.KEYS].values)]]
    t = curves.eval_every_table(nets, budget, coarse=50, fine=25)
    ok = curves.coarse_selection_ok(t)
    runs = int(t["seeds"].sum()) if len(t) else 0
    overall = float((t["diff"] * t["seeds"]).sum() / runs) if runs else float("nan")
    verdict = "**eval_every = 50**" if ok else "**eval_every stays 25**"
    text = ["# Candidates every 25 or every 50 iterations? (val, held-out networks)", "",
            "Rule, stated before the numbers (benchmarks/preset_curves.py docstring): in each "
            "curve run, for each of its 3 val networks, the checkpoint is chosen on the other "
            "two among the candidates up to the budget (every k iterations and the last) and "
            "scored by the held-out network's AUC. eval_every becomes 50 if the mean paired "
            "difference (every 50 − every 25) over all runs of the 8 complete cells is ≥ −0.005 "
            "and no cell's mean is below −0.01; otherwise it stays 25.", "",
            "Command: `python benchmarks/preset_curves.py --report`", "",
            f"Budget: {budget} iterations; {runs} runs in {len(t)} complete cells.", "",
            markdown_table(t, ".4f") if len(t) else "(no complete cell)", "",
            f"Mean paired difference over the runs: {overall:+.4f}.", "",
            (f"By the rule: {verdict}." if final else
             f"Not final (the budget and the cells are not); by the rule so far: {verdict}.")]
    write_text(RESULTS / "eval_every.md", "\n".join(text) + "\n")
    print("\n".join(text))


def main(blocks: list[str]) -> None:
    for block in blocks:
        run_ablation(config(BLOCKS[block]))
        report()


if __name__ == "__main__":
    args = sys.argv[1:]
    if args == ["--report"]:
        report()
    else:
        unknown = [a for a in args if a not in BLOCKS]
        if unknown:
            print(f"preset_curves: unknown block(s) {unknown}; choose from {list(BLOCKS)} or --report",
                  file=sys.stderr)
            sys.exit(2)
        main(args or list(BLOCKS))
