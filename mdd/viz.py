"""Figure and table helpers for the notebooks.

Every helper *returns* a matplotlib :class:`~matplotlib.figure.Figure` (a notebook shows
it inline by making it the cell's last expression) and never calls ``plt.show``. Figures
are created through pyplot so that Jupyter's inline display hooks are active, and closed
in pyplot at once, so they are not shown twice and do not accumulate; they can still be
drawn and saved. Nothing here needs a display: it works under the Agg backend.

:func:`save_figure` and :func:`save_table` write to stable names under a figures folder,
atomically (temp file, then ``os.replace``), so a reader never sees half a PNG. The
figures of a grid's runs are in :mod:`mdd.run_viz`, the engine's in :mod:`mdd.engine_viz`,
the benchmark's in :mod:`mdd.benchmark_viz`; they share the style helpers at the end.
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


def show_image(ax, img: np.ndarray | None) -> None:
    """One image cell: no ticks or frame; ``img`` uint8 H×W or H×W×3, or None (empty)."""
    ax.set_xticks([])
    ax.set_yticks([])
    for s in ax.spines.values():
        s.set_visible(False)
    if img is not None:
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255)


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
            show_image(axes[c, j], pixels[idx[j]] if j < len(idx) else None)
        axes[c, 0].set_ylabel(wrap_text(class_names[c]), rotation=0, ha="right", va="center",
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


def wrap_text(text: str, width: int = 18) -> str:
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
        ax.set_xticks(x, [wrap_text(c, 14) for c in classes], fontsize=9)
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


# ---------------------------------------------------------------- style shared by the figure modules
#: One colour per method, the same in every figure.
METHOD_COLORS = {"random": "tab:gray", "mtt": "tab:red", "datm": "tab:orange", "ptm": "tab:blue",
                 "ptm+dom": "tab:green", "ptm_dom": "tab:green", "full": "black"}


def method_color(method: str, k: int = 0) -> str:
    """The colour of ``method`` (a control ``random@m``: m's; others: the default cycle
    from ``k``)."""
    return METHOD_COLORS.get(method.split("@", 1)[-1], f"C{(k + 4) % 10}")


def is_control(method: str) -> bool:
    """``random@m``: the real subset at method m's learned α (drawn light, hatched)."""
    return method.startswith("random@")


def legend(ax, fontsize: int = 7, **kw) -> None:
    """A legend on ``ax`` when it has labelled artists (none otherwise)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=fontsize, **kw)


def empty_note(ax, text: str) -> None:
    """Grey centred ``text`` on an axes that has nothing to plot."""
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=9,
            color="0.35")
