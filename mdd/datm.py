"""DATM's initialisation levers (Guo et al., ICLR 2024, "Towards lossless dataset
distillation via difficulty-aligned trajectory matching").

DATM starts the synthetic set from real images that an expert classifies correctly and
learns soft labels, initialised to that expert's logits. The matching side of soft
labels (the soft-target cross-entropy and ∂L/∂labels) is in :func:`mdd.matching.match`,
which accepts M×K float label logits wherever it accepts M class indices; this module
only provides the two starting points:

* :func:`expert_soft_labels` — label logits M×K from an expert at θ;
* :func:`correct_subset` — like :func:`mdd.baselines.random_subset`, restricted to
  correctly classified training images.
"""
from __future__ import annotations

import warnings

import torch

from .data import MedMNIST
from .matching import Student


@torch.no_grad()
def _logits(student: Student, theta: torch.Tensor, x, batch: int) -> torch.Tensor:
    """Expert logits N×K for images x (N×C×H×W tensor or MappedImages), in chunks of
    ``batch`` so that a whole training split never sits in one activation tensor."""
    if batch < 1:
        raise ValueError(f"batch must be ≥ 1, got {batch}")
    theta = theta.detach()
    out = [student.forward(theta, x[i:i + batch].to(theta.device, theta.dtype))
           for i in range(0, len(x), batch)]
    if not out:
        return torch.empty(0, student.layout.shapes[-1][0], dtype=theta.dtype, device=theta.device)
    return torch.cat(out)


def expert_soft_labels(student: Student, theta: torch.Tensor, x: torch.Tensor,
                       temperature: float = 1.0, batch: int = 1024) -> torch.Tensor:
    """DATM's initial learnable labels: the expert's logits at θ divided by ``temperature``.

    student: the expert's :class:`~mdd.matching.Student`; theta: its flat parameters P;
    x: images M×C×H×W (normalized, e.g. the initial synthetic set). Returns detached
    label logits M×K (theta's dtype and device), ready to pass as ``labels`` to
    :func:`mdd.matching.match`; the training target is softmax(logits). A temperature
    above 1 softens the target, below 1 sharpens it.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return _logits(student, theta, x, batch) / temperature


def correct_subset(data: MedMNIST, ipc: int, seed: int, student: Student, theta: torch.Tensor,
                   batch: int = 1024) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``ipc`` random training images per class among those the expert at θ classifies
    correctly (seeded; DATM's initialisation).

    Returns (x ipc·K×C×H×W, y ipc·K, indices into train), class by class, as
    :func:`mdd.baselines.random_subset` does (same generator use, so with an expert that
    is right everywhere the draw is random_subset's). A class with fewer than ``ipc``
    correct images warns and keeps all its correct ones, filling up with random
    misclassified images of that class; a class with fewer than ``ipc`` images at all
    raises ValueError.
    """
    y = data.train.y
    pred = _logits(student, theta, data.train.x, batch).argmax(1).cpu()
    correct = pred == y.cpu()
    g = torch.Generator().manual_seed(seed)
    picks = []
    for c in range(data.num_classes):
        in_class = (y.cpu() == c)
        pool = (in_class & correct).nonzero().flatten()
        if len(pool) >= ipc:
            picks.append(pool[torch.randperm(len(pool), generator=g)[:ipc]])
            continue
        rest = (in_class & ~correct).nonzero().flatten()
        if len(pool) + len(rest) < ipc:
            raise ValueError(f"{data.flag} class {c} ({data.class_names[c]}) has only "
                             f"{len(pool) + len(rest)} training images, fewer than ipc={ipc}")
        warnings.warn(f"{data.flag} class {c} ({data.class_names[c]}): the expert classifies "
                      f"only {len(pool)} of {len(pool) + len(rest)} training images correctly, "
                      f"fewer than ipc={ipc}; filling up with misclassified ones")
        fill = rest[torch.randperm(len(rest), generator=g)[:ipc - len(pool)]]
        picks.append(torch.cat([pool[torch.randperm(len(pool), generator=g)], fill]))
    idx = torch.cat(picks).to(y.device)
    return data.train.x[idx], y[idx], idx
