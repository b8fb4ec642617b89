import concurrent.futures as cf
import contextlib
import shutil
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

import mdd.data
from mdd import benchmark as B
from mdd.executors import Placement


def test_cells_order_and_unknown_method():
    cfg = B.GridConfig(flags=["breastmnist"], ipcs=[1, 2], methods=["random", "ptm", "full"], seeds=[0])
    assert cfg.cells() == [("breastmnist", None, "full", 0),
                           ("breastmnist", 1, "random", 0), ("breastmnist", 1, "ptm", 0),
                           ("breastmnist", 1, "random@ptm", 0),
                           ("breastmnist", 2, "random", 0), ("breastmnist", 2, "ptm", 0),
                           ("breastmnist", 2, "random@ptm", 0)]
    # ipc-major across flags, ipcs in the order given (the grid of record lists 2 10 1 5)
    grid = B.GridConfig(flags=["breastmnist", "pneumoniamnist"], ipcs=[2, 1], methods=["mtt"], seeds=[0])
    assert grid.cells() == [("breastmnist", 2, "mtt", 0), ("pneumoniamnist", 2, "mtt", 0),
                            ("breastmnist", 1, "mtt", 0), ("pneumoniamnist", 1, "mtt", 0)]
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


def test_glance_table_has_one_row_per_cell_and_flags_thin_cells():
    rows = [dict(flag="f", ipc=2, method=m, seed=s, acc_mean=a + s / 100, auc_mean=0.8)
            for m, a in (("random", 0.5), ("mtt", 0.7), ("random@mtt", 0.1)) for s in range(3)]
    rows += [dict(flag="f", ipc=10, method="mtt", seed=0, acc_mean=0.75, auc_mean=0.9),
             dict(flag="f", ipc=None, method="full", seed=0, acc_mean=0.9, auc_mean=0.95)]
    t = B.glance_table(pd.DataFrame(rows)).set_index("ipc")
    assert list(t.columns) == ["flag", "random", "mtt", "full"]      # no random@ control
    assert t.loc[2, "mtt"] == "71.0 ± 1.0" and t.loc[10, "mtt"] == "75.0 (n = 1)"
    assert t.loc[10, "random"] == "" and (t["full"] == "90.0").all()
    assert B.glance_table(pd.DataFrame(rows), "auc_mean").loc[0, "full"] == "0.950"


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
                       results=str(tmp_path / "results.csv"), device="cpu", progress=False,
                       workers=0)   # this process: the patched run_cell is what runs
    table = B.run_grid(cfg)
    assert calls == [("breastmnist", None, "full", 0), ("breastmnist", 2, "random", 0),
                     ("breastmnist", 2, "random", 1)]
    assert set(table["method"]) == {"random", "full"} and len(table) == 3
    seeds = [set(__import__("json").loads(s)) for s in table["test_seeds"]]
    assert not seeds[0] & seeds[1]   # seeds 0 and 1 never share a test network
    assert table["protocol"].tolist() == [2, 2, 2] and table["bacc_mean"].notna().all()
    B.run_grid(cfg)
    assert len(calls) == 3  # nothing redone


def test_rows_of_another_preset_size_are_refused_not_counted_done(tmp_path, capsys):
    """A resized preset must not skip cells an older grid finished at another size."""
    from mdd.cli import main
    csv = tmp_path / "results.csv"
    old = dict(flag="breastmnist", size=28, ipc=2, seed=0, acc_mean=0.5, bacc_mean=0.5,
               auc_mean=0.5, models=1, epochs=20, protocol=2)
    B.upsert_results([{**old, "method": "random"}, {**old, "method": "mtt", "iterations": 7}], csv)
    before = csv.read_bytes()
    cfg = B.GridConfig(flags=["breastmnist"], ipcs=[2], methods=["random", "mtt"], seeds=[0],
                       preset="smoke", runs=str(tmp_path / "runs"), results=str(csv), workers=0,
                       progress=False)
    with pytest.raises(ValueError, match="1 rows with iterations 7, the smoke preset has 8"):
        B.run_grid(cfg)
    rc = main(["benchmark", "--preset", "smoke", "--flags", "breastmnist", "--ipcs", "2",
               "--methods", "random", "mtt", "--seeds", "0", "--runs", str(tmp_path / "runs"),
               "--results", str(csv), "--workers", "0"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "move them aside" in err
    runs = tmp_path / "runs"
    assert csv.read_bytes() == before and not [p for p in runs.glob("*") if p.name != ".lock"]
    # rows at the preset's size count as done; other evaluation sizes are refused too
    B.upsert_results([{**old, "method": "mtt", "iterations": 8}], csv)
    assert B._done(csv, "smoke") == {("breastmnist", 2, "random", 0), ("breastmnist", 2, "mtt", 0)}
    B.upsert_results([{**old, "method": "random", "epochs": 300}], csv)
    with pytest.raises(ValueError, match="epochs 300, the smoke preset has 20"):
        B._done(csv, "smoke")


# ---------------------------------------------------------------- scale-out
def _fake_row(cfg, flag, ipc, method, seed):
    return {"flag": flag, "size": 28, "ipc": ipc, "method": method, "seed": seed,
            "acc_mean": 0.5, "bacc_mean": 0.5, "auc_mean": 0.5, "protocol": 2}


@pytest.fixture
def threaded_grid(monkeypatch, tmp_path):
    """run_grid's worker path on a 2-thread pool with a fake cell (no data, no torch):
    returns the log of (event, cell) and a dict of cells that should fail."""
    log, fail, lock = [], {}, threading.Lock()

    @contextlib.contextmanager
    def pool(workers, pending, threads, scheduler, client):
        with cf.ThreadPoolExecutor(2) as ex:
            yield Placement(ex, "processes", 2, 1)

    def job(j):
        with lock:
            log.append(("start", j.cell))
        time.sleep(0.05 if j.cell[2] in B.DISTILL_METHODS else 0.01)
        if j.cell in fail:
            raise RuntimeError(f"cell {j.cell} failed")
        assert j.threads == 1 and Path(j.cfg.runs).is_absolute() and not j.cfg.progress
        with lock:
            log.append(("end", j.cell))
        return _fake_row(j.cfg, *j.cell)

    monkeypatch.setattr(B, "open_executor", pool)
    monkeypatch.setattr(B, "run_cell_job", job)
    monkeypatch.setattr(B, "_train_experts", lambda cfg, flag, **w: log.append(("experts", flag)))
    cfg = B.GridConfig(flags=["breastmnist"], ipcs=[2], methods=["random", "mtt", "ptm"], seeds=[0, 1],
                       runs=str(tmp_path / "runs"), results=str(tmp_path / "results.csv"),
                       device="cpu", progress=False, workers=2)
    return cfg, log, fail


def test_workers_run_experts_first_and_controls_after_their_method(threaded_grid):
    cfg, log, _ = threaded_grid
    table = B.run_grid(cfg)
    assert log[0] == ("experts", "breastmnist") and sum(e == "experts" for e, _ in log) == 1
    for cell in cfg.cells():
        if "@" in cell[2]:
            method = (cell[0], cell[1], cell[2].split("@")[1], cell[3])
            assert log.index(("end", method)) < log.index(("start", cell)), cell
    # every cell once; the CSV in the same order as the inline grid writes it
    assert sorted(c for e, c in log if e == "start") == sorted(cfg.cells())
    inline = B.upsert_results([_fake_row(cfg, *c) for c in cfg.cells()], Path(cfg.results).with_name("i.csv"))
    assert table[B.KEY].astype(str).values.tolist() == inline[B.KEY].astype(str).values.tolist()


def test_no_more_cells_are_handed_out_than_worker_slots(threaded_grid, monkeypatch):
    """A Dask worker given a cell behind a long one would hold it while another idles."""
    cfg, log, _ = threaded_grid
    outstanding, most = set(), [0]

    class Counting(cf.ThreadPoolExecutor):
        def submit(self, fn, *args):
            fut = super().submit(fn, *args)
            outstanding.add(fut)
            most[0] = max(most[0], sum(not f.done() for f in outstanding))
            return fut

    @contextlib.contextmanager
    def pool(workers, pending, threads, scheduler, client):
        with Counting(8) as ex:
            yield Placement(ex, "processes", 2, 1)

    monkeypatch.setattr(B, "open_executor", pool)
    B.run_grid(cfg)
    assert most[0] == 2 and len(B.read_results(cfg.results)) == len(cfg.cells())
    # handed out in grid order (controls once their method is done)
    starts = [c for e, c in log if e == "start" and "@" not in c[2]]
    assert starts == [c for c in cfg.cells() if "@" not in c[2]]


def test_a_failed_cell_stops_new_cells_keeps_finished_rows_and_skips_its_controls(threaded_grid):
    cfg, log, fail = threaded_grid
    cfg.seeds = [0]
    fail[("breastmnist", 2, "mtt", 0)] = True
    with pytest.raises(RuntimeError, match="failed") as err:
        B.run_grid(cfg)
    assert any("finished cells are in" in n for n in getattr(err.value, "__notes__", []))
    started = [c for e, c in log if e == "start"]
    assert ("breastmnist", 2, "random@mtt", 0) not in started
    done = B.read_results(cfg.results)
    assert set(done["method"]) <= {"random", "ptm", "random@ptm"} and "random" in set(done["method"])
    # resume: the finished rows are skipped, the failed cell and its control run
    fail.clear()
    log.clear()
    B.run_grid(cfg)
    started = {c for e, c in log if e == "start"}
    assert ("breastmnist", 2, "mtt", 0) in started and ("breastmnist", 2, "random@mtt", 0) in started
    assert ("breastmnist", 2, "random", 0) not in started
    assert len(B.read_results(cfg.results)) == len(cfg.cells())


def test_workers_and_a_scheduler_are_exclusive(tmp_path):
    cfg = B.GridConfig(flags=["breastmnist"], ipcs=[2], methods=["random"], workers=2,
                       scheduler="tcp://127.0.0.1:1", runs=str(tmp_path / "r"),
                       results=str(tmp_path / "r.csv"))
    with pytest.raises(ValueError, match="not both"):
        B.run_grid(cfg)
    assert B._inline(B.GridConfig(workers=0, device="cpu"), None, 10)
    assert B._inline(B.GridConfig(device="cpu"), None, 1)              # one cell: no processes
    assert not B._inline(B.GridConfig(device="cpu"), object(), 10)    # a Dask client


METRIC_COLUMNS = [c for c in B.COLUMNS if c not in ("distill_seconds", "seconds", "artifact")]


@pytest.mark.slow
def test_dask_grid_gives_the_inline_rows(make_fake, patched_info, tmp_path):
    """A real 2-worker Dask cluster on 127.0.0.1 runs random + ptm + random@ptm at the
    smoke preset on a tiny fake file (its experts trained on the cluster first): the same
    rows, metrics and all, as the inline grid."""
    distributed = pytest.importorskip("distributed")
    from mdd.experts import preset_recipe, train_experts
    root = make_fake("breastmnist", n=(24, 8, 8))

    def grid(name, **where):
        return B.GridConfig(flags=["breastmnist"], ipcs=[2], methods=["random", "ptm"], seeds=[0],
                            preset="smoke", root=str(root), runs=str(tmp_path / name / "runs"),
                            results=str(tmp_path / name / "results.csv"), device="cpu",
                            progress=False, threads=1, **where)

    inline = grid("inline", workers=0)
    # the reference's experts in this process (spawned processes would not see the
    # patched INFO); one thread, as each cluster job gets
    recipe, count = preset_recipe("smoke")
    train_experts("breastmnist", B._experts_folder(inline, "breastmnist"), count, recipe,
                  root=str(root), seed=0, device="cpu", progress=False, workers=0, threads=1)
    want = B.run_grid(inline)
    assert want["method"].tolist() == ["random", "ptm", "random@ptm"]
    assert want["acc_mean"].notna().all() and want["alpha"].iloc[1:].notna().all()
    # the distilled row carries its loss log's stability numbers (claim 1 reads them)
    assert want["loss_jumps"].notna().tolist() == [False, True, False]
    assert want["loss_rolling_var"].iloc[1] >= 0

    dask = grid("dask")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        client.run(setattr, mdd.data, "INFO", patched_info)   # the fake file's md5 there too
        got = B.run_grid(dask, client=client)
    pd.testing.assert_frame_equal(got[METRIC_COLUMNS], want[METRIC_COLUMNS])
    experts = [B._experts_folder(c, "breastmnist") for c in (inline, dask)]
    for f in sorted(p.name for p in experts[0].glob("*.safetensors")):
        assert (experts[0] / f).read_bytes() == (experts[1] / f).read_bytes(), f
    assert (Path(dask.runs) / "breastmnist-ipc2-ptm-s0" / "result.json").is_file()


def test_default_scheduler_is_a_local_cluster_when_dask_is_there(monkeypatch):
    cfg = B.GridConfig()
    monkeypatch.setattr(B, "dask_available", lambda: True)
    assert B.default_scheduler(cfg) == "local"
    assert B.default_scheduler(B.GridConfig(workers=2)) is None            # asked for processes
    assert B.default_scheduler(B.GridConfig(scheduler="tcp://h:1")) == "tcp://h:1"
    assert B.default_scheduler(cfg, client=object()) is None               # a client given
    monkeypatch.setattr(B, "dask_available", lambda: False)
    assert B.default_scheduler(cfg) is None                                # processes then


@pytest.mark.slow
@pytest.mark.parametrize("where", [{"workers": 2}, {"scheduler": "local"}],
                         ids=["processes", "local-cluster"])
def test_local_workers_give_the_inline_rows(real_root, tmp_path, where):
    """Two spawned local processes, or a Dask LocalCluster of two one-thread workers (the
    default with Dask), on the real BreastMNIST file: the same rows as the inline grid,
    experts shared."""
    from mdd.experts import preset_recipe, train_experts

    def grid(name, **where):
        return B.GridConfig(flags=["breastmnist"], ipcs=[1], methods=["random", "ptm"], seeds=[0],
                            preset="smoke", root=str(real_root), runs=str(tmp_path / name / "runs"),
                            results=str(tmp_path / name / "results.csv"), device="cpu",
                            progress=False, threads=1, **where)

    inline, procs = grid("inline", workers=0), grid("procs", **where)
    recipe, count = preset_recipe("smoke")
    experts = B._experts_folder(inline, "breastmnist")
    train_experts("breastmnist", experts, count, recipe, root=str(real_root), seed=0, device="cpu",
                  progress=False, workers=0, threads=1)
    shutil.copytree(experts, B._experts_folder(procs, "breastmnist"))
    want = B.run_grid(inline)
    got = B.run_grid(procs)
    assert got["method"].tolist() == ["random", "ptm", "random@ptm"]
    pd.testing.assert_frame_equal(got[METRIC_COLUMNS], want[METRIC_COLUMNS])
