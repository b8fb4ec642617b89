"""Evaluation protocol (DESIGN.md §2): K fresh ConvNets trained on a given set,
test ACC and AUC with MedMNIST's metric definitions, mean ± std over the K runs."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from medmnist.evaluator import getACC, getAUC
from tqdm.auto import tqdm

from .alloc import tuned_malloc
from .augment import Augment, AugmentConfig
from .data import MappedImages, MedMNIST
from .nets import ConvNet
from .runtime import torch_threads


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"``/None → CUDA when present, else CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass
class EvalConfig:
    """Protocol of DESIGN.md §2. ``lr=None`` means 0.01 (trajectory methods pass α)."""

    models: int = 5
    epochs: int = 300
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 256
    width: int = 128
    seed: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    device: str = "auto"
    eval_batch: int = 1024
    threads: int | None = None    # torch threads (None: leave as is); 1 for a few images

    def to_dict(self) -> dict:
        return asdict(self)


def train_network(x: torch.Tensor, y: torch.Tensor, data: MedMNIST, cfg: EvalConfig,
                  seed: int, lr: float | None = None, progress: bool = False) -> ConvNet:
    """Train one fresh ConvNet on (x N×C×H×W, y N) with SGD; lr ×0.1 at half the epochs."""
    device = resolve_device(cfg.device)
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = ConvNet(data.n_channels, data.num_classes, data.size, width=cfg.width).to(device)
    aug = Augment(data.flag, cfg.augment).to(device)
    lr = lr if lr is not None else (cfg.lr if cfg.lr is not None else 0.01)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [cfg.epochs // 2], 0.1)
    n = len(y)
    mapped = isinstance(x, MappedImages)
    if not mapped:
        x = x.to(device)
    y = y.to(device)
    net.train()
    for _ in tqdm(range(cfg.epochs), desc=f"train seed {seed}", leave=False, disable=not progress):
        for idx in torch.randperm(n, generator=g).split(cfg.batch_size):
            xb = x[idx].to(device) if mapped else x[idx]
            loss = F.cross_entropy(net(aug(xb)), y[idx.to(device)])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
    return net


@torch.no_grad()
def predict(net: torch.nn.Module, x: torch.Tensor | MappedImages, batch: int = 1024) -> np.ndarray:
    """Softmax scores N×classes."""
    net.eval()
    device = next(net.parameters()).device
    out = [F.softmax(net(x[i:i + batch].to(device)), dim=1).cpu()
           for i in range(0, len(x), batch)]
    return torch.cat(out).numpy()


def metrics(y_true: np.ndarray, scores: np.ndarray, task: str) -> tuple[float, float]:
    """(ACC, AUC) by medmnist's definitions; ``task`` as in MedMNIST.task."""
    y_true = np.asarray(y_true).reshape(-1, 1)
    return float(getACC(y_true, scores, task)), float(getAUC(y_true, scores, task))


def evaluate_set(x: torch.Tensor, y: torch.Tensor, data: MedMNIST, cfg: EvalConfig | None = None,
                 lr: float | None = None, split: str = "test", progress: bool = True) -> dict:
    """Train ``cfg.models`` fresh ConvNets on (x, y); score them on ``split``.

    Returns ``acc_mean, acc_std, auc_mean, auc_std`` plus per-model ``accs``/``aucs``,
    the lr used, the number of training images and wall seconds.
    """
    cfg = cfg or EvalConfig()
    target = data.split(split)
    accs, aucs = [], []
    t0 = time.perf_counter()
    with tuned_malloc(), torch_threads(cfg.threads):
        for k in tqdm(range(cfg.models), desc=f"evaluate on {split}", disable=not progress):
            net = train_network(x, y, data, cfg, seed=cfg.seed + k, lr=lr)
            acc, auc = metrics(target.y.numpy(), predict(net, target.x, cfg.eval_batch), data.task)
            accs.append(acc)
            aucs.append(auc)
    return {
        "split": split,
        "acc_mean": float(np.mean(accs)), "acc_std": float(np.std(accs)),
        "auc_mean": float(np.mean(aucs)), "auc_std": float(np.std(aucs)),
        "accs": accs, "aucs": aucs,
        "lr": lr if lr is not None else (cfg.lr if cfg.lr is not None else 0.01),
        "n_train": int(len(y)), "models": cfg.models, "epochs": cfg.epochs,
        "seconds": round(time.perf_counter() - t0, 2),
        "device": str(resolve_device(cfg.device)),
    }
