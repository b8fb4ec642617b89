"""Figures of the privacy audit: nearest-pair grids, DCR histograms, ROC curves.

Each helper reads the audit's saved arrays (``arrays.npz``, :func:`mdd.privacy.load_arrays`)
and, where it needs them, its JSON, and returns a matplotlib Figure closed in pyplot
(the conventions of :mod:`mdd.viz`, whose figure constructors it uses).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from . import privacy_metrics as pm
from .viz import new_figure, show_image as _cell

TARGET_COLORS = {"distilled": "#1f77b4", "random": "#d62728", "full": "#7f7f7f"}
ROWS = (("syn", "synthetic"), ("init", "its init"), ("near_pixel", "nearest: pixel"),
        ("near_ssim", "nearest: SSIM"), ("near_feature", "nearest: feature"))


def nearest_pairs_figure(arrays: dict[str, np.ndarray], class_names: Sequence[str],
                         max_images: int = 20, title: str = "", cell: float = 1.05) -> Figure:
    """Columns: synthetic images (up to ``max_images``); rows: the image, its init, and
    its nearest training image by pixels, SSIM and features, each with its number. A
    red column title marks an image whose nearest image (in any space) is its init."""
    syn = arrays["syn"]
    n = min(len(syn), max_images)
    if n == 0:
        raise ValueError("no synthetic images to show")
    fig, axes = new_figure(len(ROWS), n, figsize=(cell * n + 1.6, cell * len(ROWS) + 0.9),
                           layout="constrained")
    labels = np.asarray(arrays["labels"]).reshape(-1)
    known = np.asarray(arrays["init_known"], bool)
    flagged = np.asarray(arrays.get("flagged", np.zeros(len(syn), bool)), bool)
    notes = {"init": lambda j: f"moved {arrays['moved_pixel'][j]:.2f}" if known[j] else "unknown",
             "near_pixel": lambda j: f"d={arrays['d_pixel'][j]:.2f}",
             "near_ssim": lambda j: f"s={arrays['s_ssim'][j]:.2f}",
             "near_feature": lambda j: f"cos={arrays['c_feature'][j]:.2f}"}
    for r, (key, name) in enumerate(ROWS):
        for j in range(n):
            ax = axes[r, j]
            _cell(ax, None if key == "init" and not known[j] else arrays[key][j])
            if key in notes:
                ax.set_xlabel(notes[key](j), fontsize=6)
            if r == 0:
                lab = class_names[int(labels[j])] if int(labels[j]) < len(class_names) else str(labels[j])
                ax.set_title(f"{j}: {lab[:12]}", fontsize=6, color="#c00000" if flagged[j] else "black")
        axes[r, 0].set_ylabel(name, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def dcr_figure(arrays: dict[str, np.ndarray], bins: int = 40, title: str = "") -> Figure:
    """Test→train nearest distances (histogram) against synthetic→train (ticks on the
    axis and their histogram), pixel and feature space, the test 5th percentile dashed."""
    fig, axes = new_figure(1, 2, figsize=(10, 3.4), layout="constrained")
    for ax, (space, syn_k, test_k, xl) in zip(axes[0], (
            ("pixel", "dcr_synthetic", "dcr_test", "nearest train image: pixel RMS distance"),
            ("feature", "dcr_feature_synthetic", "dcr_feature_test", "nearest train image: 1 − cosine"))):
        syn, test = np.asarray(arrays[syn_k], float), np.asarray(arrays[test_k], float)
        hi = max(float(test.max()) if test.size else 0, float(syn.max()) if syn.size else 0) or 1.0
        edges = np.linspace(0, hi * 1.02, bins + 1)
        ax.hist(test, edges, density=True, alpha=0.5, color="#7f7f7f", label=f"test → train (n={len(test)})")
        ax.hist(syn, edges, density=True, alpha=0.6, color=TARGET_COLORS["distilled"],
                label=f"synthetic → train (n={len(syn)})")
        ax.plot(syn, np.zeros_like(syn), "|", color=TARGET_COLORS["distilled"], ms=14, mew=1.5)
        if test.size:
            p5 = float(np.percentile(test, 5))
            share = float((syn < p5).mean()) if syn.size else 0.0
            ax.axvline(p5, ls="--", color="k", lw=1, label=f"test p5 ({100 * share:.0f} % of synthetic below)")
        ax.set_xlabel(xl, fontsize=8)
        ax.set_ylabel("density", fontsize=8)
        ax.set_title(space, fontsize=9)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def _attacks_in(arrays: dict[str, np.ndarray]) -> list[str]:
    found = {k.split("_", 2)[2] for k in arrays if k.startswith("score_")}
    return [a for a in ("loss", "lira", "distance") if a in found]


def roc_figure(arrays: dict[str, np.ndarray], attacks: Sequence[str] | None = None,
               title: str = "") -> Figure:
    """ROC curves (log-scale FPR, from 1/n non-members to 1) of each attack, one panel
    per attack: every target on all members (solid) and on the ``seeds`` members
    (dashed), the chance diagonal dotted."""
    attacks = list(attacks or _attacks_in(arrays))
    if not attacks:
        raise ValueError("no attack scores in the arrays")
    member = np.asarray(arrays["member"], bool)
    n_train = int(member.sum())
    seeds = np.asarray(arrays["seeds_mask"], bool)
    n_neg = int((~member).sum())
    lo = 1.0 / max(1, n_neg)
    fig, axes = new_figure(1, len(attacks), figsize=(4.2 * len(attacks), 3.8), layout="constrained")
    for ax, attack in zip(axes[0], attacks):
        for target, color in TARGET_COLORS.items():
            key = f"score_{target}_{attack}"
            if key not in arrays:
                continue
            s = np.asarray(arrays[key], float)
            mem, non = s[:n_train], s[n_train:]
            for mask, ls, name in ((np.ones(n_train, bool), "-", "all"), (seeds, "--", "seeds")):
                if not mask.any() or (name == "seeds" and target == "full"):
                    continue
                f, t = pm.roc_curve_points(mem[mask], non)
                auc = _auc(mem[mask], non)
                ax.plot(np.maximum(f, lo), t, ls, color=color, lw=1.4,
                        label=f"{target} · {name} (AUC {auc:.2f})")
        grid = np.logspace(np.log10(lo), 0, 50)
        ax.plot(grid, grid, ":", color="k", lw=1)
        ax.axvline(pm.FPR, color="#bbbbbb", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlim(lo, 1)
        ax.set_ylim(0, 1.01)
        ax.set_xlabel("false-positive rate (log)", fontsize=8)
        ax.set_ylabel("true-positive rate", fontsize=8)
        ax.set_title(f"{attack} attack", fontsize=9)
        ax.legend(fontsize=6, loc="lower right")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score
    return float(roc_auc_score(np.r_[np.ones(len(pos)), np.zeros(len(neg))], np.r_[pos, neg]))


def audit_figures(result: dict, arrays: dict[str, np.ndarray]) -> dict[str, Figure]:
    """The audit's three figures by file stem: ``nearest``, ``dcr``, ``roc``."""
    tag = f"{result['flag']} ipc {result['ipc']} {result['method']}"
    return {"nearest": nearest_pairs_figure(arrays, result.get("class_names") or [],
                                            title=f"{tag}: synthetic images and their nearest real ones"),
            "dcr": dcr_figure(arrays, title=f"{tag}: distance to closest record"),
            "roc": roc_figure(arrays, title=f"{tag}: membership inference")}
