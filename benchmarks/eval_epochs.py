"""How many epochs E do the evaluation networks need? (§2's E, a preset parameter.)

The grid's cost is mostly evaluation (``benchmarks/grid_budget.py``): every val
selection and test score trains networks for E = 300 epochs. This measures val AUC
against E for the sets the grid scores: the engine v2 seed-0 distilled sets (lr = their
learned α, which is small, so they are the sets most likely to need long training) and
random real subsets (lr 0.01) at ipc 2 and 10, 3 seeds, both datasets. Val only, 3
networks per evaluation from the val seed range, as a selection evaluation is run.

Rule, stated before the numbers: the preset's E is the smallest E in the grid whose val
AUC, averaged over all sets, is within 0.005 of the best E's, and no set loses more
than 0.02 against the best E. Resumable: one row per (set, E) in
``results/ablations/eval_epochs.csv`` as it finishes; the table and the choice in
``results/ablations/eval_epochs.md``.

    MDD_DATA=../shared/medmnist .venv/bin/python benchmarks/eval_epochs.py [--report]
"""
from __future__ import annotations

import glob
import json
import os
import sys
from pathlib import Path

import pandas as pd

from mdd import data as mdata
from mdd.artifact import load_distilled
from mdd.augment import AugmentConfig
from mdd.baselines import random_subset
from mdd.evaluate import EvalConfig, evaluate_set
from mdd.io import write_text
from mdd.viz import markdown_table

EPOCHS = [100, 200, 300, 500]
MODELS = 3
RANDOM = [(flag, ipc, seed) for ipc in (2, 10) for flag in ("breastmnist", "pneumoniamnist")
          for seed in (0, 1, 2)]
DISTILLED = "runs/engine_v2/*-s0"
CSV = Path("results/ablations/eval_epochs.csv")
COLUMNS = ["set", "kind", "flag", "ipc", "method", "seed", "lr", "epochs", "val_auc", "val_acc",
           "val_bacc", "aucs", "seconds"]


def sets() -> list[dict]:
    """Distilled sets first (the ones a short E could hurt), then random subsets."""
    out = []
    for run in sorted(glob.glob(DISTILLED)):
        if not (Path(run) / "result.json").is_file():
            continue
        res = json.loads((Path(run) / "result.json").read_text())
        out.append({"set": Path(run).name, "kind": "distilled", "flag": res["flag"], "ipc": res["ipc"],
                    "method": res["method"], "seed": res["seed"], "lr": res["alpha"], "run": run,
                    "augment_mode": json.loads((Path(run) / "config.json").read_text())["augment_mode"]})
    for flag, ipc, seed in RANDOM:
        out.append({"set": f"{flag}-ipc{ipc}-random-s{seed}", "kind": "random", "flag": flag,
                    "ipc": ipc, "method": "random", "seed": seed, "lr": 0.01, "augment_mode": "dsa"})
    return out


def run() -> None:
    rows = pd.read_csv(CSV).to_dict("records") if CSV.is_file() else []
    have, loaded = {(r["set"], int(r["epochs"])) for r in rows}, {}
    for s in sets():
        todo = [e for e in EPOCHS if (s["set"], e) not in have]
        if not todo:
            continue
        if s["flag"] not in loaded:
            loaded[s["flag"]] = mdata.load(s["flag"], root=os.environ.get("MDD_DATA"))
        data = loaded[s["flag"]]
        if s["kind"] == "distilled":
            d = load_distilled(s["run"])
            x, y = d.x, d.y
        else:
            x, y, _ = random_subset(data, s["ipc"], s["seed"])
        for e in todo:
            cfg = EvalConfig(models=MODELS, epochs=e, seed=s["seed"], threads=1,
                             augment=AugmentConfig(mode=s["augment_mode"]))
            r = evaluate_set(x, y, data, cfg, lr=s["lr"], split="val", progress=False)
            row = {**{k: s[k] for k in COLUMNS if k in s}, "epochs": e, "val_auc": r["auc_mean"],
                   "val_acc": r["acc_mean"], "val_bacc": r["bacc_mean"], "aucs": json.dumps(r["aucs"]),
                   "seconds": r["seconds"]}
            rows.append(row)
            write_text(CSV, pd.DataFrame(rows, columns=COLUMNS).to_csv(index=False))
            print(f"{s['set']} E={e}: val AUC {r['auc_mean']:.4f} ({r['seconds']:.0f} s)", flush=True)


def choose(table: pd.DataFrame) -> tuple[int | None, pd.DataFrame]:
    """The stated rule (module docstring) over the sets measured at every E."""
    wide = table.pivot_table(index="set", columns="epochs", values="val_auc").dropna()
    if wide.empty:
        return None, wide
    best = wide.mean().idxmax()
    for e in sorted(wide.columns):
        if wide[e].mean() >= wide[best].mean() - 0.005 and (wide[best] - wide[e]).max() <= 0.02:
            return int(e), wide
    return int(best), wide


def report() -> None:
    if not CSV.is_file():
        print("no rows yet", file=sys.stderr)
        return
    table = pd.read_csv(CSV)
    e, wide = choose(table)
    total = len(sets())
    means = table.groupby(["kind", "flag", "ipc", "epochs"])["val_auc"].agg(["mean", "count"]).reset_index()
    text = ["# Evaluation epochs E against val AUC", "",
            "Command: `MDD_DATA=../shared/medmnist .venv/bin/python benchmarks/eval_epochs.py`", "",
            "Rule (stated before the numbers): the smallest E whose val AUC averaged over all "
            "sets is within 0.005 of the best E's, with no set losing more than 0.02.", "",
            markdown_table(means, ".4f"), "",
            f"Sets measured at every E: {len(wide)}; mean val AUC by E: "
            + ", ".join(f"{int(k)}: {v:.4f}" for k, v in wide.mean().items()) if len(wide) else "",
            "", (f"**E by the rule: {e}**" if len(wide) == total else
                 f"Not final ({len(wide)} of {total} sets measured at every E); the rule "
                 f"on those so far: E = {e}.") if e is not None else "No set measured at every E yet."]
    write_text(CSV.with_suffix(".md"), "\n".join(text) + "\n")
    print("\n".join(text))


if __name__ == "__main__":
    if "--report" not in sys.argv:
        run()
    report()
