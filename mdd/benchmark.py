"""The benchmark grid (DESIGN.md §3): modalities × ipc × methods × seeds, each cell with
the protocol of §2, written row by row to a results CSV so that an interrupted grid
resumes where it stopped (finished cells are skipped; a distillation in progress
resumes from its checkpoint).

Methods: ``random`` (class-balanced real subset at lr 0.01), the distillation methods
of :mod:`mdd.distill` (``mtt``, ``datm``, ``ptm``, ``ptm+dom``), the control
``random@<method>`` (the same real subset — a distillation's initialization — trained
at that method's learned α, so that a gain over random is not a learning-rate
effect), and ``full`` (the ceiling, epochs chosen on val, :mod:`mdd.ceiling`).

One CSV row per (flag, size, ipc, method, seed), columns :data:`COLUMNS`; the distilled
set behind a row is copied to ``artifacts/`` beside the CSV (:mod:`mdd.records`).

Where cells run (:func:`run_grid`, :mod:`mdd.executors`): in this process one after the
other (``workers=0``), in W local worker processes (``workers=W``), or on a Dask cluster
(``scheduler="tcp://…"`` or a ``client``; ``scheduler="local"`` starts a LocalCluster of
one single-threaded worker per core). Asked for none of these, a grid with more than
one pending cell on a multi-core CPU runs on such a LocalCluster when Dask is installed
(local processes otherwise, :func:`default_scheduler`); one cell, one core or a GPU:
this process.
With workers, each flag's expert set is trained first (with the same executor settings),
a ``random@<m>`` cell is submitted only once its ``<m>`` cell has finished (it reads that
run's ``result.json``), and this process — the CSV's only writer — upserts each row as
its cell finishes, so an interrupted grid resumes as before. Workers must see the same
file system as this process (data root, runs folder, results folder; paths are made
absolute before they are sent).
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from . import baselines, data as mdata, stats, validate
from .ceiling import PRESET_MODELS, PRESET_SEARCH, full_ceiling
from .evaluate import EvalConfig, evaluate_set
from .executors import LOCAL, available_cores, dask_available, job_threads, local_cluster, open_executor
from .io import read_json, remove_partial_writes, write_text
from .locks import file_lock, folder_lock
from .runtime import torch_threads
from .stability import run_log_stats

DISTILL_METHODS = ("mtt", "datm", "ptm", "ptm+dom")
METHODS = ("random",) + DISTILL_METHODS + ("full",)
KEY = ["flag", "size", "ipc", "method", "seed"]
METRICS = ("acc_mean", "acc_std", "bacc_mean", "bacc_std", "auc_mean", "auc_std")
COLUMNS = KEY + list(METRICS) + [
    "models", "epochs", "lr", "alpha", "selected_iteration", "iterations",
    "last_iteration", "last_acc_mean", "last_bacc_mean", "last_auc_mean",
    "val_auc", "val_seeds", "test_seeds", "distill_seconds", "seconds", "artifact", "protocol",
    # the run's matching-loss stability (mdd.stability), so claim 1 needs no run folder
    "loss_jumps", "loss_rolling_var"]


@dataclass
class GridConfig:
    """One benchmark grid. Distillation and evaluation sizes come from ``preset``."""

    flags: list[str] = field(default_factory=lambda: ["breastmnist", "pneumoniamnist"])
    ipcs: list[int] = field(default_factory=lambda: [1, 2, 5, 10])
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    preset: str = "cpu"
    root: str | None = None
    runs: str = "runs/benchmark"          # experts and distillation run folders
    results: str = "results/benchmark.csv"
    records: str | None = None            # artifacts of record; None: artifacts/ beside results
    controls: bool = True                 # random@<method> beside every distilled cell
    device: str = "auto"
    progress: bool = True
    # where cells run (mdd.executors.open_executor): None one local process per core (at
    # most the pending cells; this process for one cell or on a GPU), 0 this process (one
    # cell after the other), W processes; ``scheduler`` "tcp://host:port": a Dask cluster
    workers: int | None = None
    scheduler: str | None = None
    # torch threads per cell: a worker job's (None: cores // workers, mdd.executors) and
    # the expert training's; in this process (workers=0) None leaves torch's setting
    threads: int | None = None

    def cells(self) -> list[tuple[str, int | None, str, int]]:
        """(flag, ipc, method, seed) in run order: ``full`` once per flag first (ipc None,
        seed 0), then ipc by ipc in the given order, every flag at each; ``random@m``
        right after ``m`` when ``random`` is in the grid too."""
        unknown = set(self.methods) - set(METHODS)
        if unknown:
            raise ValueError(f"unknown methods {sorted(unknown)}; choose from {', '.join(METHODS)}")
        # the ceilings are the longest cells and depend on nothing: started first, they
        # cannot be the grid's tail with one worker idle; ipc-major order gives both
        # datasets' first ipc (the claims' cells, when listed first) before the rest
        out = [(flag, None, "full", 0) for flag in self.flags if "full" in self.methods]
        for ipc in self.ipcs:
            for flag in self.flags:
                for seed in self.seeds:
                    for m in self.methods:
                        if m == "full":
                            continue
                        out.append((flag, ipc, m, seed))
                        if self.controls and m in DISTILL_METHODS and "random" in self.methods:
                            out.append((flag, ipc, f"random@{m}", seed))
        return out


def _eval_config(preset: str, seed: int, device: str) -> EvalConfig:
    from .distill_config import PRESETS
    p = PRESETS[preset]
    # the preset's threads (cpu: 1) suit a few images
    return EvalConfig(models=p["test_models"], epochs=p["test_epochs"], seed=seed, device=device,
                      threads=p.get("threads"))


# ---------------------------------------------------------------- the results CSV
def read_results(path: str | Path) -> pd.DataFrame:
    """The grid's CSV as a DataFrame (columns :data:`COLUMNS`; ipc empty for full)."""
    df = pd.read_csv(path)
    for c in COLUMNS:
        if c not in df.columns:
            df[c] = None
    df["ipc"] = pd.to_numeric(df["ipc"], errors="coerce").astype("Int64")
    df["seed"] = pd.to_numeric(df["seed"], errors="coerce").fillna(0).astype(int)
    return df[COLUMNS]


def upsert_results(rows: list[dict], path: str | Path) -> pd.DataFrame:
    """Add rows (replacing those with the same :data:`KEY`), atomically."""
    path = Path(path)
    new = pd.DataFrame(rows)
    for c in COLUMNS:
        if c not in new.columns:
            new[c] = None
    new = new[COLUMNS]
    old = read_results(path) if path.is_file() else new.iloc[:0]
    both = pd.concat([new, old], ignore_index=True) if not old.empty else new
    both["ipc"] = pd.to_numeric(both["ipc"], errors="coerce").astype("Int64")
    both = both.drop_duplicates(KEY, keep="first")
    order = {m: i for i, m in enumerate(METHODS)}
    # random@m right after m
    rank = lambda m: (order.get(m.split("@")[-1], 99), "@" in m, m)   # noqa: E731
    both = (both.assign(_r=both["method"].map(rank))
            .sort_values(["flag", "size", "ipc", "_r", "seed"]).drop(columns="_r"))
    write_text(path, both.to_csv(index=False))
    return both.reset_index(drop=True)


def _done(results: Path, preset: str | None = None) -> set[tuple]:
    """The cells already in ``results``. With ``preset``: refused (ValueError) when a
    distilled row there ran another number of iterations than the preset's, or any row
    was evaluated with other test networks or epochs — a resized preset must not find
    an old grid's rows "done" (move them aside, or give another ``--results``)."""
    if not results.is_file():
        return set()
    df = read_results(results)
    if preset is not None:
        _check_preset(df, preset, results)
    return {(r.flag, None if pd.isna(r.ipc) else int(r.ipc), r.method, int(r.seed))
            for r in df.itertuples()}


def _check_preset(df: pd.DataFrame, preset: str, results: Path) -> None:
    from .distill_config import PRESETS
    p = PRESETS[preset]
    distilled = df["method"].isin(DISTILL_METHODS)
    evaluated = df["method"] != "full"    # the ceiling's epochs are its own val search's
    want = [("iterations", distilled, p["iterations"]), ("models", evaluated, p["test_models"]),
            ("epochs", evaluated, p["test_epochs"])]
    for col, rows, value in want:
        if col not in df.columns:
            continue
        have = pd.to_numeric(df.loc[rows, col], errors="coerce").dropna()
        other = sorted({int(v) for v in have if int(v) != value})
        if other:
            raise ValueError(f"{results} holds {int((have != value).sum())} rows with {col} "
                             f"{', '.join(map(str, other))}, the {preset} preset has {value}: "
                             "move them aside or give another --results")


# ---------------------------------------------------------------- cells
def _row(flag: str, size: int, ipc: int | None, method: str, seed: int, res: dict) -> dict:
    last = res.get("last") or {}
    return {"flag": flag, "size": size, "ipc": ipc, "method": method, "seed": seed,
            **{k: res.get(k) for k in METRICS},
            "models": res.get("models"), "epochs": res.get("epochs"), "lr": res.get("lr"),
            "alpha": res.get("alpha"), "selected_iteration": res.get("selected_iteration"),
            "iterations": res.get("iterations"), "last_iteration": last.get("iteration"),
            **{f"last_{k}": last.get(k) for k in ("acc_mean", "bacc_mean", "auc_mean")},
            "val_auc": res.get("val_auc"),
            "val_seeds": json.dumps(res.get("selection", {}).get("seeds", [])),
            "test_seeds": json.dumps(res.get("test_seeds", [])),
            "distill_seconds": res.get("distill_seconds"), "seconds": res.get("seconds"),
            "artifact": res.get("artifact"), "protocol": 2,
            "loss_jumps": res.get("loss_jumps"), "loss_rolling_var": res.get("loss_rolling_var")}


def _run_folder(cfg: GridConfig, flag: str, ipc: int, method: str, seed: int) -> Path:
    return Path(cfg.runs) / f"{flag}-ipc{ipc}-{method}-s{seed}"


def _experts_folder(cfg: GridConfig, flag: str) -> Path:
    return Path(cfg.runs) / "experts" / f"{flag}-{cfg.preset}"


def _train_experts(cfg: GridConfig, flag: str, **where: Any) -> Path:
    """The flag's expert set (trained, or resumed, now); ``where``: train_experts's
    workers/threads/scheduler/client (none given: its defaults, as the inline grid)."""
    from .experts import preset_recipe, train_experts
    experts = _experts_folder(cfg, flag)
    recipe, count = preset_recipe(cfg.preset)
    # one expert set per flag (seed 0): the distillation seed varies the init and draws
    train_experts(flag, experts, count, recipe, root=cfg.root, seed=0, device=cfg.device,
                  progress=cfg.progress, **where)
    return experts


def _distill_run(cfg: GridConfig, flag: str, ipc: int, method: str, seed: int,
                 experts_ready: bool = False) -> dict:
    from .distill import DistillConfig, distill
    # a worker job finds the set trained by the driver: concurrent cells of one flag
    # must not each take the experts folder's lock (the second would be refused)
    experts = _experts_folder(cfg, flag) if experts_ready else _train_experts(cfg, flag)
    return distill(DistillConfig(flag=flag, ipc=ipc, method=method, preset=cfg.preset,
                                 experts=str(experts), seed=seed, root=cfg.root,
                                 device=cfg.device, progress=cfg.progress,
                                 out=str(_run_folder(cfg, flag, ipc, method, seed))))


def run_cell(cfg: GridConfig, flag: str, ipc: int | None, method: str, seed: int = 0,
             experts_ready: bool = False) -> dict:
    """Run one cell and return its results row (:data:`COLUMNS`). ``experts_ready``: the
    flag's expert set is complete already (a worker job; not trained or locked here)."""
    data = mdata.load(flag, root=cfg.root)
    ec = _eval_config(cfg.preset, seed, cfg.device)
    if method == "full":
        ec.threads, ec.models = None, PRESET_MODELS[cfg.preset]
        # its evaluations are kept beside the runs: a ceiling cut by a stop resumes
        res = full_ceiling(data, ec, PRESET_SEARCH[cfg.preset], progress=cfg.progress,
                           cache=Path(cfg.runs) / f"full-{flag}")
    elif method == "random" or method.startswith("random@"):
        x, y, _ = baselines.random_subset(data, ipc, seed=seed)
        lr = None
        if "@" in method:   # the same subset, at the learned α of that method's run
            lr = float(read_json(_run_folder(cfg, flag, ipc, method.split("@", 1)[1], seed)
                                 / "result.json")["alpha"])
        res = {**evaluate_set(x, y, data, ec, lr=lr, progress=cfg.progress), "alpha": lr}
    else:
        res = dict(_distill_run(cfg, flag, ipc, method, seed, experts_ready))
        st = run_log_stats(_run_folder(cfg, flag, ipc, method, seed)) or {}
        res["loss_jumps"], res["loss_rolling_var"] = st.get("jumps"), st.get("rolling_var_mean")
        from .records import save_record
        records = cfg.records or str(Path(cfg.results).parent / "artifacts")
        res["artifact"] = save_record(res["artifact"], flag, ipc, method, seed, root=records)
    return _row(flag, data.size, ipc, method, seed, res)


def run_grid(cfg: GridConfig, client: Any = None) -> pd.DataFrame:
    """Run every cell not yet in ``cfg.results``; return the whole results table.

    ``cfg.workers``/``cfg.scheduler``/``client`` (a ``dask.distributed.Client``, left
    open) choose where cells run (module doc). Rows are upserted as cells finish, in
    finishing order (the CSV is sorted on every write, so its order does not depend on
    it). On a failed cell no new cell starts, the running ones finish and are recorded,
    and the first error is raised.
    """
    validate.grid_config(cfg)   # flags first, then ipcs, methods, seeds, preset, paths
    validate.check_values({"workers": cfg.workers, "threads": cfg.threads},
                          validate.CLI["experts"], skip_none=True)
    if cfg.workers is not None and (cfg.scheduler is not None or client is not None):
        raise ValueError("give workers or a Dask scheduler/client, not both")
    results = Path(cfg.results)
    # one grid writes these results and runs at a time (a second is refused, mdd.locks)
    with file_lock(results, "mdd benchmark"), folder_lock(cfg.runs, "mdd benchmark"):
        remove_partial_writes(results.parent, of=results.name)
        done = _done(results, cfg.preset)
        todo = [c for c in cfg.cells() if c not in done]
        if _inline(cfg, client, len(todo)):
            # today's path, unchanged: one cell after the other in this process
            with torch_threads(cfg.threads):
                for flag, ipc, method, seed in tqdm(todo, desc="benchmark", disable=not cfg.progress):
                    upsert_results([run_cell(cfg, flag, ipc, method, seed)], results)
        else:
            _run_parallel(cfg, todo, results, client)
    return read_results(results) if results.is_file() else pd.DataFrame(columns=COLUMNS)


def _inline(cfg: GridConfig, client: Any, pending: int) -> bool:
    """Whether the grid runs in this process: workers=0, or workers=None when
    :func:`mdd.executors.open_executor` would not start processes (one pending cell or
    one core) or the device is a GPU (processes would only queue on it)."""
    if client is not None or cfg.scheduler is not None:
        return False
    if cfg.workers is not None:
        return cfg.workers == 0
    from .evaluate import resolve_device
    return min(available_cores(), pending) <= 1 or resolve_device(cfg.device).type == "cuda"


@dataclass
class CellJob:
    """One cell for a worker: plain values, so it pickles (``cfg`` has absolute paths)."""

    cfg: GridConfig
    cell: tuple
    threads: int | None = None
    host_slots: dict[str, int] = field(default_factory=dict)


def run_cell_job(job: CellJob) -> dict:
    """Run ``job.cell`` where this runs (a worker) with its share of torch threads; the
    results row comes back to the driver, which writes the CSV."""
    with torch_threads(job_threads(job.threads, job.host_slots)):
        return run_cell(job.cfg, *job.cell, experts_ready=True)


def _for_workers(cfg: GridConfig) -> GridConfig:
    """``cfg`` as sent to workers: absolute paths (a worker may start in another folder,
    and ``root`` None means this process's $MDD_DATA), no progress bars."""
    from .notebooks import resolve_path
    records = cfg.records or str(Path(cfg.results).parent / "artifacts")
    return dataclasses.replace(
        cfg, root=str(mdata.resolve_root(cfg.root).resolve()), runs=str(Path(cfg.runs).resolve()),
        results=str(Path(cfg.results).resolve()),
        # where save_record would put them from here (it reads a relative one from the
        # project root, mdd.records)
        records=str(resolve_path(records)), progress=False)


def default_scheduler(cfg: GridConfig, client: Any = None) -> str | None:
    """Where a grid that runs off this process goes when nothing was asked: a Dask
    LocalCluster of one single-threaded worker per core (``"local"``) when Dask is
    installed, else local processes (None)."""
    if cfg.workers is not None or cfg.scheduler is not None or client is not None:
        return cfg.scheduler
    return LOCAL if dask_available() else None


def _run_parallel(cfg: GridConfig, todo: list[tuple], results: Path, client: Any) -> None:
    """Run ``todo`` off this process: one LocalCluster (the default, or ``--scheduler
    local``) serves the experts and the cells."""
    with local_cluster(default_scheduler(cfg, client), client) as (scheduler, client):
        _run_on(dataclasses.replace(cfg, scheduler=scheduler), todo, results, client)


def _run_on(cfg: GridConfig, todo: list[tuple], results: Path, client: Any) -> None:
    """Run ``todo`` on an executor: experts first, then every cell whose dependency (a
    ``random@m`` cell's ``m`` cell, when it is pending too) has finished."""
    wcfg = _for_workers(cfg)
    where = dict(workers=cfg.workers, threads=cfg.threads, scheduler=cfg.scheduler, client=client)
    # 1. every expert set the pending distillations read, each trained across the workers
    for flag in dict.fromkeys(f for f, _, m, _ in todo if m in DISTILL_METHODS):
        _train_experts(dataclasses.replace(wcfg, progress=cfg.progress), flag, **where)
    # 2. the cells; random@m waits for m's result.json
    pending = set(todo)
    after = {c: (c[0], c[1], c[2].split("@", 1)[1], c[3]) for c in todo if c[2].startswith("random@")}
    waiting = [c for c in todo if after.get(c) not in pending]     # ready now, in grid order
    blocked = [c for c in todo if after.get(c) in pending]
    running: dict[cf.Future, tuple] = {}
    failure: tuple[tuple, BaseException] | None = None
    with open_executor(cfg.workers, len(todo), cfg.threads, cfg.scheduler, client) as place:
        bar = tqdm(total=len(todo), desc=f"benchmark ({place.describe()})", disable=not cfg.progress)
        with bar:
            while waiting or running:
                # no more cells handed out than there are worker slots: a Dask worker
                # given a second cell behind a long one (a ceiling) would hold it back
                # while another worker is free, and the grid would lose its order
                while waiting and failure is None and len(running) < max(1, place.workers):
                    cell = waiting.pop(0)
                    job = CellJob(wcfg, cell, place.threads, place.host_slots)
                    running[place.executor.submit(run_cell_job, job)] = cell
                if not running:
                    break
                finished, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                for fut in finished:
                    cell = running.pop(fut)
                    pending.discard(cell)
                    if fut.cancelled():
                        continue
                    if fut.exception() is not None:
                        failure = failure or (cell, fut.exception())
                        waiting.clear()
                        for other in running:
                            other.cancel()   # queued ones stop; running ones finish, are kept
                        continue
                    upsert_results([fut.result()], results)
                    bar.update()
                    # its controls can run now (the method's result.json exists)
                    ready = [c for c in blocked if after[c] == cell]
                    blocked = [c for c in blocked if after[c] != cell]
                    if failure is None:   # first: they precede every waiting cell in grid order
                        waiting[:0] = ready
    if failure is not None:
        cell, err = failure
        if hasattr(err, "add_note"):
            err.add_note(f"while running benchmark cell {cell}; finished cells are in {results}")
        raise err


# ---------------------------------------------------------------- tables
def _pct(s: dict) -> str:
    return "n/a" if s["mean"] is None else f"{100 * s['mean']:.1f} ± {100 * s['std']:.1f}"


def seed_table(results: pd.DataFrame) -> pd.DataFrame:
    """One row per flag × ipc × method: ACC, balanced ACC (%) and AUC as mean ± std over
    seeds (each seed the mean of its K test networks), the number of seeds, the last
    iterate's ACC, the mean learned α, and ΔACC: the paired difference over seeds
    against ``random`` at the same ipc, in points with its 95 % bootstrap CI."""
    results = results.copy()
    for c in COLUMNS:   # a results table of protocol v1 (one seed, no bacc) reads too
        if c not in results.columns:
            results[c] = 0 if c == "seed" else None
    rows = []
    for (flag, ipc, method), g in results.groupby(["flag", "ipc", "method"], dropna=False, sort=False):
        acc, bacc, auc = (stats.summarize(g[m].tolist()) for m in ("acc_mean", "bacc_mean", "auc_mean"))
        last = stats.summarize(pd.to_numeric(g["last_acc_mean"], errors="coerce").dropna().tolist())
        rand = results[(results.flag == flag) & (results.ipc == ipc) & (results.method == "random")]
        delta = None
        if method != "random" and len(rand):
            d = stats.paired_difference(dict(zip(g.seed, g.acc_mean)), dict(zip(rand.seed, rand.acc_mean)))
            delta = stats.fmt_ci(d)
        alpha = pd.to_numeric(g["alpha"], errors="coerce").dropna()
        rows.append({"flag": flag, "ipc": "all" if pd.isna(ipc) else int(ipc), "method": method,
                     "seeds": acc["n"], "ACC %": _pct(acc), "bACC %": _pct(bacc),
                     "AUC": "n/a" if auc["mean"] is None else f"{auc['mean']:.3f} ± {auc['std']:.3f}",
                     "last ACC %": _pct(last) if last["n"] else "",
                     "α": f"{alpha.mean():.2e}" if len(alpha) else "",
                     "ΔACC vs random (pts, 95 % CI)": delta or ""})
    return pd.DataFrame(rows)


def paired_table(results: pd.DataFrame, a: str, b: str, metrics=("acc_mean", "bacc_mean", "auc_mean")) -> pd.DataFrame:
    """``a − b`` per flag × ipc, paired over seeds, for each metric (points for ACC and
    balanced ACC, AUC × 100), with bootstrap and t 95 % CIs."""
    rows = []
    for (flag, ipc), g in results.groupby(["flag", "ipc"], dropna=True, sort=False):
        ga, gb = g[g.method == a], g[g.method == b]
        if ga.empty or gb.empty:
            continue
        row = {"flag": flag, "ipc": int(ipc), "comparison": f"{a} − {b}"}
        for m in metrics:
            d = stats.paired_difference(dict(zip(ga.seed, ga[m])), dict(zip(gb.seed, gb[m])))
            name = {"acc_mean": "ΔACC", "bacc_mean": "ΔbACC", "auc_mean": "ΔAUC×100"}[m]
            row[f"{name} [bootstrap CI]"] = stats.fmt_ci(d)
            row[f"{name} t CI"] = "" if d["t_low"] is None else \
                f"[{100 * d['t_low']:+.1f}, {100 * d['t_high']:+.1f}]"
            row["seeds"] = d["n"]
        rows.append(row)
    return pd.DataFrame(rows)


def cell_means(results: pd.DataFrame) -> pd.DataFrame:
    """One row per flag × ipc × method with ``<metric>_mean``/``_std`` taken over seeds
    (each seed the mean of its test networks) and ``seeds``: the shape the plots of
    :mod:`mdd.benchmark_viz` draws (``benchmark_bars``, ``benchmark_lines``)."""
    out = []
    for (flag, ipc, method), g in results.groupby(["flag", "ipc", "method"], dropna=False, sort=False):
        row = {"flag": flag, "ipc": ipc, "method": method, "seeds": len(g)}
        for m in ("acc", "bacc", "auc"):
            s = stats.summarize(pd.to_numeric(g[f"{m}_mean"], errors="coerce").tolist())
            row[f"{m}_mean"], row[f"{m}_std"] = s["mean"], s["std"]
        out.append(row)
    df = pd.DataFrame(out)
    if not df.empty:
        df["ipc"] = pd.to_numeric(df["ipc"], errors="coerce").astype("Int64")
    return df


def glance_table(results: pd.DataFrame, metric: str = "acc_mean") -> pd.DataFrame:
    """The grid at a glance: one row per flag × ipc, one column per method (the
    random@ controls left out), each cell ``mean ± std`` over seeds of ``metric`` (ACC
    and balanced ACC in %, AUC as is) with the seed count where it is under 3; the
    full-data ceiling in a last column. Shape: (flags × ipcs, 2 + methods + 1)."""
    scale, d = (1.0, 3) if metric == "auc_mean" else (100.0, 1)
    results = results[~results.method.astype(str).str.startswith("random@")]
    methods = [m for m in METHODS if m != "full" and m in set(results.method)]
    full = {f: g[metric].mean() for f, g in results[results.method == "full"].groupby("flag")}
    rows = []
    for (flag, ipc), g in results[results.method != "full"].groupby(["flag", "ipc"], sort=True):
        row = {"flag": flag, "ipc": int(ipc)}
        for m in methods:
            s = stats.summarize(g.loc[g.method == m, metric].tolist())
            if not s["n"]:
                row[m] = ""
                continue
            row[m] = f"{scale * s['mean']:.{d}f}" + (f" ± {scale * s['std']:.{d}f}" if s["n"] > 1 else "") \
                + ("" if s["n"] >= 3 else f" (n = {s['n']})")
        row["full"] = f"{scale * full[flag]:.{d}f}" if flag in full else ""
        rows.append(row)
    return pd.DataFrame(rows)


#: The comparisons a report shows: (a, b) → a − b paired over seeds.
PAIRS = (("ptm+dom", "mtt"), ("ptm+dom", "datm"), ("ptm", "mtt"), ("ptm+dom", "ptm"),
         ("mtt", "random@mtt"), ("ptm+dom", "random@ptm+dom"))


def report_markdown(results: pd.DataFrame, pairs=PAIRS) -> str:
    """The grid as Markdown: the seed table, then every paired comparison present."""
    from .viz import markdown_table
    parts = ["Test ACC % at a glance: mean ± std over distillation seeds (n where fewer than "
             "3); full: the full-data ceiling.", "", markdown_table(glance_table(results)), "",
             "Per cell: mean ± std over distillation seeds of each seed's K-network test mean "
             "(protocol v2, DESIGN.md §2).", "", markdown_table(seed_table(results)), ""]
    tables = [paired_table(results, a, b) for a, b in pairs]
    tables = [t for t in tables if not t.empty]
    if tables:
        parts += ["Paired differences over seeds (a − b; points; bootstrap 95 % CI in brackets, "
                  "Student-t 95 % CI beside it):", "",
                  markdown_table(pd.concat(tables, ignore_index=True)), ""]
    return "\n".join(parts)


def _cli(args: argparse.Namespace) -> list[dict] | None:
    if getattr(args, "claims", False):
        # runs nothing: the verdicts, from the CSV (and the run folders' logs if present)
        from .claims_report import write_claims
        md = write_claims(args.results, Path(args.results).with_name("claims.md"), runs=args.runs,
                          expected=[(f, i) for f in args.flags for i in args.ipcs])
        print(md)
        return None
    if args.report:
        results = read_results(args.results)
        md = report_markdown(results)
        write_text(Path(args.results).with_suffix(".md"), md)
        print(md)
        return None
    cfg = GridConfig(flags=args.flags, ipcs=args.ipcs, methods=args.methods, seeds=args.seeds,
                     preset=args.preset, root=args.root, runs=args.runs, results=args.results,
                     device=args.device, controls=not args.no_controls,
                     workers=getattr(args, "workers", None), scheduler=getattr(args, "scheduler", None),
                     threads=getattr(args, "threads", None))
    return seed_table(run_grid(cfg)).to_dict("records")
