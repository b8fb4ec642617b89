"""Figures of how the distillation engine behaves inside a run (notebooks 02 and 03):
does the optimisation keep moving the images (engine v2) or freeze them after a
transient (the first engine), and do the images DOM re-seeds stay apart from the rest
of their class?

Inputs are run folders written by :func:`mdd.distill.distill` (read through
:mod:`mdd.run_folder`), so tests use small hand-made folders. Figures follow
:mod:`mdd.viz`: every function returns a matplotlib Figure, already closed in pyplot;
save it with :func:`mdd.viz.publish`.

* :func:`load_engine_logs` / :func:`dynamics_figure`: per-iteration image movement
  ``dx_rms`` (the RMS per-pixel change of the synthetic set in one iteration, in σ
  units: images are normalized), its running sum over the main iterations (the path
  length the images travelled) and the step size α, one line per labelled run.
* :func:`dom_distinctness` / :func:`distinctness_figure`: for every image a DOM check
  re-seeded, its largest within-class cosine to the other synthetic images of its class
  just before the check, right after it and at every later snapshot, against the
  threshold τ of the same space.
* :func:`run_tau`, :func:`tau_text`, :func:`overlap_tau_figure`: a run's DOM threshold,
  a single float (the fixed rule) or one τ per class (the data-relative rule, DOM v2).
* :func:`ablation_runs`: the engine-v2 ablation runs of record
  (``runs/ablations/engine_v2_<phase>/<flag>-ipc<ipc>-<variant>-s<seed>``) that exist.
"""
from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from . import run_viz, viz

#: One colour per engine variant (the ablation's names), the same in every figure.
VARIANT_COLORS = {"v2": "tab:green", "v1": "tab:red", "v1-optimiser": "tab:orange",
                  "epoch-unit": "tab:purple", "compose-aug": "tab:brown", "dom-v1": "tab:pink"}

#: Phase of the engine-v2 ablation that holds (flag, ipc) (benchmarks/ablation_engine_v2.py).
ABLATION_PHASES = {("breastmnist", 2): "breast2", ("pneumoniamnist", 2): "pneu2",
                   ("breastmnist", 10): "ipc10", ("pneumoniamnist", 10): "ipc10"}

#: Columns of :func:`dom_distinctness`.
DISTINCT_COLUMNS = ("event_iteration", "index", "label", "real_index", "when", "iteration",
                    "since", "max_cosine", "nearest", "tau", "above", "space", "position")

_NUMERIC = ("iteration", "main_iteration", "loss", "alpha", "grad_norm", "grad_alpha", "dx_rms",
            "lr_images", "overlap_ratio", "mean_similarity", "replaced", "stage", "target", "start")


def label_color(label: str, k: int = 0) -> str:
    """The colour of a run label: a variant's (:data:`VARIANT_COLORS`), a method's
    (:data:`mdd.viz.METHOD_COLORS`), else the k-th of the default cycle."""
    return VARIANT_COLORS.get(label) or viz.METHOD_COLORS.get(label) or f"C{k % 10}"


# ====================================================================== runs
def ablation_runs(flag: str, ipc: int, seed: int = 0,
                  variants: Sequence[str] = ("v2", "v1", "v1-optimiser"),
                  root: str | os.PathLike = "runs/ablations") -> dict[str, Path]:
    """{variant: run folder} of the engine-v2 ablation runs of record for ``flag`` at
    ``ipc`` and ``seed`` that exist and have logged at least one iteration, in the order
    of ``variants``; {} when the ablation has no phase for (flag, ipc). ``root``:
    relative paths start at the project root."""
    from .notebooks import resolve_path
    phase = ABLATION_PHASES.get((flag, int(ipc)))
    if phase is None:
        return {}
    folder = resolve_path(root) / f"engine_v2_{phase}"
    out = {}
    for v in variants:
        run = folder / f"{flag}-ipc{int(ipc)}-{v}-s{int(seed)}"
        log = run / "log.jsonl"
        if log.is_file() and log.stat().st_size > 0:
            out[v] = run
    return out


def _numeric(log: pd.DataFrame) -> pd.DataFrame:
    for c in _NUMERIC:
        if c in log:
            log[c] = pd.to_numeric(log[c], errors="coerce").astype(float)
    return log


def load_engine_logs(runs: Mapping[str, str | os.PathLike]) -> pd.DataFrame:
    """The per-iteration logs of ``runs`` ({label: run folder}) as one long table:
    label, run, the log's columns (:data:`mdd.distill_config.LOG_FIELDS`, numbers as
    floats) and ``cum_dx``, the running sum of ``dx_rms`` over the main iterations (how
    far, in σ units, the images have travelled; retraining iterations after a DOM
    re-seed move only the re-seeded images and add nothing to it). Logs from before
    ``phase``/``main_iteration``/``dx_rms`` were logged get "main", the count of main
    iterations, and NaN."""
    from .distill_config import LOG_FIELDS
    from .run_folder import read_log
    parts = []
    for label, run in runs.items():
        log = _numeric(read_log(run))
        if log.empty:
            continue
        log = log.sort_values("iteration").reset_index(drop=True)
        log["phase"] = log["phase"].astype(object).where(log["phase"].notna(), "main")
        main = (log["phase"] == "main").to_numpy()
        if log["main_iteration"].isna().all():
            log["main_iteration"] = np.cumsum(main).astype(float)
        dx = log["dx_rms"].to_numpy(dtype=float)
        if np.isfinite(dx).any():
            log["cum_dx"] = np.cumsum(np.where(main & np.isfinite(dx), dx, 0.0))
        else:
            log["cum_dx"] = np.nan
        log.insert(0, "run", str(run))
        log.insert(0, "label", str(label))
        parts.append(log)
    if not parts:
        return pd.DataFrame(columns=["label", "run", *LOG_FIELDS, "cum_dx"])
    return pd.concat(parts, ignore_index=True)


def _median(v: np.ndarray) -> float:
    v = v[np.isfinite(v)]
    return float(np.median(v)) if len(v) else math.nan


def movement_summary(logs: pd.DataFrame) -> pd.DataFrame:
    """One row per label of :func:`load_engine_logs`: main and retraining iterations,
    total image movement (``cum_dx`` at the end), the share of it in the second half of
    the main iterations, the median ``dx_rms`` of the first and of the last tenth of the
    main iterations, and α at the first and the last iteration."""
    rows = []
    for label, log in logs.groupby("label", sort=False):
        main = log[log["phase"] == "main"]
        n = len(main)
        dx = main["dx_rms"].to_numpy(dtype=float)
        total = float(main["cum_dx"].iloc[-1]) if n else math.nan
        half = float(np.nansum(dx[n // 2:])) if n else math.nan
        tenth = max(1, n // 10)
        rows.append({"label": label, "main_iterations": n,
                     "retrain_iterations": int((log["phase"] == "retrain").sum()),
                     "movement": total,
                     "second_half_share": half / total if total and np.isfinite(total) else math.nan,
                     "dx_first_tenth": _median(dx[:tenth]), "dx_last_tenth": _median(dx[-tenth:]),
                     "alpha_first": float(log["alpha"].iloc[0]),
                     "alpha_last": float(log["alpha"].iloc[-1])})
    return pd.DataFrame(rows)


# ====================================================================== dynamics
def _positive(values: pd.Series) -> np.ndarray:
    v = values.to_numpy(dtype=float)
    return np.where(np.isfinite(v) & (v > 0), v, np.nan)


def dynamics_figure(logs: pd.DataFrame, title: str = "") -> Figure:
    """Does the optimisation keep learning? Three panels over the iterations of each
    run of :func:`load_engine_logs` (one colour per label):

    1. ‖Δx‖: the RMS per-pixel change of the synthetic images in each iteration (σ
       units, log scale; iterations that did not move them are left out);
    2. the cumulative movement ``cum_dx`` (the legend gives the total and the share
       of it made in the second half of the main iterations: near 0 when the images
       froze after a transient, about half when they keep learning);
    3. the learned step size α (log scale).

    Retraining iterations (DOM's, after a re-seed; they move only the re-seeded images)
    are marked with ×; iterations whose DOM check re-seeded images with a dotted line.
    """
    fig, axes = viz.new_figure(3, 1, figsize=(8.5, 8.0), sharex=True,
                               gridspec_kw={"height_ratios": [3, 2.2, 2]})
    dx_ax, cum_ax, a_ax = axes[:, 0]
    if logs.empty:
        for ax in axes[:, 0]:
            ax.axis("off")
        viz.empty_note(dx_ax, "no logged iterations to plot")
        return fig
    summary = movement_summary(logs).set_index("label")
    for k, (label, log) in enumerate(logs.groupby("label", sort=False)):
        c = label_color(label, k)
        log = log.sort_values("iteration")
        it = log["iteration"].to_numpy(dtype=float)
        re = (log["phase"] == "retrain").to_numpy()
        dx = _positive(log["dx_rms"])
        main_dx = np.where(re, np.nan, dx)
        dx_ax.plot(it, main_dx, "-", color=c, lw=1, label=label)
        if re.any():
            dx_ax.plot(it[re], dx[re], "x", color=c, ms=4, mew=1)
            a_ax.plot(it[re], log["alpha"].to_numpy(dtype=float)[re], "x", color=c, ms=4, mew=1)
            cum_ax.plot(it[re], log["cum_dx"].to_numpy(dtype=float)[re], "x", color=c, ms=4,
                        mew=1)
        s = summary.loc[label]
        note = (f"{label}: Σ {s['movement']:.3g}σ, {s['second_half_share']:.0%} in 2nd half"
                if np.isfinite(s["movement"]) else f"{label}: no dx_rms logged")
        cum_ax.plot(it, log["cum_dx"].to_numpy(dtype=float), "-", color=c, lw=1.4, label=note)
        a_ax.plot(it, log["alpha"].to_numpy(dtype=float), "-", color=c, lw=1.2, label=label)
        for r in log.loc[log["replaced"].fillna(0) > 0, "iteration"]:
            for ax in axes[:, 0]:
                ax.axvline(float(r), color=c, lw=0.7, ls=":", alpha=0.7)
    if np.isfinite(_positive(logs["dx_rms"])).any():
        dx_ax.set_yscale("log")
    else:
        viz.empty_note(dx_ax, "no image movement (dx_rms) logged")
    if np.isfinite(_positive(logs["alpha"])).any():
        a_ax.set_yscale("log")
    if logs["phase"].eq("retrain").any():
        dx_ax.plot([], [], "x", color="0.3", label="retraining iteration")
    dx_ax.set(ylabel="‖Δx‖ per iteration\n(RMS per pixel, σ)",
              title=title or "Does the optimisation keep moving the images?")
    cum_ax.set(ylabel="cumulative ‖Δx‖\n(main iterations, σ)")
    a_ax.set(xlabel="iteration (main + retraining)", ylabel="α (student step size)")
    for ax in axes[:, 0]:
        ax.grid(alpha=0.3)
    viz.legend(dx_ax, ncol=2)
    viz.legend(cum_ax, fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


# ====================================================================== τ
def _run_config(run: str | os.PathLike) -> dict:
    from .io import read_json
    path = Path(run) / "config.json"
    return read_json(path) if path.is_file() else {}


def run_tau(run: str | os.PathLike) -> float | dict[int, float] | None:
    """The DOM threshold of a run: {class: τ_c} under the data-relative rule (from its
    first DOM event), a float under the fixed rule; None when a percentile run logged
    no DOM check (its τ was never computed)."""
    from .run_folder import read_dom_events
    for e in read_dom_events(run):
        tau = e.get("tau")
        if isinstance(tau, dict) and tau.get("per_class"):
            return {int(c): float(v["tau"]) for c, v in sorted(tau["per_class"].items(),
                                                             key=lambda kv: int(kv[0]))}
        if isinstance(tau, (int, float)):
            return float(tau)
    cfg = _run_config(run)
    if cfg.get("tau_rule", "fixed") == "fixed" and "tau" in cfg:
        return float(cfg["tau"])
    return None


def tau_mean(tau: float | Mapping[int, float] | None) -> float | None:
    """τ itself, or the mean of the per-class τ_c (None stays None)."""
    if tau is None or isinstance(tau, (int, float)):
        return tau
    return float(np.mean(list(tau.values()))) if tau else None


def tau_text(tau: float | Mapping[int, float] | None,
             class_names: Sequence[str] | None = None) -> str:
    """A short description: ``τ = 0.9``, or ``τ per class: benign 0.586; malignant
    0.549 (mean 0.568)`` (class names may hold commas), or ``τ not computed (no DOM check)``."""
    if tau is None:
        return "τ not computed (no DOM check)"
    if isinstance(tau, (int, float)):
        return f"τ = {float(tau):g}"
    names = [class_names[c] if class_names is not None and c < len(class_names) else str(c)
             for c in tau]
    parts = "; ".join(f"{n} {v:.3f}" for n, v in zip(names, tau.values()))
    return f"τ per class: {parts} (mean {tau_mean(tau):.3f})"


def overlap_tau_figure(logs: pd.DataFrame, events: pd.DataFrame | None = None,
                       tau: float | Mapping[int, float] | None = None, title: str = "",
                       class_names: Sequence[str] | None = None) -> Figure:
    """:func:`mdd.run_viz.overlap_figure` (overlap ratio and mean within-class similarity per
    iteration, DOM checks as markers) with τ drawn on the similarity panel: one dashed
    line for a fixed τ, one per class (dash-dotted, its τ_c) for the data-relative rule."""
    fixed = tau if isinstance(tau, (int, float)) else None
    fig = run_viz.overlap_figure(logs, events, tau=fixed, title=title)
    if isinstance(tau, Mapping) and tau:
        sim_ax = fig.axes[1]
        for k, (c, t) in enumerate(tau.items()):
            name = class_names[c] if class_names is not None and c < len(class_names) else c
            sim_ax.axhline(t, color=f"C{(k + 6) % 10}", lw=0.9, ls="-.", label=f"τ {name} = {t:.3f}")
        viz.legend(sim_ax, fontsize=6, ncol=2)
    return fig


# ====================================================================== distinctness
class _PixelSpace:
    """Pixel space centred by each class's mean real training image; τ_c the same
    percentile of real–real within-class cosines there as DOM v2 uses in features."""

    name = "pixel (centred by the class's real mean)"

    def __init__(self, data, percentile: float, per_class: int = 256, seed: int = 0):
        self.centers, self.taus = {}, {}
        x, y = data.train.x, torch.as_tensor(np.asarray(data.train.y)).reshape(-1)
        gen = torch.Generator().manual_seed(seed)
        for c in range(int(data.num_classes)):
            idx = (y == c).nonzero().flatten()
            if not len(idx):
                continue
            idx = idx[torch.randperm(len(idx), generator=gen)[:per_class]]
            real = torch.as_tensor(np.asarray(x[idx])).reshape(len(idx), -1).double()
            self.centers[c] = real.mean(0)
            if len(idx) >= 2:
                f = torch.nn.functional.normalize(real - self.centers[c], dim=1)
                iu = torch.triu_indices(len(idx), len(idx), offset=1)
                self.taus[c] = float(np.percentile((f @ f.T)[iu[0], iu[1]].numpy(), percentile))
            else:
                self.taus[c] = 1.0

    def position(self, event: dict) -> int | None:
        return None

    def similarities(self, x: np.ndarray, y: np.ndarray, pos) -> dict:
        flat = torch.as_tensor(np.asarray(x)).reshape(len(x), -1).double()
        y = torch.as_tensor(np.asarray(y)).reshape(-1).long()
        out = {}
        for c in y.unique().tolist():
            idx = (y == c).nonzero().flatten()
            f = flat[idx] - self.centers[c] if c in self.centers else flat[idx]
            f = torch.nn.functional.normalize(f, dim=1)
            out[c] = (idx, f @ f.T)
        return out

    def tau(self, pos) -> dict[int, float]:
        return self.taus


class _DomFeatureSpace:
    """The run's own DOM space (:class:`mdd.dom.DomSpace` from its config), at the
    position each DOM event measured in."""

    def __init__(self, cfg, experts, data):
        from .dom import DomSpace
        from .matching import Student
        from .run_setup import TrajectoryCache
        self.cfg = cfg
        student = Student(experts.net(), experts.layout)
        traj = TrajectoryCache(experts, torch.device("cpu"))
        self.dom = DomSpace(cfg, student, traj, experts, data)
        self.name = (f"DOM features ({cfg.dom_space}"
                     f"{', centred by the class real mean' if cfg.dom_center else ''})")

    def position(self, event: dict) -> int:
        pos = event.get("position")
        return int(pos) if pos is not None else self.dom.position(int(event["target"]))

    def similarities(self, x: np.ndarray, y: np.ndarray, pos: int) -> dict:
        return self.dom.similarities(torch.as_tensor(np.asarray(x)).float(),
                                     torch.as_tensor(np.asarray(y)).reshape(-1).long(), pos)

    def tau(self, pos: int) -> dict[int, float]:
        if self.cfg.tau_rule == "percentile":
            return self.dom.reference(pos)[1]
        return {c: float(self.cfg.tau) for c in range(self.dom.data.num_classes)}


def _distill_config(cfg: dict):
    from .distill_config import DistillConfig
    names = {f.name for f in dataclasses.fields(DistillConfig)}
    return DistillConfig(**{k: v for k, v in cfg.items() if k in names})


def _project_path(path: str | None) -> str | None:
    """A run config's relative path (relative to where the run was started: the
    project root for the CLI and the ablations) as an absolute one."""
    from .notebooks import resolve_path
    if path is None or Path(path).is_absolute():
        return path
    return str(resolve_path(path))


def _space(run: str | os.PathLike, space: str, data: Any, experts: Any):
    cfg = _run_config(run)
    if data is None:
        from .data import load
        data = load(cfg["flag"], size=int(cfg.get("size", 28)), root=_project_path(cfg.get("root")))
    if space == "pixel":
        return _PixelSpace(data, float(cfg.get("tau_percentile", 99.0)), seed=int(cfg.get("seed", 0)))
    if space == "dom":
        if experts is None:
            from .experts import ExpertSet
            experts = ExpertSet(_project_path(cfg["experts"]))
        return _DomFeatureSpace(_distill_config(cfg), experts, data)
    raise ValueError(f"space must be 'dom' or 'pixel', got {space!r}")


def _max_other(sims: dict, index: int, label: int) -> tuple[float, int] | None:
    """(largest cosine of set image ``index`` to another image of its class, that one)."""
    if label not in sims:
        return None
    idx, s = sims[label]
    idx = [int(i) for i in torch.as_tensor(idx).flatten().tolist()]
    if index not in idx or len(idx) < 2:
        return None
    j = idx.index(index)
    row = torch.as_tensor(s)[j].double().clone()
    row[j] = -math.inf
    k = int(row.argmax())
    return float(row[k]), idx[k]


def dom_distinctness(run: str | os.PathLike, space: str = "dom", data: Any = None,
                     experts: Any = None) -> pd.DataFrame:
    """Do the images DOM re-seeded stay apart from the rest of their class?

    For every image a DOM check of ``run`` re-seeded (set index ``index`` of class
    ``label``, from train image ``real_index``, at the check after iteration
    ``event_iteration``): its largest cosine to another synthetic image of its class
    (``max_cosine``, with that image's index as ``nearest``) just before the check
    (``when="before"``), right after it (``"re-seed"``; both at ``iteration`` =
    event_iteration + 1, the images' iteration count) and at every later snapshot
    (``"snapshot"``) until the image is re-seeded again; ``since`` counts iterations
    from the re-seed. ``tau`` is the threshold of the same space for the class and
    ``above`` says whether the image is back above it.

    ``space``: ``"dom"``, the run's own DOM feature space (:class:`mdd.dom.DomSpace`
    from its config: for DOM v2 pre-activation features of expert 0 at its last
    position, centred by the class's real mean, τ_c the run's percentile of real–real
    similarity), measured at the position each check used, so ``tau`` is the run's τ;
    or ``"pixel"``, normalized pixels centred by the class's mean real training image,
    with τ_c the same percentile of real–real cosines in pixel space. ``data`` (the
    run's MedMNIST; default: loaded from its config) and ``experts`` (default: the
    folder in its config) may be given. No re-seed: an empty table with the columns.
    """
    from .run_folder import list_snapshots, load_dom_event, load_snapshot, read_dom_events
    events = [e for e in read_dom_events(run) if e.get("real_indices")]
    if not events:
        return pd.DataFrame(columns=list(DISTINCT_COLUMNS))
    sp = _space(run, space, data, experts)
    snaps = list_snapshots(run)
    # the next re-seed of each set index after each check: later snapshots hold that one
    reseeded_at = {}
    for e in events:
        for i in e["real_indices"]:
            reseeded_at.setdefault(int(i), []).append(int(e["iteration"]))
    cache: dict[tuple[int, Any], dict] = {}

    def snapshot_sims(k: int, path: Path, pos) -> dict:
        if (k, pos) not in cache:
            s = load_snapshot(path)
            cache[(k, pos)] = sp.similarities(s["x"], s["y"], pos)
        return cache[(k, pos)]

    rows = []
    for e in events:
        it, pos = int(e["iteration"]), sp.position(e)
        arrays = load_dom_event(run, e)
        labels = np.asarray(arrays["labels"]).reshape(-1)
        before = sp.similarities(arrays["before"], labels, pos)
        after = sp.similarities(arrays["after"], labels, pos)
        taus = sp.tau(pos) or {}
        for key, real in sorted(e["real_indices"].items(), key=lambda kv: int(kv[0])):
            i = int(key)
            c = int(labels[i])
            tau = float(taus.get(c, math.nan))
            later = [t for t in reseeded_at[i] if t > it]
            stop = later[0] if later else math.inf
            points = [("before", it + 1, before), ("re-seed", it + 1, after)]
            points += [("snapshot", k, snapshot_sims(k, p, pos)) for k, p in snaps
                       if it + 1 < k <= stop]
            for when, k, sims in points:
                got = _max_other(sims, i, c)
                if got is None:
                    continue
                m, nearest = got
                rows.append({"event_iteration": it, "index": i, "label": c, "real_index": int(real),
                             "when": when, "iteration": int(k), "since": int(k) - it - 1,
                             "max_cosine": m, "nearest": nearest, "tau": tau,
                             "above": bool(m > tau) if math.isfinite(tau) else False,
                             "space": sp.name, "position": pos})
    return pd.DataFrame(rows, columns=list(DISTINCT_COLUMNS))


def distinctness_summary(df: pd.DataFrame) -> pd.DataFrame:
    """One row per re-seeded image of :func:`dom_distinctness`: its cosine before the
    check, right after, at its last snapshot, the highest after the re-seed, τ, and
    whether it was above τ at any later snapshot (``above_tau_later``)."""
    cols = ["event_iteration", "index", "label", "real_index", "before", "re_seed", "last",
            "last_iteration", "max_after", "tau", "above_tau_later"]
    rows = []
    for (it, i), g in df.groupby(["event_iteration", "index"], sort=True):
        get = lambda w: g.loc[g["when"] == w, "max_cosine"]   # noqa: E731
        later = g[g["when"] == "snapshot"]
        after = g[g["when"] != "before"]
        rows.append({"event_iteration": int(it), "index": int(i), "label": int(g["label"].iloc[0]),
                     "real_index": int(g["real_index"].iloc[0]),
                     "before": float(get("before").iloc[0]) if len(get("before")) else math.nan,
                     "re_seed": float(get("re-seed").iloc[0]) if len(get("re-seed")) else math.nan,
                     "last": float(after["max_cosine"].iloc[-1]) if len(after) else math.nan,
                     "last_iteration": int(after["iteration"].iloc[-1]) if len(after) else int(it) + 1,
                     "max_after": float(after["max_cosine"].max()) if len(after) else math.nan,
                     "tau": float(g["tau"].iloc[0]),
                     "above_tau_later": bool(later["above"].any()) if len(later) else False})
    return pd.DataFrame(rows, columns=cols)


def _draw_distinct(ax, df: pd.DataFrame, tau, class_names, note: str, key: Any = "") -> None:
    name = (lambda c: class_names[c] if class_names is not None and c < len(class_names)
            else f"class {c}")
    classes = sorted(int(c) for c in df["label"].unique())
    color = {c: f"C{k % 10}" for k, c in enumerate(classes)}
    seen: set[int] = set()
    for (it, i), g in df.groupby(["event_iteration", "index"], sort=True):
        c = int(g["label"].iloc[0])
        pre, rest = g[g["when"] == "before"], g[g["when"] != "before"].sort_values("iteration")
        if len(pre) and len(rest):
            ax.plot([pre["iteration"].iloc[0], rest["iteration"].iloc[0]],
                    [pre["max_cosine"].iloc[0], rest["max_cosine"].iloc[0]], ":", color=color[c],
                    lw=0.9)
            ax.plot(pre["iteration"], pre["max_cosine"], "o", mfc="none", color=color[c], ms=5)
        ax.plot(rest["iteration"], rest["max_cosine"], "-", marker=".", color=color[c], lw=1.1,
                ms=5, alpha=0.85, label=None if c in seen else f"{name(c)} (re-seeded)")
        seen.add(c)
    if tau is None:
        tau = {int(c): float(t) for c, t in df.groupby("label")["tau"].first().items()
               if np.isfinite(t)}
        if len(tau) > 1 and len(set(tau.values())) == 1:   # a fixed τ: one line
            tau = next(iter(tau.values()))
    if isinstance(tau, (int, float)):
        ax.axhline(float(tau), color="0.3", lw=0.9, ls="--", label=f"τ = {float(tau):g}")
    elif tau:
        for c, t in sorted(tau.items()):
            ax.axhline(t, color=color.get(int(c), "0.3"), lw=0.9, ls="--",
                       label=f"τ {name(int(c))} = {t:.3f}")
    ax.plot([], [], "o", mfc="none", color="0.3", label="before the check")
    s = distinctness_summary(df)
    later = int(s["above_tau_later"].sum())
    head = f"{key}: " if key != "" else ""
    ax.set_title(f"{head}{later} of {len(s)} re-seeded images above τ at a later snapshot "
                 f"({df['space'].iloc[0]})" + (f"; {note}" if note else ""), fontsize=8, loc="left")
    ax.set(ylabel="max within-class cosine\nto another synthetic image")
    ax.grid(alpha=0.3)
    viz.legend(ax, fontsize=7, ncol=2, loc="upper right")


def distinctness_figure(df: pd.DataFrame, tau: float | Mapping[int, float] | None = None,
                        title: str = "", class_names: Sequence[str] | None = None,
                        note: str = "", by: str = "method") -> Figure:
    """Re-seeded images against their class, from :func:`dom_distinctness`: one line
    per re-seeded image (colour: class) of its largest within-class cosine over the
    iterations — a hollow marker just before the check (the overlap that triggered
    it), a dotted drop to the re-seed, then every later snapshot. Horizontal dashed
    lines: τ per class (``tau``: a float, {class: τ_c}, or None for each run's own
    ``tau`` column; one line when all classes share it). Lines that stay below τ: the
    re-seeds stayed apart; each panel's title counts the images above τ at a later
    snapshot. With a ``by`` column (e.g. several runs' tables
    concatenated with their method or label) holding several values, one panel per
    value. Without re-seeds, a figure that says so (and ``note``)."""
    if df.empty:
        fig, axes = viz.new_figure(1, 1, figsize=(8.5, 1.8))
        ax = axes[0, 0]
        ax.axis("off")
        viz.empty_note(ax, "DOM re-seeded no image" + (f"\n{note}" if note else ""))
        if title:
            ax.set_title(title)
        return fig
    groups = (list(df.groupby(by, sort=False)) if by in df and df[by].nunique() > 1
              else [("", df)])
    fig, axes = viz.new_figure(len(groups), 1, figsize=(8.5, 3.6 * len(groups)), sharex=True)
    for ax, (key, g) in zip(axes[:, 0], groups):
        _draw_distinct(ax, g, tau, class_names, note, key)
    axes[-1, 0].set(xlabel="iteration")
    fig.suptitle(title or "Do re-seeded images stay apart?", fontsize=11)
    fig.tight_layout()
    return fig
