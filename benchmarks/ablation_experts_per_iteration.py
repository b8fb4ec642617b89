"""Val effect of ``experts_per_iteration`` (issue 13 item 4): the cpu preset (PTM + DOM)
with one matching problem per iteration (``e1``, the default) against two averaged
(``e2``, the second on a thread of its own), BreastMNIST and PneumoniaMNIST at ipc 2,
3 seeds. Same iterations, so ``e2`` sees twice the expert windows. Val only (ablation
cells, :mod:`mdd.ablation`); resumable; rows in
``results/ablations/experts_per_iteration.csv``, the paired table in ``….md``.

    MDD_DATA=../shared/medmnist python benchmarks/ablation_experts_per_iteration.py [--workers 2]

``--workers 1`` runs the cells one after the other (beside another job on 2 cores).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from mdd.ablation import AblationConfig, read_table, run_ablation, summary_markdown
from mdd.io import write_text

NAME = "experts_per_iteration"
RESULTS = Path("results/ablations")


def config(workers: int = 2) -> AblationConfig:
    return AblationConfig(name=NAME, reference="e1", root=os.environ.get("MDD_DATA"), workers=workers,
                          results=str(RESULTS), flags=["breastmnist", "pneumoniamnist"],
                          ipcs=[2], seeds=[0, 1, 2],
                          variants={"e1": {}, "e2": {"experts_per_iteration": 2}})


def report() -> None:
    table = read_table(RESULTS / f"{NAME}.csv")
    text = ["# Two matching problems per iteration (val split only)", "",
            "`e2`: two expert windows per iteration, gradients averaged, against `e1` (one, "
            "the cpu preset). PTM + DOM, val AUC of the checkpoint the protocol selects, "
            "mean ± std over seeds, paired difference from `e1` with 95 % intervals. "
            "Rule, stated before the runs: `experts_per_iteration` stays 1 unless `e2` "
            "raises the mean paired val AUC on both datasets.", "",
            "Command: `MDD_DATA=../shared/medmnist python benchmarks/ablation_experts_per_iteration.py`",
            "", summary_markdown(table, "e1")]
    write_text(RESULTS / f"{NAME}.md", "\n".join(text) + "\n")
    print("\n".join(text))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=2, help="cells side by side (default 2)")
    run_ablation(config(ap.parse_args().workers))
    report()
