"""Figures of a grid's runs (notebooks 02–04): matching loss, α and skips per iteration,
accuracy bands, within-class similarity and DOM's re-seeds, and the images themselves.

Each helper takes the tables or arrays that :mod:`mdd.diagnostics`,
:mod:`mdd.dom_diagnostics` and :mod:`mdd.image_diagnostics` build and *returns* a
Figure (:mod:`mdd.viz` says how figures are made and saved); colours follow
:data:`mdd.viz.METHOD_COLORS`, line styles the seed.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from .pixels import to_pixels
from .viz import (blank_figure, draw_image_grid, empty_note, grid_size, legend, method_color,
                  new_figure, show_image, wrap_text)

_SEED_STYLES = ("-", "--", ":", "-.")


def _by_run(logs: pd.DataFrame):
    """(method, seed, k-th method, j-th seed, rows sorted by iteration) for each run."""
    methods = list(dict.fromkeys(logs["method"]))
    for k, method in enumerate(methods):
        sub = logs[logs["method"] == method]
        for j, seed in enumerate(sorted(sub["seed"].unique())):
            yield method, seed, k, j, sub[sub["seed"] == seed].sort_values("iteration")


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
    legend(loss_ax, ncol=2)
    legend(win_ax, fontsize=6, ncol=4, loc="upper left")
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
    legend(ax, ncol=2)
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
        empty_note(ax, "no skipped or non-finite updates in any run")
    ax.set(xlabel="iteration", ylabel="updates (cumulative)",
           title=title or "Skipped updates (cumulative; non-finite: faint)")
    legend(ax, fontsize=6, ncol=2, loc="upper left")
    legend(bar_ax, fontsize=6, loc="upper right")
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
    legend(ax)
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
                empty_note(ax, "no images")
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
                ax.set_title(wrap_text(name, 22), fontsize=8)
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
    legend(ratio_ax)
    legend(sim_ax, fontsize=6, ncol=2)
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
        empty_note(ax, "DOM replaced no image in this run" + (f"\n{note}" if note else ""))
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
        axes[r, 0].set_ylabel(f"it {rep['iteration']}\n#{rep['index']} ({wrap_text(name, 14)})\n"
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
                show_image(axes[r, t], pixels[t][i] if t < len(its) else None)
                if r == 0 and t < len(its):
                    axes[r, t].set_title(f"it {its[t]}", fontsize=8)
            c = int(labels[i])
            axes[r, 0].set_ylabel(f"#{i} {wrap_text(class_names[c], 14)}", rotation=0, ha="right",
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
                show_image(axes[r, j], imgs[j] if j < len(imgs) else None)
            if j < len(syn):
                axes[0, j].set_title(wrap_text(class_names[int(labels[j])], 12), fontsize=6)
                axes[1, j].set_xlabel(f"d={float(dist[j]):.2f}", fontsize=6)
        axes[0, 0].set_ylabel("synthetic", fontsize=8)
        axes[1, 0].set_ylabel("nearest real", fontsize=8)
        sub.suptitle(name, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig
