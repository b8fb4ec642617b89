"""Baselines every table shows: a class-balanced random real subset at the same ipc,
and the full training set."""
from __future__ import annotations

import torch

from .data import MedMNIST


def random_subset(data: MedMNIST, ipc: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``ipc`` random training images per class (seeded).

    Returns (x ipc·K×C×H×W, y ipc·K, indices into train), class by class.
    """
    g = torch.Generator().manual_seed(seed)
    y = data.train.y
    picks = []
    for c in range(data.num_classes):
        pool = (y == c).nonzero().flatten()
        if len(pool) < ipc:
            raise ValueError(f"{data.flag} class {c} ({data.class_names[c]}) has only "
                             f"{len(pool)} training images, fewer than ipc={ipc}")
        picks.append(pool[torch.randperm(len(pool), generator=g)[:ipc]])
    idx = torch.cat(picks)
    return data.train.x[idx], y[idx], idx


def full(data: MedMNIST) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole training set (x N×C×H×W, y N)."""
    return data.train.x, data.train.y
