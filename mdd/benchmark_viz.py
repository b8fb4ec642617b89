"""The benchmark grid's figures (notebook 05): grouped bars per ipc and lines against
ipc, one column per flag, one row per metric, mean ± std over seeds, the full-data
ceiling as a dashed line. A ``random@m`` control is drawn in m's colour, light and
hatched (dotted in the lines). ``results``: :func:`mdd.benchmark.cell_means`.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .methods import method_rank
from .viz import is_control, method_color, new_figure


def _bench_axes(results: pd.DataFrame, metrics: Sequence[str]) -> tuple[Figure, np.ndarray, list[str], list[str]]:
    """The benchmark plots' frame: one column per flag, one row per metric; the flags and
    the methods in table order."""
    if results.empty:
        raise ValueError("no benchmark results to plot")
    flags = sorted(results["flag"].dropna().unique())
    methods = sorted(results["method"].unique(), key=method_rank)
    fig, axes = new_figure(len(metrics), len(flags), figsize=(5.2 * len(flags), 3.2 * len(metrics)))
    return fig, axes, flags, methods


def benchmark_bars(results: pd.DataFrame, metrics: Sequence[str] = ("acc", "auc")) -> Figure:
    """Grouped bars (mean ± std) per ipc and method, one column per flag, one row per
    metric; the full-data ceiling as a dashed line. ``results``: the benchmark table."""
    fig, axes, flags, methods = _bench_axes(results, metrics)
    for col, flag in enumerate(flags):
        sub = results[results["flag"] == flag]
        ipcs = sorted(int(i) for i in sub["ipc"].dropna().unique())
        bars = [m for m in methods if m != "full" and m in set(sub["method"])]
        width = 0.8 / max(1, len(bars))
        for row, metric in enumerate(metrics):
            ax = axes[row, col]
            x = np.arange(len(ipcs))
            for k, m in enumerate(bars):
                vals = [sub[(sub["method"] == m) & (sub["ipc"] == i)] for i in ipcs]
                mean = [float(v[f"{metric}_mean"].iloc[0]) if len(v) else np.nan for v in vals]
                std = [float(v[f"{metric}_std"].iloc[0]) if len(v) else 0.0 for v in vals]
                ctl = is_control(m)
                ax.bar(x + (k - (len(bars) - 1) / 2) * width, mean, width, yerr=std, capsize=2,
                       color=method_color(m, k), alpha=0.4 if ctl else 1.0, hatch="//" if ctl else None,
                       edgecolor="white" if ctl else None, label=m)
            full = sub[sub["method"] == "full"]
            if len(full):
                ax.axhline(float(full[f"{metric}_mean"].iloc[0]), color="black", ls="--", lw=1,
                           label="full data")
            ax.set_xticks(x, [f"ipc {i}" for i in ipcs])
            ax.set(ylabel=metric.upper(), title=f"{flag}: {metric.upper()} (mean ± std over seeds)")
            ax.grid(alpha=0.3, axis="y")
    _figure_legend(fig, axes)
    return fig


def _figure_legend(fig: Figure, axes: np.ndarray) -> None:
    """One legend for all panels, below them (inside a panel it would hide bars)."""
    handles, labels = {}, []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in handles:
                handles[lab] = h
                labels.append(lab)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    if labels:
        fig.legend([handles[lab] for lab in labels], labels, loc="lower center",
                   ncol=min(len(labels), 6), fontsize=8, frameon=False)


def benchmark_lines(results: pd.DataFrame, metrics: Sequence[str] = ("acc", "auc")) -> Figure:
    """Each metric (mean ± std) against ipc, one line per method, one column per flag;
    the full-data ceiling as a dashed line."""
    fig, axes, flags, methods = _bench_axes(results, metrics)
    for col, flag in enumerate(flags):
        sub = results[results["flag"] == flag]
        for row, metric in enumerate(metrics):
            ax = axes[row, col]
            for k, m in enumerate(methods):
                rows = sub[(sub["method"] == m)]
                if m == "full":
                    if len(rows):
                        ax.axhline(float(rows[f"{metric}_mean"].iloc[0]), color="black", ls="--",
                                   lw=1, label="full data")
                    continue
                rows = rows.dropna(subset=["ipc"]).sort_values("ipc")
                if rows.empty:
                    continue
                ctl = is_control(m)
                ax.errorbar(rows["ipc"].astype(int), rows[f"{metric}_mean"], yerr=rows[f"{metric}_std"],
                            marker="o", ms=4, capsize=2, color=method_color(m, k), label=m,
                            ls=":" if ctl else "-", mfc="white" if ctl else None, alpha=0.6 if ctl else 1.0)
            ax.set_xscale("log")
            ipcs = sorted(int(i) for i in sub["ipc"].dropna().unique())
            if ipcs:
                ax.set_xticks(ipcs, [str(i) for i in ipcs])
                ax.minorticks_off()
            ax.set(xlabel="images per class", ylabel=metric.upper(),
                   title=f"{flag}: {metric.upper()} against ipc")
            ax.grid(alpha=0.3)
    _figure_legend(fig, axes)
    return fig
