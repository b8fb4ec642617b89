import pandas as pd
import pytest

from mdd import benchmark as B


def test_cells_order_and_unknown_method():
    cfg = B.GridConfig(flags=["breastmnist"], ipcs=[1, 2], methods=["random", "ptm", "full"])
    assert cfg.cells() == [("breastmnist", 1, "random"), ("breastmnist", 1, "ptm"),
                           ("breastmnist", 2, "random"), ("breastmnist", 2, "ptm"),
                           ("breastmnist", None, "full")]
    with pytest.raises(ValueError, match="unknown methods"):
        B.GridConfig(methods=["dc"]).cells()


def test_gain_over_random():
    df = pd.DataFrame([
        dict(flag="f", ipc=1, method="random", acc_mean=0.5, acc_std=0.1, auc_mean=0.6, auc_std=0.0),
        dict(flag="f", ipc=1, method="ptm", acc_mean=0.62, acc_std=0.0, auc_mean=0.7, auc_std=0.0),
        dict(flag="f", ipc=None, method="full", acc_mean=0.9, acc_std=0.0, auc_mean=0.9, auc_std=0.0),
    ])
    t = B.gain_table(df)
    gains = t["ΔACC vs random"].tolist()
    assert pd.isna(gains[0]) and gains[1] == 12.0 and pd.isna(gains[2])
    assert t["ACC %"].tolist()[0] == "50.0 ± 10.0" and t["ipc"].tolist()[2] == "all"


def test_grid_resumes_by_skipping_finished_cells(make_fake, tmp_path, monkeypatch):
    root = make_fake("breastmnist")
    calls = []
    real = B.run_cell

    def counting(cfg, flag, ipc, method):
        calls.append((flag, ipc, method))
        return real(cfg, flag, ipc, method)

    monkeypatch.setattr(B, "run_cell", counting)
    cfg = B.GridConfig(flags=["breastmnist"], ipcs=[2], methods=["random", "full"], preset="smoke",
                       root=str(root), runs=str(tmp_path / "runs"),
                       results=str(tmp_path / "results.csv"), device="cpu", progress=False)
    table = B.run_grid(cfg)
    assert calls == [("breastmnist", 2, "random"), ("breastmnist", None, "full")]
    assert set(table["method"]) == {"random", "full"} and len(table) == 2
    B.run_grid(cfg)
    assert len(calls) == 2  # nothing redone
