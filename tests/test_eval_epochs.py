"""The rule that picks the evaluation epochs E (benchmarks/eval_epochs.py)."""
import importlib.util
from pathlib import Path

import pandas as pd

spec = importlib.util.spec_from_file_location(
    "eval_epochs", Path(__file__).resolve().parents[1] / "benchmarks" / "eval_epochs.py")
ee = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ee)


def table(aucs: dict[str, dict[int, float]]) -> pd.DataFrame:
    return pd.DataFrame([{"set": s, "epochs": e, "val_auc": v} for s, row in aucs.items()
                         for e, v in row.items()])


def test_smallest_e_within_tolerance_on_average_and_per_set():
    # 100 is within 0.005 on average and loses at most 0.02 per set: chosen
    assert ee.choose(table({"a": {100: 0.80, 300: 0.803}, "b": {100: 0.90, 300: 0.904}}))[0] == 100
    # 100 loses 0.03 on one set although the average is close: 300 is needed
    t = table({"a": {100: 0.80, 300: 0.83}, "b": {100: 0.925, 300: 0.90}})
    assert ee.choose(t)[0] == 300
    # sets without every E are not evidence yet
    t = table({"a": {100: 0.70, 300: 0.90}, "b": {100: 0.9}})
    assert ee.choose(t)[0] == 300 and list(ee.choose(t)[1].index) == ["a"]
