import pandas as pd
import pytest

from mdd import benchmark as B


def test_cells_order_and_unknown_method():
    cfg = B.GridConfig(flags=["breastmnist"], ipcs=[1, 2], methods=["random", "ptm", "full"], seeds=[0])
    assert cfg.cells() == [("breastmnist", 1, "random", 0), ("breastmnist", 1, "ptm", 0),
                           ("breastmnist", 1, "random@ptm", 0),
                           ("breastmnist", 2, "random", 0), ("breastmnist", 2, "ptm", 0),
                           ("breastmnist", 2, "random@ptm", 0), ("breastmnist", None, "full", 0)]
    two = B.GridConfig(flags=["breastmnist"], ipcs=[1], methods=["random", "mtt"], seeds=[3, 4], controls=False)
    assert two.cells() == [("breastmnist", 1, "random", 3), ("breastmnist", 1, "mtt", 3), ("breastmnist", 1, "random", 4),
                           ("breastmnist", 1, "mtt", 4)]
    with pytest.raises(ValueError, match="unknown methods"):
        B.GridConfig(methods=["dc"]).cells()


def test_seed_table_is_over_seeds_with_paired_gains():
    rows = [dict(flag="f", ipc=1, method="random", seed=s, acc_mean=a, bacc_mean=a, auc_mean=0.6)
            for s, a in enumerate([0.5, 0.6, 0.7])]
    rows += [dict(flag="f", ipc=1, method="ptm", seed=s, acc_mean=a + 0.12, bacc_mean=a, auc_mean=0.7)
             for s, a in enumerate([0.5, 0.6, 0.7])]
    rows += [dict(flag="f", ipc=None, method="full", seed=0, acc_mean=0.9, bacc_mean=0.9, auc_mean=0.9)]
    t = B.seed_table(pd.DataFrame(rows))
    assert t["seeds"].tolist() == [3, 3, 1]
    assert t["ACC %"].tolist()[0] == "60.0 ± 10.0"          # sample std over seeds
    gains = t["ΔACC vs random (pts, 95 % CI)"].tolist()
    assert gains[0] == "" and gains[1] == "+12.0 [+12.0, +12.0]" and gains[2] == ""
    assert t["ipc"].tolist()[2] == "all"
    p = B.paired_table(pd.DataFrame(rows), "ptm", "random")
    assert p["seeds"].tolist() == [3] and p["ΔACC [bootstrap CI]"].tolist()[0].startswith("+12.0")


def test_grid_resumes_by_skipping_finished_cells(make_fake, tmp_path, monkeypatch):
    root = make_fake("breastmnist")
    calls = []
    real = B.run_cell

    def counting(cfg, flag, ipc, method, seed):
        calls.append((flag, ipc, method, seed))
        return real(cfg, flag, ipc, method, seed)

    monkeypatch.setattr(B, "run_cell", counting)
    cfg = B.GridConfig(flags=["breastmnist"], ipcs=[2], methods=["random", "full"], preset="smoke",
                       seeds=[0, 1], root=str(root), runs=str(tmp_path / "runs"),
                       results=str(tmp_path / "results.csv"), device="cpu", progress=False)
    table = B.run_grid(cfg)
    assert calls == [("breastmnist", 2, "random", 0), ("breastmnist", 2, "random", 1),
                     ("breastmnist", None, "full", 0)]
    assert set(table["method"]) == {"random", "full"} and len(table) == 3
    seeds = [set(__import__("json").loads(s)) for s in table["test_seeds"]]
    assert not seeds[0] & seeds[1]   # seeds 0 and 1 never share a test network
    assert table["protocol"].tolist() == [2, 2, 2] and table["bacc_mean"].notna().all()
    B.run_grid(cfg)
    assert len(calls) == 3  # nothing redone
