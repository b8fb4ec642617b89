"""What an expert trajectory looks like, epoch by epoch: accuracy on a split and the
parameter distance from init ``||θ_t − θ_0||`` (notebook 01, and the later notebooks
that pick matching segments).

Per-epoch accuracy is taken from the manifest when an expert entry records it (see
:func:`manifest_history`); otherwise each epoch's flat parameters are loaded into
``ExpertSet.net()`` and scored on the split, which is exact (the ConvNet has no
running statistics) and cheap at MedMNIST's val sizes.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .data import MedMNIST
from .evaluate import metrics, predict
from .experts import ExpertSet
from .nets import load_flat


def param_distance(trajectory: torch.Tensor) -> np.ndarray:
    """``||θ_t − θ_0||₂`` for every row t of a (T+1)×P trajectory."""
    if trajectory.ndim != 2:
        raise ValueError(f"trajectory must be (T+1)×P, got shape {tuple(trajectory.shape)}")
    t = trajectory.double()
    return (t - t[0]).norm(dim=1).numpy()


def manifest_history(entry: dict, split: str = "val") -> list[float] | None:
    """Per-epoch accuracies (epochs 0…T) recorded in a manifest entry, if any.

    Recognized: ``"<split>_acc_per_epoch": [a_0, …, a_T]`` or ``"history": [{"epoch": t,
    "<split>_acc": a}, …]`` covering epochs 0…T. Anything else → None (compute instead).
    """
    per_epoch = entry.get(f"{split}_acc_per_epoch")
    if isinstance(per_epoch, list) and per_epoch:
        return [float(a) for a in per_epoch]
    history = entry.get("history")
    if isinstance(history, list) and history and all(f"{split}_acc" in h for h in history):
        ordered = sorted(history, key=lambda h: h["epoch"])
        if [h["epoch"] for h in ordered] == list(range(len(ordered))):
            return [float(h[f"{split}_acc"]) for h in ordered]
    return None


@torch.no_grad()
def epoch_scores(experts: ExpertSet, i: int, data: MedMNIST, split: str = "val",
                 batch: int = 1024) -> tuple[list[float], list[float]]:
    """(ACC, AUC) on ``split`` of expert ``i`` at every stored epoch 0…T."""
    _check_match(experts, data)
    target = data.split(split)
    net = experts.net()
    accs, aucs = [], []
    for theta in experts.trajectory(i):
        acc, auc = metrics(target.y.numpy(), predict(load_flat(net, theta), target.x, batch),
                           data.task)
        accs.append(acc)
        aucs.append(auc)
    return accs, aucs


def _check_match(experts: ExpertSet, data: MedMNIST) -> None:
    m = experts.manifest
    if (m["flag"], m["size"]) != (data.flag, data.size):
        raise ValueError(f"experts in {experts.folder} are for {m['flag']} at {m['size']}px, "
                         f"not {data.flag} at {data.size}px")


def trajectory_table(experts: ExpertSet, data: MedMNIST, split: str = "val",
                     use_manifest: bool = True) -> pd.DataFrame:
    """Long table, one row per expert and epoch: flag, expert, seed, epoch,
    ``<split>_acc``, ``<split>_auc`` (NaN when taken from the manifest),
    ``param_distance`` and ``source`` ("manifest" or "computed")."""
    rows = []
    for i, entry in enumerate(experts.entries):
        traj = experts.trajectory(i)
        dist = param_distance(traj)
        accs = manifest_history(entry, split) if use_manifest else None
        if accs is not None and len(accs) == len(traj):
            aucs, source = [float("nan")] * len(accs), "manifest"
        else:
            (accs, aucs), source = epoch_scores(experts, i, data, split), "computed"
        for t in range(len(traj)):
            rows.append({"flag": data.flag, "expert": entry.get("id", i),
                         "seed": entry.get("seed"), "epoch": t, f"{split}_acc": accs[t],
                         f"{split}_auc": aucs[t], "param_distance": float(dist[t]),
                         "source": source})
    return pd.DataFrame(rows)


def summary(table: pd.DataFrame, split: str = "val") -> pd.DataFrame:
    """Per epoch over experts: mean/std of accuracy and of the distance from init."""
    col = f"{split}_acc"
    g = table.groupby("epoch")
    out = pd.DataFrame({f"{col}_mean": g[col].mean(), f"{col}_std": g[col].std(ddof=0),
                        "param_distance_mean": g["param_distance"].mean(),
                        "param_distance_std": g["param_distance"].std(ddof=0),
                        "experts": g["expert"].nunique()})
    return out.reset_index()
