"""Side-by-side comparison of saved results (notebook 06): plain callbacks plus a small
ipywidgets front end (:func:`compare_widget`) that only wires them together.

Saved results, read from one or more results folders (default ``results/``)::

    results/benchmark.csv        long format, one row per (flag, size, ipc, method, seed)
    results/baselines/*.json     each the JSON printed by ``mdd baseline``
                                 (method = its ``kind``: "random" or "full")

``benchmark.csv`` columns: ``flag, ipc, method, acc_mean, acc_std, auc_mean, auc_std``
(required) and ``size, models, epochs, seed, lr, artifact`` (optional). ``artifact`` is
the folder of a distilled set (relative paths are taken from the project root): for
committed results a record under ``results/artifacts/`` (:mod:`mdd.records`), so that a
fresh clone shows the images; a row whose artifact is not on this machine says "not
saved". The full-data row leaves ``ipc`` empty. :func:`upsert_benchmark` writes rows in
this schema (``mdd benchmark`` writes more columns, which are kept in the file and
ignored here). A cell with several seeds is shown as the mean ± std over its seeds (one
seed: ± the std over its test networks), beside the images of its first seed with a saved
artifact; ``random@<method>`` (the same real subset trained at that method's learned α)
shows the random subset's images. Tables show ACC in % and the gain over the random
subset in signed points (``+13.3``, paired over shared seeds), as the README does.

Every callback takes the loaded results table and returns figures or tables, so tests
call them without a browser; with only baselines saved, the image panel shows the
random real subset that the baseline was evaluated on.
"""
from __future__ import annotations

import functools
import glob
import io
import json
import math
import os
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from . import baselines, data as mdata
from .io import read_json, write_json, write_text
from .methods import method_rank
from .notebooks import preset_sizes, resolve_path, shown_path
from .records import is_saved
from .viz import blank_figure, draw_image_grid, grid_size, method_color

BENCHMARK = "benchmark.csv"
REQUIRED = ("flag", "ipc", "method", "acc_mean", "acc_std", "auc_mean", "auc_std")
OPTIONAL = ("size", "models", "epochs", "seed", "lr", "artifact")
COLUMNS = REQUIRED + OPTIONAL + ("source",)
KEY = ["flag", "size", "ipc", "method", "seed"]
#: The columns of :func:`accuracy_table` that the notebook and the widget show.
SHOWN = ["method", "seeds", "ACC %", "AUC", "ΔACC vs random", "images"]
#: What the ``images`` column says.
SAVED, NOT_SAVED, RANDOM_IMAGES = "saved artifact", "not saved", "random real subset"


# ---------------------------------------------------------------- reading results
def _normalize(df: pd.DataFrame, source: str) -> pd.DataFrame:
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ValueError(f"{source} lacks columns {missing}; results need {list(REQUIRED)}")
    df = df.copy()
    for c in OPTIONAL:
        if c not in df.columns:
            df[c] = None
    df["size"] = pd.to_numeric(df["size"], errors="coerce").fillna(28).astype(int)
    df["ipc"] = pd.to_numeric(df["ipc"], errors="coerce").astype("Int64")
    for c in ("acc_mean", "acc_std", "auc_mean", "auc_std", "lr"):
        df[c] = pd.to_numeric(df[c], errors="coerce")
    for c in ("models", "epochs", "seed"):
        df[c] = pd.to_numeric(df[c], errors="coerce").astype("Int64")
    df["seed"] = df["seed"].fillna(0)
    df["method"] = df["method"].astype(str)
    df["artifact"] = pd.Series([a if isinstance(a, str) and a.strip() else None
                                for a in df["artifact"]], index=df.index, dtype=object)
    df["source"] = df["source"] if "source" in df.columns else source
    return df[list(COLUMNS)]


def read_benchmark(path: str | os.PathLike) -> pd.DataFrame:
    """``benchmark.csv`` → the results table (schema: module docstring)."""
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not a readable results CSV ({e})") from None
    return _normalize(df, shown_path(path))


def read_baseline(path: str | os.PathLike) -> dict:
    """One ``mdd baseline`` JSON → one results row (method = its ``kind``)."""
    try:
        r = read_json(path)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}); rerun `mdd baseline` for it") from None
    need = ("flag", "kind", "acc_mean", "acc_std", "auc_mean", "auc_std")
    if not isinstance(r, dict) or any(k not in r for k in need):
        raise ValueError(f"{path} is not the output of `mdd baseline` (needs keys {list(need)})")
    return {**{k: r.get(k) for k in REQUIRED + OPTIONAL if k != "method"},
            "method": r["kind"], "source": shown_path(path)}


def load_results(folders: str | os.PathLike | Iterable[str | os.PathLike] = "results") -> pd.DataFrame:
    """Every saved result under ``folders`` (missing folders are skipped), one row per
    (flag, size, ipc, method): the first folder wins, and within a folder
    ``benchmark.csv`` wins over ``baselines/*.json``."""
    if isinstance(folders, (str, os.PathLike)):
        folders = [folders]
    parts = []
    for folder in map(resolve_path, folders):
        if (folder / BENCHMARK).is_file():
            parts.append(read_benchmark(folder / BENCHMARK))
        rows = [read_baseline(p) for p in sorted(glob.glob(str(folder / "baselines" / "*.json")))]
        if rows:
            parts.append(_normalize(pd.DataFrame(rows), shown_path(folder / "baselines")))
    if not parts:
        return _normalize(pd.DataFrame(columns=list(REQUIRED)), "")
    df = pd.concat([p for p in parts if not p.empty] or parts[:1], ignore_index=True)
    return df.drop_duplicates(KEY, keep="first").reset_index(drop=True)


def upsert_benchmark(rows: Sequence[dict] | pd.DataFrame,
                     path: str | os.PathLike = f"results/{BENCHMARK}") -> pd.DataFrame:
    """Add ``rows`` to ``benchmark.csv`` (replacing rows with the same flag, size, ipc
    and method), atomically; returns the whole table as written."""
    path = resolve_path(path)
    new = _normalize(pd.DataFrame(rows), str(path)).drop(columns="source")
    old = read_benchmark(path).drop(columns="source") if path.is_file() else new.iloc[:0]
    both = pd.concat([new, old], ignore_index=True) if not old.empty else new
    both = both.drop_duplicates(KEY, keep="first")
    both = (both.assign(_rank=both["method"].map(method_rank))
            .sort_values(["flag", "size", "ipc", "_rank", "seed"]).drop(columns="_rank"))
    write_text(path, both.to_csv(index=False))
    return both.reset_index(drop=True)


def cells(results: pd.DataFrame) -> pd.DataFrame:
    """One row per (flag, size, ipc, method) of per-seed ``results``: ``acc_mean`` and
    ``auc_mean`` the mean over seeds, ``acc_std``/``auc_std`` the std over seeds (ddof 1;
    with one seed, that row's std over its test networks), ``seeds``, ``gain_points``
    (ACC over ``random`` at the same ipc in points, paired over the seeds both have;
    NaN without them), and ``seed``/``artifact`` of the seed whose images are shown (the
    first with a saved artifact, else the first)."""
    if results.empty:
        return results.assign(seeds=pd.Series(dtype=int), gain_points=pd.Series(dtype=float))
    rows = []
    keys = ["flag", "size", "ipc", "method"]
    by_seed = {k: g.sort_values("seed") for k, g in results.groupby(keys, dropna=False, sort=False)}
    for (flag, size, ipc, method), g in by_seed.items():
        row = g.iloc[0].to_dict()
        saved = [i for i, a in enumerate(g["artifact"]) if is_saved(a)]
        shown = g.iloc[saved[0] if saved else 0]
        row.update(seed=shown["seed"], artifact=shown["artifact"], seeds=len(g))
        for m in ("acc", "auc"):
            v = g[f"{m}_mean"].astype(float)
            row[f"{m}_mean"] = v.mean()
            row[f"{m}_std"] = v.std(ddof=1) if len(g) > 1 else g[f"{m}_std"].iloc[0]
        rand = by_seed.get((flag, size, ipc, "random"))
        gain = math.nan
        if rand is not None and method != "random":
            r = dict(zip(rand["seed"], rand["acc_mean"].astype(float)))
            d = [a - r[s] for s, a in zip(g["seed"], g["acc_mean"].astype(float)) if s in r]
            gain = 100 * float(np.mean(d)) if d else math.nan
        row["gain_points"] = gain
        rows.append(row)
    out = pd.DataFrame(rows)
    out["ipc"] = pd.to_numeric(out["ipc"], errors="coerce").astype("Int64")
    out["artifact"] = pd.Series([a if isinstance(a, str) and a.strip() else None
                                 for a in out["artifact"]], index=out.index, dtype=object)
    return out


# ---------------------------------------------------------------- choices
def flag_options(results: pd.DataFrame) -> list[str]:
    """Modalities with any saved result."""
    return sorted(results["flag"].dropna().unique())


def ipc_options(results: pd.DataFrame, flag: str) -> list[int]:
    """ipc values saved for ``flag`` (the full-data row has none)."""
    ipcs = results.loc[results["flag"] == flag, "ipc"].dropna().unique()
    return sorted(int(i) for i in ipcs)


def method_options(results: pd.DataFrame, flag: str, ipc: int | None) -> list[str]:
    """Methods saved for ``flag`` at ``ipc``, plus ``full`` when saved for ``flag``."""
    sub = select(results, flag, ipc)
    return sorted(sub["method"].unique(), key=method_rank)


def select(results: pd.DataFrame, flag: str, ipc: int | None,
           methods: Sequence[str] | None = None) -> pd.DataFrame:
    """Rows of ``flag`` at ``ipc`` (and its full-data row), optionally only ``methods``."""
    at_ipc = results["ipc"].isna() if ipc is None else (results["ipc"] == ipc).fillna(False)
    keep = (results["flag"] == flag) & (at_ipc | (results["method"] == "full"))
    if methods is not None:
        keep &= results["method"].isin(list(methods))
    sub = results[keep]
    order = sorted(range(len(sub)), key=lambda i: method_rank(sub["method"].iloc[i]))
    return sub.iloc[order].reset_index(drop=True)


def accuracy_table(results: pd.DataFrame, flag: str, ipc: int | None,
                   methods: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per method: ``ACC %`` (mean ± std in %, one decimal) and ``AUC`` as text,
    the raw means and stds (fractions), the gain in ACC over the random subset at the same
    ipc in points (``gain_points``, NaN when no random row is saved; shown signed in
    ``ΔACC vs random``, empty for the random row itself), and ``images``: what the image
    panel shows (``saved artifact``, ``not saved``, ``random real subset``; empty for
    ``full``). :data:`SHOWN` are the columns to show."""
    agg = cells(results)
    sub = select(agg, flag, ipc, methods)
    rand = select(agg, flag, ipc, ["random"])
    base = float(rand["acc_mean"].iloc[0]) if len(rand) else math.nan
    # paired over seeds where the grid has them; the full-data row (no seeds of its own
    # at this ipc) against the random subset's mean
    gain = [100 * (a - base) if m == "full" else g
            for m, a, g in zip(sub["method"], sub["acc_mean"].astype(float), sub["gain_points"])]
    return pd.DataFrame({
        "flag": sub["flag"], "ipc": sub["ipc"], "method": sub["method"], "seeds": sub["seeds"],
        "ACC %": [_pm(m, s, 100, 1) for m, s in zip(sub["acc_mean"], sub["acc_std"])],
        "AUC": [_pm(m, s) for m, s in zip(sub["auc_mean"], sub["auc_std"])],
        "ΔACC vs random": ["" if m == "random" else signed_points(g)
                           for m, g in zip(sub["method"], gain)],
        "acc_mean": sub["acc_mean"], "acc_std": sub["acc_std"],
        "auc_mean": sub["auc_mean"], "auc_std": sub["auc_std"],
        "gain_points": gain,
        "models": sub["models"], "epochs": sub["epochs"],
        "images": [images_note(m, a) for m, a in zip(sub["method"], sub["artifact"])],
        "artifact": sub["artifact"], "source": sub["source"],
    })


def overview(results: pd.DataFrame) -> pd.DataFrame:
    """Every saved cell, readable: ``flag, ipc, method, seeds, ACC %, AUC, ΔACC vs random,
    models, epochs, images, source`` (ipc ``all`` for the full-data row), in display order."""
    parts = []
    for flag in flag_options(results):
        for ipc in ipc_options(results, flag) or [None]:
            t = accuracy_table(results, flag, ipc)
            parts.append(t[t["method"] != "full"])
        full = accuracy_table(results, flag, None, ["full"])
        parts.append(full.assign(**{"ΔACC vs random": ""}))
    cols = ["flag", "ipc", "method", "seeds", "ACC %", "AUC", "ΔACC vs random", "models",
            "epochs", "images", "source"]
    if not parts:
        return pd.DataFrame(columns=cols)
    out = pd.concat(parts, ignore_index=True)[cols]
    out["ipc"] = [("all" if m == "full" else "") if pd.isna(i) else int(i)
                  for i, m in zip(out["ipc"], out["method"])]
    return out


def images_note(method: str, artifact: str | None) -> str:
    """The ``images`` column: ``saved artifact`` only when the artifact is on this machine."""
    if is_saved(artifact):
        return SAVED
    if method == "random" or method.startswith("random@"):
        return RANDOM_IMAGES
    return "" if method == "full" else NOT_SAVED


def signed_points(gain: float) -> str:
    """A gain in points as the README writes it: ``+13.3``, ``-1.9``, ``+0.0``; "" for NaN."""
    return "" if gain is None or pd.isna(gain) else f"{gain:+.1f}"


def _pm(mean: float, std: float, scale: float = 1.0, digits: int = 3) -> str:
    if mean is None or pd.isna(mean):
        return ""
    std = 0.0 if pd.isna(std) else std
    return f"{scale * mean:.{digits}f} ± {scale * std:.{digits}f}"


# ---------------------------------------------------------------- images
@dataclass
class Panel:
    """The images shown for one method: uint8 pixels with labels, or a note why not."""

    method: str
    title: str
    pixels: np.ndarray | None = None
    labels: np.ndarray | None = None
    note: str = ""


@functools.lru_cache(maxsize=4)
def _load(flag: str, size: int, root: str | None) -> mdata.MedMNIST:
    return mdata.load(flag, size=size, root=root)


def load_artifact(path: str | os.PathLike, data: mdata.MedMNIST) -> tuple[np.ndarray, np.ndarray]:
    """Images (uint8, laid out as :meth:`MedMNIST.pixels`) and labels (N) of a distilled
    set: an artifact folder or the run folder holding one (:func:`mdd.artifact.load_distilled`)."""
    from .artifact import load_distilled
    folder = resolve_path(path)
    if not folder.exists():
        raise FileNotFoundError(f"artifact {folder} does not exist")
    ds = load_distilled(folder)
    if ds.flag != data.flag:
        raise ValueError(f"artifact {folder} holds {ds.flag}, not {data.flag}")
    return ds.pixels, ds.y.numpy()


def panel_for(row: pd.Series, data: mdata.MedMNIST) -> Panel | None:
    """The images of one results row: its artifact when saved, the random real subset for
    ``random`` (same seed as the baseline), nothing for ``full``, a note otherwise: "not
    saved" (naming the missing folder) or "artifact unreadable" (a damaged one)."""
    method, ipc = row["method"], row["ipc"]
    if method == "full":
        return None
    artifact = row.get("artifact")
    if is_saved(artifact):
        try:
            pixels, labels = load_artifact(artifact, data)
            seed = "" if pd.isna(row.get("seed")) else f", seed {int(row['seed'])}"
            return Panel(method, f"{method} (distilled{seed})", pixels, labels)
        except (OSError, KeyError, ValueError, RuntimeError) as e:
            return Panel(method, method, note=f"artifact unreadable:\n{e}")
    if (method == "random" or method.startswith("random@")) and not pd.isna(ipc):
        seed = 0 if pd.isna(row.get("seed")) else int(row["seed"])
        x, y, _ = baselines.random_subset(data, int(ipc), seed=seed)
        return Panel(method, f"{method} real (seed {seed})", data.pixels(x), y.numpy())
    if isinstance(artifact, str) and artifact.strip():
        return Panel(method, method, note=f"distilled images {NOT_SAVED}:\n"
                                          f"{_breakable(shown_path(artifact))}\nis not on this machine")
    return Panel(method, method, note=f"distilled images {NOT_SAVED}\n(no artifact recorded)")


def _breakable(path: str, width: int = 34) -> str:
    """A long path over several lines, broken after ``/``."""
    lines, line = [], ""
    for part in path.split("/"):
        piece = part if not line else f"/{part}"
        if line and len(line) + len(piece) > width:
            lines.append(line + "/")
            line = part
        else:
            line += piece
    return "\n".join(lines + [line])


# ---------------------------------------------------------------- the view
def comparison_figure(panels: Sequence[Panel], table: pd.DataFrame, class_names: Sequence[str],
                      title: str = "", per_class: int = 10, cell: float = 0.55,
                      max_width: float = 14.0) -> Figure:
    """Image grids (one per method), as many side by side as fit in ``max_width`` inches
    (at ipc 10 two per row, at ipc 2 all in one), then the ACC bar chart (in %) across
    the bottom. Sized to be shown about 1:1 at 100 dpi (a notebook's output width), so
    that its 10–12 pt labels stay legible there."""
    n = len(class_names)
    label_w = 1.5   # the class names left of each grid
    widths = [grid_size(p.labels, n, per_class)[1] * cell + label_w if p.pixels is not None
              else 3.2 for p in panels] or [3.2]
    panel_w = max(widths)
    cols = max(1, min(len(panels) or 1, int(max_width // panel_w)))
    rows = math.ceil(len(panels) / cols) if panels else 0
    panel_h = n * cell + 0.7
    bars_h = 3.6
    width = max(cols * panel_w, 7.0)
    heights = [panel_h] * rows + [bars_h]
    fig = blank_figure((width, sum(heights) + (0.5 if title else 0)))
    strips = np.atleast_1d(fig.subfigures(len(heights), 1, height_ratios=heights))
    for r in range(rows):
        row_panels = list(panels[r * cols:(r + 1) * cols])
        subs = np.atleast_1d(strips[r].subfigures(1, cols))
        for sf, p in zip(subs, row_panels):
            if p.pixels is not None:
                draw_image_grid(sf, p.pixels, p.labels, class_names, per_class, p.title)
            else:
                ax = sf.subplots()
                ax.axis("off")
                ax.text(0.5, 0.5, p.note, ha="center", va="center", fontsize=10,
                        color="#a00000", transform=ax.transAxes)
                sf.suptitle(p.title, fontsize=12)
    bars_w = min(width, max(5.0, 1.3 * len(table) + 2.0))
    pad = (width - bars_w) / 2
    bar_fig = (strips[-1] if pad < 0.1 else
               strips[-1].subfigures(1, 3, width_ratios=[pad, bars_w, pad])[1])
    _accuracy_axes(bar_fig, table)
    if title:
        fig.suptitle(title, fontsize=14)
    return fig


def _accuracy_axes(container, table: pd.DataFrame) -> None:
    ax = container.subplots()
    if table.empty:
        ax.text(0.5, 0.5, "no results", ha="center", va="center", transform=ax.transAxes)
        return
    means = 100 * table["acc_mean"].astype(float).to_numpy()
    stds = 100 * table["acc_std"].astype(float).fillna(0).to_numpy()
    x = np.arange(len(table))
    methods = list(table["method"])
    base = [m[len("random@"):] if m.startswith("random@") else m for m in methods]
    bars = ax.bar(x, means, yerr=stds, capsize=4, width=0.6,
                  color=[method_color(b, k) for k, b in enumerate(base)])
    for b, m in zip(bars, methods):   # a control: its method's colour, hatched and paler
        if m.startswith("random@"):
            b.set_alpha(0.45)
            b.set_hatch("//")
    ax.bar_label(bars, labels=[f"{m:.1f}" for m in means], fontsize=11, padding=3)
    ax.set_xticks(x, methods, fontsize=11)
    ax.tick_params(axis="y", labelsize=10)
    ax.set_ylim(0, 105)
    ax.set_ylabel("test ACC %", fontsize=11)
    ax.grid(alpha=0.3, axis="y")
    container.suptitle("test accuracy, % (mean ± std)", fontsize=12)


def compare_view(results: pd.DataFrame, flag: str, ipc: int | None,
                 methods: Sequence[str] | None = None, root: str | os.PathLike | None = None,
                 per_class: int = 10) -> dict:
    """The widget's callback: ``{"table": accuracy_table, "figure": comparison_figure}``
    for ``flag`` at ``ipc`` and the chosen ``methods`` (None = all saved)."""
    table = accuracy_table(results, flag, ipc, methods)
    if table.empty:
        raise ValueError(f"no saved results for {flag} at ipc={ipc} and methods={methods}; "
                         f"saved for {flag}: ipc {ipc_options(results, flag)}")
    rows = select(cells(results), flag, ipc, methods)
    size = int(rows["size"].iloc[0])
    data = _load(flag, size, None if root is None else str(root))
    # random@m trains random's subset: its images are the random panel's, shown once
    shown = set(rows["method"])
    rows = rows[[not (m.startswith("random@") and "random" in shown) for m in rows["method"]]]
    panels = [p for _, r in rows.iterrows() if (p := panel_for(r, data)) is not None]
    fig = comparison_figure(panels, table, data.class_names,
                            title=f"{flag}, ipc={ipc}", per_class=per_class)
    return {"table": table, "figure": fig}


def ensure_random_baseline(results: pd.DataFrame, flag: str, ipc: int, preset: str,
                           folder: str | os.PathLike, root: str | os.PathLike | None = None,
                           seed: int = 0) -> pd.DataFrame:
    """When ``results`` has no random-subset row for ``flag`` at ``ipc``, evaluate one at
    the preset's sizes, save it as ``folder/baselines/<flag>_ipc<ipc>_random.json`` and
    return ``results`` with it; otherwise return ``results`` unchanged."""
    if len(select(results, flag, ipc, ["random"])):
        return results
    from .baseline_cli import run_baseline
    sizes = preset_sizes(preset)
    r = run_baseline(flag, ipc, "random", models=sizes["eval_models"],
                     epochs=sizes["eval_epochs"], root=root, seed=seed, progress=False)
    path = resolve_path(folder) / "baselines" / f"{flag}_ipc{ipc}_random.json"
    write_json(path, r)
    row = _normalize(pd.DataFrame([read_baseline(path)]), str(path))
    return pd.concat([results, row], ignore_index=True) if not results.empty else row


# ---------------------------------------------------------------- the widget
def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """``fig`` as PNG bytes (what the widget shows, independent of the plotting backend)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def compare_widget(results: pd.DataFrame, root: str | os.PathLike | None = None,
                   flag: str | None = None, ipc: int | None = None):
    """Dropdowns for modality and ipc, a multi-select for methods, and an output area
    showing :func:`compare_view`. The returned VBox has ``.controls`` (the widgets)
    and ``.render()`` (redraw now) for scripted use."""
    import ipywidgets as w
    from IPython.display import Image

    flags = flag_options(results)
    if not flags:
        box = w.VBox([w.HTML("<b>No saved results.</b> Run <code>mdd baseline</code> "
                             "(results/baselines/) or the benchmark (results/benchmark.csv).")])
        box.controls, box.render = {}, lambda: None
        return box
    flag_w = w.Dropdown(options=flags, value=flag if flag in flags else flags[0],
                        description="modality")
    ipc_w = w.Dropdown(description="ipc")
    meth_w = w.SelectMultiple(description="methods", rows=5)
    out = w.Output()
    busy = {"on": False}

    def set_ipcs(value: int | None = None) -> None:
        opts = ipc_options(results, flag_w.value) or [None]
        ipc_w.options = opts
        ipc_w.value = value if value in opts else opts[0]

    def set_methods() -> None:
        opts = method_options(results, flag_w.value, ipc_w.value)
        meth_w.options = opts
        meth_w.value = tuple(opts)

    def render() -> None:
        # Outputs are set on the widget (append_display_data) rather than captured with
        # `with out:` + clear_output: no iopub capture hooks, so headless executors
        # (papermill/nbclient) cannot stall on them, and it is safe from other threads.
        out.outputs = ()
        try:
            view = compare_view(results, flag_w.value, ipc_w.value, list(meth_w.value) or None,
                                root=root)
        except (ValueError, OSError) as e:
            out.append_stdout(f"cannot show {flag_w.value} ipc={ipc_w.value}: {e}\n")
            return
        out.append_display_data(Image(data=figure_png(view["figure"]), format="png"))
        out.append_display_data(view["table"][SHOWN])

    def changed(which: str):
        def handler(_change) -> None:
            if busy["on"]:
                return
            busy["on"] = True
            try:
                if which == "flag":
                    set_ipcs()
                if which in ("flag", "ipc"):
                    set_methods()
            finally:
                busy["on"] = False
            render()
        return handler

    busy["on"] = True
    set_ipcs(ipc)
    set_methods()
    busy["on"] = False
    flag_w.observe(changed("flag"), names="value")
    ipc_w.observe(changed("ipc"), names="value")
    meth_w.observe(changed("methods"), names="value")
    box = w.VBox([w.HBox([flag_w, ipc_w, meth_w]), out])
    box.controls = {"flag": flag_w, "ipc": ipc_w, "methods": meth_w, "output": out}
    box.render = render
    render()
    return box
