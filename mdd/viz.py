"""Figure and table helpers for the notebooks.

Every helper *returns* a matplotlib :class:`~matplotlib.figure.Figure` (a notebook shows
it inline by making it the cell's last expression) and never calls ``plt.show``. Figures
are created through pyplot so that Jupyter's inline display hooks are active, and closed
in pyplot at once, so they are not shown twice and do not accumulate; they can still be
drawn and saved. Nothing here needs a display: it works under the Agg backend.

:func:`save_figure` and :func:`save_table` write to stable names under a figures folder,
atomically (temp file, then ``os.replace``), so a reader never sees half a PNG.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from .data import SPLITS, MedMNIST
from .io import atomic_path
from .pixels import to_pixels

_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
DPI = 120


# ---------------------------------------------------------------- files
def _check_name(name: str) -> str:
    """A stable file stem: letters, digits, ``.``, ``_``, ``-``; no folders, no suffix."""
    if not _NAME_OK.match(name) or name.endswith((".png", ".csv", ".md")):
        raise ValueError(f"figure/table name {name!r} must be a plain file stem "
                         "(letters, digits, '.', '_', '-'; no folder, no extension)")
    return name


def _publish_file(path: Path, write: Callable[[Path], None]) -> Path:
    """``write(tmp)`` then rename onto ``path``; readable by all (mkstemp makes 0600)."""
    with atomic_path(path) as tmp:
        write(tmp)
        os.chmod(tmp, 0o644)
    return path


def save_figure(fig: Figure, name: str, folder: str | os.PathLike, dpi: int = DPI) -> Path:
    """Write ``fig`` to ``folder/name.png`` atomically and return the path."""
    path = Path(folder) / f"{_check_name(name)}.png"
    return _publish_file(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi,
                                                       bbox_inches="tight"))


def markdown_table(df: pd.DataFrame, floatfmt: str = ".4f") -> str:
    """``df`` as a GitHub-flavoured Markdown table (no extra dependency)."""
    def cell(v) -> str:
        if v is None or (pd.api.types.is_scalar(v) and not isinstance(v, str) and pd.isna(v)):
            return ""  # None, NaN, pd.NA, NaT
        if isinstance(v, (float, np.floating)):
            return format(v, floatfmt)
        return str(v).replace("|", "\\|")

    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |"
              for row in df.itertuples(index=False, name=None)]
    return "\n".join(lines) + "\n"


def publish(fig: Figure, name: str, folder: str | os.PathLike) -> Figure:
    """Save ``fig`` as ``folder/name.png`` and return it (the cell's last expression
    then shows it inline)."""
    save_figure(fig, name, folder)
    return fig


def save_table(df: pd.DataFrame, name: str, folder: str | os.PathLike,
               floatfmt: str = ".4f") -> dict[str, Path]:
    """Write ``df`` to ``folder/name.csv`` and ``folder/name.md`` atomically (floats in
    the Markdown as ``floatfmt``, e.g. ``".4g"`` for values of mixed scale)."""
    folder = Path(folder)
    csv, md = folder / f"{_check_name(name)}.csv", folder / f"{name}.md"
    _publish_file(csv, lambda tmp: tmp.write_text(df.to_csv(index=False)))
    _publish_file(md, lambda tmp: tmp.write_text(markdown_table(df, floatfmt)))
    return {"csv": csv, "md": md}


def save_markdown(text: str, name: str, folder: str | os.PathLike) -> Path:
    """Write ``text`` to ``folder/name.md`` atomically and return the path."""
    path = Path(folder) / f"{_check_name(name)}.md"
    return _publish_file(path, lambda tmp: tmp.write_text(text))


# ---------------------------------------------------------------- figures
def new_figure(nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] | None = None,
               **kw) -> tuple[Figure, np.ndarray]:
    """A figure and its axes grid (always 2-D), already closed in pyplot (see module doc)."""
    fig, axes = plt.subplots(nrows, ncols, figsize=figsize, squeeze=False, **kw)
    plt.close(fig)
    return fig, axes


def blank_figure(figsize: tuple[float, float], layout: str | None = "constrained") -> Figure:
    """An empty figure (for subfigures), already closed in pyplot (see module doc)."""
    fig = plt.figure(figsize=figsize, layout=layout)
    plt.close(fig)
    return fig


def grid_size(labels: Sequence[int], num_classes: int, per_class: int | None = None) -> tuple[int, int]:
    """(rows, columns) of :func:`draw_image_grid` for these labels."""
    labels = np.asarray(labels).reshape(-1)
    cols = max([1] + [int((labels == c).sum()) for c in range(num_classes)])
    return num_classes, min(cols, per_class) if per_class else cols


def _show(ax, img: np.ndarray | None) -> None:
    """One image cell: no ticks or frame; ``img`` uint8 H×W or H×W×3, or None (empty)."""
    ax.set_xticks([])
    ax.set_yticks([])
    for s in ax.spines.values():
        s.set_visible(False)
    if img is not None:
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255)


#: One image cell, for other figure modules (mdd.privacy_viz).
show_image = _show


def draw_image_grid(container, pixels: np.ndarray, labels: Sequence[int],
                    class_names: Sequence[str], per_class: int | None = None,
                    title: str = "") -> None:
    """Draw images into ``container`` (a Figure or SubFigure): one labelled row per
    class, up to ``per_class`` columns. ``pixels``: uint8 N×H×W or N×H×W×3."""
    pixels, labels = np.asarray(pixels), np.asarray(labels).reshape(-1)
    if len(pixels) != len(labels):
        raise ValueError(f"{len(pixels)} images but {len(labels)} labels")
    nrows, ncols = grid_size(labels, len(class_names), per_class)
    axes = container.subplots(nrows, ncols, squeeze=False)
    for c in range(nrows):
        idx = np.flatnonzero(labels == c)
        for j in range(ncols):
            _show(axes[c, j], pixels[idx[j]] if j < len(idx) else None)
        axes[c, 0].set_ylabel(_wrap(class_names[c]), rotation=0, ha="right", va="center",
                              fontsize=10)
    if title:
        container.suptitle(title, fontsize=12)


def image_grid(pixels: np.ndarray, labels: Sequence[int], class_names: Sequence[str],
               title: str = "", per_class: int | None = None, cell: float = 1.1) -> Figure:
    """Images as a new figure: one labelled row per class, up to ``per_class`` columns
    (see :func:`draw_image_grid`). Classes without images get an empty row."""
    rows, cols = grid_size(labels, len(class_names), per_class)
    fig = blank_figure((cell * cols + 1.6, cell * rows + 0.6))
    draw_image_grid(fig, pixels, labels, class_names, per_class, title)
    return fig


def _wrap(text: str, width: int = 18) -> str:
    words, lines, line = str(text).split(), [], ""
    for w in words:
        if line and len(line) + len(w) + 1 > width:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    return "\n".join(lines + [line])


def sample_indices(labels: np.ndarray, per_class: int, num_classes: int,
                   seed: int = 0) -> np.ndarray:
    """Up to ``per_class`` seeded random indices of each class, class by class."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels).reshape(-1)
    picks = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in range(num_classes)]
    return np.concatenate(picks) if picks else np.zeros(0, dtype=int)


def montage(data: MedMNIST, per_class: int = 8, split: str = "train", seed: int = 0) -> Figure:
    """A class-labelled grid of ``per_class`` random real images per class of ``data``."""
    s = data.split(split)
    idx = sample_indices(s.y.numpy(), per_class, data.num_classes, seed)
    pixels = data.pixels(s.x[torch_index(idx)])
    return image_grid(pixels, s.y.numpy()[idx], data.class_names,
                      title=f"{data.flag} ({split}, {data.size}px)", per_class=per_class)


def torch_index(idx: np.ndarray) -> torch.Tensor:
    """numpy indices → a LongTensor usable on tensors and MappedImages alike."""
    return torch.as_tensor(np.asarray(idx, dtype=np.int64))


def class_counts(data: MedMNIST) -> pd.DataFrame:
    """Long table: flag, split, label, class, count, fraction (of the split)."""
    rows = []
    for split in SPLITS:
        y = data.split(split).y.numpy()
        counts = np.bincount(y, minlength=data.num_classes)
        for c, n in enumerate(counts):
            rows.append({"flag": data.flag, "split": split, "label": c,
                         "class": data.class_names[c], "count": int(n),
                         "fraction": float(n / max(1, len(y)))})
    return pd.DataFrame(rows)


def class_balance(counts: pd.DataFrame) -> Figure:
    """Grouped bars of images per class and split, one panel per flag in ``counts``
    (the output of :func:`class_counts`, possibly concatenated over flags)."""
    flags = list(dict.fromkeys(counts["flag"]))
    if not flags:
        raise ValueError("no class counts to plot")
    fig, axes = new_figure(1, len(flags), figsize=(4.5 * len(flags), 3.4))
    for ax, flag in zip(axes[0], flags):
        sub = counts[counts["flag"] == flag]
        classes = list(dict.fromkeys(sub["class"]))
        width = 0.8 / len(SPLITS)
        x = np.arange(len(classes))
        for k, split in enumerate(SPLITS):
            n = [int(sub[(sub["split"] == split) & (sub["class"] == c)]["count"].sum())
                 for c in classes]
            bars = ax.bar(x + (k - (len(SPLITS) - 1) / 2) * width, n, width, label=split)
            ax.bar_label(bars, fontsize=9)
        ax.set_xticks(x, [_wrap(c, 14) for c in classes], fontsize=9)
        ax.set_title(flag)
        ax.set_ylabel("images")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def trajectory_figure(table: pd.DataFrame, acc_col: str = "val_acc") -> Figure:
    """Two panels from a :func:`mdd.trajectories.trajectory_table`: accuracy per epoch
    and parameter distance from init ``||θ_t − θ_0||`` per epoch, one line per expert."""
    if table.empty:
        raise ValueError("empty trajectory table")
    fig, axes = new_figure(1, 2, figsize=(9, 3.4))
    acc_ax, dist_ax = axes[0]
    for expert, sub in table.groupby("expert", sort=True):
        label = f"expert {expert}"
        acc_ax.plot(sub["epoch"], sub[acc_col], marker="o", ms=3, label=label)
        dist_ax.plot(sub["epoch"], sub["param_distance"], marker="o", ms=3, label=label)
    flag = table["flag"].iloc[0] if "flag" in table else ""
    split = acc_col.removesuffix("_acc")
    acc_ax.set(xlabel="epoch", ylabel=f"{split} accuracy", title=f"{flag}: {split} accuracy")
    dist_ax.set(xlabel="epoch", ylabel="||θ_t − θ_0||", title=f"{flag}: distance from init")
    for ax in (acc_ax, dist_ax):
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    if table["expert"].nunique() <= 10:
        acc_ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- runs (notebooks 02–05)
#: One colour per method, the same in every figure.
METHOD_COLORS = {"random": "tab:gray", "mtt": "tab:red", "datm": "tab:orange", "ptm": "tab:blue",
                 "ptm+dom": "tab:green", "ptm_dom": "tab:green", "full": "black"}
_SEED_STYLES = ("-", "--", ":", "-.")


def method_color(method: str, k: int = 0) -> str:
    """The colour of ``method`` (a control ``random@m``: m's; others: the default cycle
    from ``k``)."""
    return METHOD_COLORS.get(method.split("@", 1)[-1], f"C{(k + 4) % 10}")


def is_control(method: str) -> bool:
    """``random@m``: the real subset at method m's learned α (drawn light, hatched)."""
    return method.startswith("random@")


def _by_run(logs: pd.DataFrame):
    """(method, seed, k-th method, j-th seed, rows sorted by iteration) for each run."""
    methods = list(dict.fromkeys(logs["method"]))
    for k, method in enumerate(methods):
        sub = logs[logs["method"] == method]
        for j, seed in enumerate(sorted(sub["seed"].unique())):
            yield method, seed, k, j, sub[sub["seed"] == seed].sort_values("iteration")


def _legend(ax, fontsize: int = 7, **kw) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=fontsize, **kw)


def _empty_note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=9,
            color="0.35")


def loss_figure(logs: pd.DataFrame, window: int | None = None, title: str = "") -> Figure:
    """Matching loss per iteration (one line per run: colour = method, style = seed),
    its rolling variance (column ``rolling_var``, from
    :func:`mdd.diagnostics.add_rolling_variance`) and the start/target epochs of each
    method's first seed (the window that MTT draws at random and PTM fixes)."""
    if logs.empty:
        raise ValueError("no log rows to plot")
    fig, axes = new_figure(3, 1, figsize=(8, 7.4), sharex=True,
                           gridspec_kw={"height_ratios": [3, 2, 1.4]})
    loss_ax, var_ax, win_ax = axes[:, 0]
    firsts = set()
    for method, seed, k, j, run in _by_run(logs):
        c, ls = method_color(method, k), _SEED_STYLES[j % len(_SEED_STYLES)]
        loss_ax.plot(run["iteration"], run["loss"], ls, color=c, lw=1, label=f"{method} s{seed}")
        if "rolling_var" in run:
            var_ax.plot(run["iteration"], run["rolling_var"], ls, color=c, lw=1)
        if method not in firsts:
            firsts.add(method)
            win_ax.plot(run["iteration"], run["start"], "o", color=c, ms=3, label=f"{method} start")
            win_ax.plot(run["iteration"], run["target"], "x", color=c, ms=4, label=f"{method} target")
    loss = logs["loss"].to_numpy(dtype=float)
    if np.isfinite(loss).any() and np.nanmin(loss) > 0:
        loss_ax.set_yscale("log")
    loss_ax.set(ylabel="matching loss", title=title or "Matching loss per iteration")
    var_ax.set(ylabel=f"rolling variance\n(window {window})" if window else "rolling variance")
    win_ax.set(xlabel="iteration", ylabel="epoch")
    win_ax.yaxis.get_major_locator().set_params(integer=True)
    for ax in axes[:, 0]:
        ax.grid(alpha=0.3)
    _legend(loss_ax, ncol=2)
    _legend(win_ax, fontsize=6, ncol=4, loc="upper left")
    fig.tight_layout()
    return fig


def alpha_figure(logs: pd.DataFrame, title: str = "") -> Figure:
    """The learned step size α per iteration, one line per run (log scale)."""
    if logs.empty:
        raise ValueError("no log rows to plot")
    fig, axes = new_figure(1, 1, figsize=(8, 3.2))
    ax = axes[0, 0]
    for method, seed, k, j, run in _by_run(logs):
        ax.plot(run["iteration"], run["alpha"], _SEED_STYLES[j % len(_SEED_STYLES)],
                color=method_color(method, k), lw=1, label=f"{method} s{seed}")
    alpha = logs["alpha"].to_numpy(dtype=float)
    if np.isfinite(alpha).any() and np.nanmin(alpha) > 0:
        ax.set_yscale("log")
    ax.set(xlabel="iteration", ylabel="α (student step size)", title=title or "α over iterations")
    ax.grid(alpha=0.3)
    _legend(ax, ncol=2)
    fig.tight_layout()
    return fig


def skips_figure(logs: pd.DataFrame, title: str = "") -> Figure:
    """Skipped updates per iteration, cumulative (solid), and the non-finite ones among
    them (dashed), one line per run; the totals per run as bars beside."""
    if logs.empty:
        raise ValueError("no log rows to plot")
    fig, axes = new_figure(1, 2, figsize=(9, 3.0), gridspec_kw={"width_ratios": [3, 2]})
    ax, bar_ax = axes[0]
    names, skipped, nonfinite, colors = [], [], [], []
    for method, seed, k, j, run in _by_run(logs):
        c, ls = method_color(method, k), _SEED_STYLES[j % len(_SEED_STYLES)]
        ax.step(run["iteration"], run["skipped"].astype(int).cumsum(), ls, where="post", color=c,
                lw=1.2, label=f"{method} s{seed}")
        ax.step(run["iteration"], run["nonfinite"], ls, where="post", color=c, lw=0.8, alpha=0.5)
        names.append(f"{method}\ns{seed}")
        skipped.append(int(run["skipped"].astype(bool).sum()))
        nonfinite.append(int(run["nonfinite"].max()) if len(run) else 0)
        colors.append(c)
    x = np.arange(len(names))
    b = bar_ax.bar(x - 0.2, skipped, 0.4, color=colors, label="skipped")
    bar_ax.bar_label(b, fontsize=9)
    b = bar_ax.bar(x + 0.2, nonfinite, 0.4, color=colors, alpha=0.45, hatch="//", label="non-finite")
    bar_ax.bar_label(b, fontsize=9)
    bar_ax.set_xticks(x, names, fontsize=8)
    bar_ax.set(ylabel="updates", title="totals per run")
    top = max([1] + skipped + nonfinite)
    for a in (ax, bar_ax):
        a.set_ylim(-0.05 * top, 1.15 * top)
        a.yaxis.get_major_locator().set_params(integer=True)
        a.grid(alpha=0.3)
    if sum(skipped) == 0:
        _empty_note(ax, "no skipped or non-finite updates in any run")
    ax.set(xlabel="iteration", ylabel="updates (cumulative)",
           title=title or "Skipped updates (cumulative; non-finite: faint)")
    _legend(ax, fontsize=6, ncol=2, loc="upper left")
    _legend(bar_ax, fontsize=6, loc="upper right")
    fig.tight_layout()
    return fig


def band_figure(band: pd.DataFrame, points: pd.DataFrame | None = None, value: str = "acc_mean",
                ylabel: str = "val accuracy", title: str = "", by: str = "method",
                x: str = "iteration") -> Figure:
    """Mean across seeds (line) ± std (band) per ``by`` from
    :func:`mdd.diagnostics.seed_band`; ``points`` (the per-seed rows) as dots."""
    if band.empty:
        raise ValueError("no values to plot")
    fig, axes = new_figure(1, 1, figsize=(8, 3.4))
    ax = axes[0, 0]
    for k, (key, b) in enumerate(band.groupby(by, sort=False)):
        b = b.sort_values(x)
        c = method_color(key, k)
        n = int(b["n"].max())
        ax.plot(b[x], b["mean"], "-", color=c, lw=1.5, label=f"{key} (mean of {n}, ± std)")
        ax.fill_between(b[x].to_numpy(dtype=float), (b["mean"] - b["std"]).to_numpy(dtype=float),
                        (b["mean"] + b["std"]).to_numpy(dtype=float), color=c, alpha=0.2, lw=0)
        if points is not None and value in points:
            p = points[points[by] == key]
            ax.plot(p[x], p[value], ".", color=c, ms=4, alpha=0.7)
    ax.set(xlabel=x, ylabel=ylabel, title=title or f"{ylabel} across seeds")
    ax.grid(alpha=0.3)
    _legend(ax)
    fig.tight_layout()
    return fig


def similarity_heatmaps(panels: Sequence[tuple[str, dict]], class_names: Sequence[str],
                        title: str = "", vmin: float = 0.0, vmax: float = 1.0,
                        annotate_max: int = 10) -> Figure:
    """Within-class cosine-similarity matrices: one row per panel ``(label, {class:
    matrix})``, one column per class; values written in cells up to ``annotate_max``."""
    if not panels:
        raise ValueError("no similarity matrices to plot")
    classes = sorted({c for _, mats in panels for c in mats})
    nrows, ncols = len(panels), len(classes)
    fig, axes = new_figure(nrows, ncols, figsize=(2.3 * ncols + 1.6, 2.1 * nrows + 0.6),
                           layout="constrained")
    im = None
    for r, (label, mats) in enumerate(panels):
        for j, c in enumerate(classes):
            ax = axes[r, j]
            ax.set_xticks([])
            ax.set_yticks([])
            m = mats.get(c)
            if m is None or len(m) == 0:
                _empty_note(ax, "no images")
                continue
            m = np.asarray(m, dtype=float)
            im = ax.imshow(m, vmin=vmin, vmax=vmax, cmap="viridis")
            if len(m) <= annotate_max:
                for a in range(len(m)):
                    for b in range(len(m)):
                        ax.text(b, a, f"{m[a, b]:.2f}", ha="center", va="center", fontsize=6,
                                color="white" if m[a, b] < (vmin + vmax) / 2 else "black")
            if r == 0:
                name = class_names[c] if c < len(class_names) else str(c)
                ax.set_title(_wrap(name, 22), fontsize=8)
            if j == 0:
                ax.set_ylabel(label, fontsize=8)
    if im is not None:
        fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, label="cosine similarity")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def overlap_figure(logs: pd.DataFrame, events: pd.DataFrame | None = None, tau: float | None = None,
                   title: str = "") -> Figure:
    """Overlap ratio and mean within-class similarity per iteration (the run log's
    features: the experts' last epoch), one line per run; DOM checks (features at the
    check's target epoch) as markers, iterations where DOM replaced images as lines.
    ``events``: :func:`mdd.dom_diagnostics.dom_events_table` rows with method and seed."""
    if logs.empty:
        raise ValueError("no log rows to plot")
    fig, axes = new_figure(2, 1, figsize=(8, 5.6), sharex=True)
    ratio_ax, sim_ax = axes[:, 0]
    for method, seed, k, j, run in _by_run(logs):
        c, ls = method_color(method, k), _SEED_STYLES[j % len(_SEED_STYLES)]
        ratio_ax.plot(run["iteration"], run["overlap_ratio"], ls, color=c, lw=1.2,
                      label=f"{method} s{seed}")
        sim_ax.plot(run["iteration"], run["mean_similarity"], ls, color=c, lw=1.2,
                    label=f"{method} s{seed}")
    if events is not None and not events.empty:
        for k, (method, ev) in enumerate(events.groupby("method", sort=False)):
            c = method_color(method, k)
            sim_ax.plot(ev["iteration"], ev["mean_similarity"], "D", color=c, ms=4, mfc="none",
                        label=f"{method} DOM check (mean)")
            sim_ax.plot(ev["iteration"], ev["max_similarity"], "^", color=c, ms=4, mfc="none",
                        label=f"{method} DOM check (max pair)")
            for it in ev.loc[ev["replaced"] > 0, "iteration"]:
                for ax in (ratio_ax, sim_ax):
                    ax.axvline(it, color=c, lw=0.8, ls=":", alpha=0.8)
    if tau is not None:
        sim_ax.axhline(tau, color="0.3", lw=0.8, ls="--", label=f"τ = {tau:g}")
    ratio_ax.set(ylabel="overlap ratio\n(pairs above τ)", title=title or "Overlap over iterations")
    sim_ax.set(xlabel="iteration", ylabel="within-class\ncosine similarity")
    for ax in (ratio_ax, sim_ax):
        ax.grid(alpha=0.3)
    _legend(ratio_ax)
    _legend(sim_ax, fontsize=6, ncol=2)
    fig.tight_layout()
    return fig


def replacement_figure(replacements: Sequence[dict], norm, class_names: Sequence[str],
                       max_rows: int = 12, note: str = "", cell: float = 1.3) -> Figure:
    """Images DOM replaced (:func:`mdd.dom_diagnostics.dom_replacements`), one row each:
    before, re-seeded (the real train image) and at the end of the run. ``norm``: the
    :class:`mdd.data.Normalization` of the images. Without replacements, a figure
    that says so (and ``note``)."""
    reps = list(replacements)[:max_rows]
    if not reps:
        fig, axes = new_figure(1, 1, figsize=(6, 1.6))
        ax = axes[0, 0]
        ax.axis("off")
        _empty_note(ax, "DOM replaced no image in this run" + (f"\n{note}" if note else ""))
        return fig
    cols = ("before", "after", "final")
    heads = ("before", "re-seeded (real)", "end of run")
    fig, axes = new_figure(len(reps), 3, figsize=(3 * cell + 2.2, cell * len(reps) + 0.6),
                           layout="constrained")
    for r, rep in enumerate(reps):
        for j, key in enumerate(cols):
            ax = axes[r, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if rep.get(key) is None:
                continue
            img = to_pixels(torch.as_tensor(np.asarray(rep[key]))[None], norm)[0]
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255)
            if r == 0:
                ax.set_title(heads[j], fontsize=8)
        name = class_names[rep["label"]] if rep["label"] < len(class_names) else str(rep["label"])
        axes[r, 0].set_ylabel(f"it {rep['iteration']}\n#{rep['index']} ({_wrap(name, 14)})\n"
                              f"← train {rep['real_index']}", rotation=0, ha="right", va="center",
                              fontsize=7)
    if note:
        fig.suptitle(note, fontsize=9)
    return fig


def method_grids(panels: Sequence[tuple[str, np.ndarray, np.ndarray]], class_names: Sequence[str],
                 per_class: int | None = None, title: str = "", cell: float = 1.1) -> Figure:
    """Class-labelled image grids side by side, one per ``(title, pixels, labels)``."""
    if not panels:
        raise ValueError("no image sets to show")
    sizes = [grid_size(lab, len(class_names), per_class) for _, _, lab in panels]
    rows = max(r for r, _ in sizes)
    widths = [cell * c + 1.6 for _, c in sizes]
    fig = blank_figure((sum(widths), cell * rows + 0.9))
    subs = np.atleast_1d(fig.subfigures(1, len(panels), width_ratios=widths))
    for sub, (name, pixels, labels) in zip(subs, panels):
        draw_image_grid(sub, pixels, labels, class_names, per_class, title=name)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def evolution_figure(series: Sequence[tuple[str, Sequence[int], np.ndarray, np.ndarray]],
                     class_names: Sequence[str], per_class: int = 2, title: str = "",
                     cell: float = 1.0) -> Figure:
    """How synthetic images change over iterations: per ``(title, iterations, pixels
    T×N×H×W[×3], labels N)`` a block with up to ``per_class`` images of each class as
    rows and the iterations as columns."""
    if not series:
        raise ValueError("no snapshots to show")
    picks = []
    for _, _, _, labels in series:
        labels = np.asarray(labels).reshape(-1)
        picks.append(np.concatenate([np.flatnonzero(labels == c)[:per_class]
                                     for c in range(len(class_names))]).astype(int))
    heights = [cell * len(p) + 0.7 for p in picks]
    cols = max(len(its) for _, its, _, _ in series)
    fig = blank_figure((cell * cols + 2.0, sum(heights)))
    subs = np.atleast_1d(fig.subfigures(len(series), 1, height_ratios=heights))
    for sub, (name, its, pixels, labels), pick in zip(subs, series, picks):
        labels = np.asarray(labels).reshape(-1)
        axes = sub.subplots(len(pick), cols, squeeze=False)
        for r, i in enumerate(pick):
            for t in range(cols):
                _show(axes[r, t], pixels[t][i] if t < len(its) else None)
                if r == 0 and t < len(its):
                    axes[r, t].set_title(f"it {its[t]}", fontsize=8)
            c = int(labels[i])
            axes[r, 0].set_ylabel(f"#{i} {_wrap(class_names[c], 14)}", rotation=0, ha="right",
                                  va="center", fontsize=7)
        sub.suptitle(name, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def nearest_figure(panels: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
                   class_names: Sequence[str], max_images: int = 20, title: str = "",
                   cell: float = 1.1) -> Figure:
    """Each synthetic image (top row) above its nearest real training image (bottom row),
    one block per ``(title, synthetic pixels, nearest real pixels, labels, distances)``."""
    if not panels:
        raise ValueError("no image sets to show")
    cols = min(max_images, max(len(p[1]) for p in panels))
    fig = blank_figure((cell * cols + 1.8, (2 * cell + 0.9) * len(panels)))
    subs = np.atleast_1d(fig.subfigures(len(panels), 1))
    for sub, (name, syn, real, labels, dist) in zip(subs, panels):
        labels = np.asarray(labels).reshape(-1)
        axes = sub.subplots(2, cols, squeeze=False)
        for j in range(cols):
            for r, imgs in enumerate((syn, real)):
                _show(axes[r, j], imgs[j] if j < len(imgs) else None)
            if j < len(syn):
                axes[0, j].set_title(_wrap(class_names[int(labels[j])], 12), fontsize=6)
                axes[1, j].set_xlabel(f"d={float(dist[j]):.2f}", fontsize=6)
        axes[0, 0].set_ylabel("synthetic", fontsize=8)
        axes[1, 0].set_ylabel("nearest real", fontsize=8)
        sub.suptitle(name, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig
