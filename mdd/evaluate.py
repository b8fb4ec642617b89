"""Evaluation protocol (DESIGN.md §2): K fresh networks trained on a given set, scored
on val or test by ACC and AUC (MedMNIST's definitions) and balanced accuracy
(scikit-learn), mean ± std over the K networks. Network seeds come from disjoint
ranges per role (:mod:`mdd.seeds`): val networks, which choose, never report on test."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from medmnist.evaluator import getACC, getAUC
from sklearn.metrics import balanced_accuracy_score
from tqdm.auto import tqdm

from .alloc import tuned_malloc
from .augment import Augment, AugmentConfig
from .data import MappedImages, MedMNIST
from .nets import ARCHS, build_network
from .runtime import torch_threads
from .seeds import model_seeds, ranges


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"``/None → CUDA when present, else CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass
class EvalConfig:
    """Protocol of DESIGN.md §2. ``lr=None`` means 0.01 (trajectory methods pass α).
    ``seed`` is the distillation (or subset) seed s; the networks' own seeds are
    :func:`mdd.seeds.model_seeds` of s, by role (val or test). ``arch``: one of
    :data:`mdd.nets.ARCHS` (the distillation network is ``convnet``)."""

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
    arch: str = "convnet"

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {', '.join(ARCHS)}, got {self.arch!r}")
        from .validate import eval_config
        eval_config(self)   # models ≥ 1, epochs ≥ 1, lr > 0, …: one line naming the field

    def to_dict(self) -> dict:
        return asdict(self)


def train_network(x: torch.Tensor, y: torch.Tensor, data: MedMNIST, cfg: EvalConfig,
                  seed: int, lr: float | None = None, progress: bool = False) -> torch.nn.Module:
    """Train one fresh ``cfg.arch`` network on (x N×C×H×W, y N) with SGD; lr ×0.1 at half
    the epochs; ``seed`` is the network's own seed (init, batches, augmentation)."""
    device = resolve_device(cfg.device)
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = build_network(cfg.arch, data.n_channels, data.num_classes, data.size,
                        width=cfg.width).to(device)
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


def all_metrics(y_true: np.ndarray, scores: np.ndarray, task: str) -> dict[str, float]:
    """``acc``, ``auc`` (medmnist) and ``bacc`` (balanced accuracy: the mean of per-class
    recalls, scikit-learn; chance is 1/classes whatever the class balance) of softmax
    ``scores`` N×classes against labels N."""
    acc, auc = metrics(y_true, scores, task)
    bacc = balanced_accuracy_score(np.asarray(y_true).reshape(-1), np.asarray(scores).argmax(1))
    return {"acc": acc, "bacc": float(bacc), "auc": auc}


def evaluate_set(x: torch.Tensor, y: torch.Tensor, data: MedMNIST, cfg: EvalConfig | None = None,
                 lr: float | None = None, split: str = "test", progress: bool = True,
                 seeds: list[int] | None = None) -> dict:
    """Train ``cfg.models`` fresh networks on (x N×C×H×W, y N); score them on ``split``.

    Network seeds: ``seeds`` if given, else ``model_seeds(split role, cfg.seed, models)``
    (val and test networks never share one). Returns ``acc/bacc/auc`` ``_mean``/``_std``
    over the networks, per-network ``accs``/``baccs``/``aucs``, the ``seeds`` used
    (also as ``test_seeds`` or ``val_seeds``), the lr, the number of training images,
    the architecture and wall seconds.
    """
    cfg = cfg or EvalConfig()
    target = data.split(split)
    role = "val" if split == "val" else "test"
    seeds = list(seeds) if seeds is not None else model_seeds(role, cfg.seed, cfg.models)
    per: dict[str, list[float]] = {"acc": [], "bacc": [], "auc": []}
    t0 = time.perf_counter()
    with tuned_malloc(), torch_threads(cfg.threads):
        for s in tqdm(seeds, desc=f"evaluate on {split}", disable=not progress):
            net = train_network(x, y, data, cfg, seed=s, lr=lr)
            m = all_metrics(target.y.numpy(), predict(net, target.x, cfg.eval_batch), data.task)
            for k in per:
                per[k].append(m[k])
    out: dict = {"split": split}
    for k, v in per.items():
        out[f"{k}_mean"], out[f"{k}_std"] = float(np.mean(v)), float(np.std(v))
    out.update({
        "accs": per["acc"], "baccs": per["bacc"], "aucs": per["auc"],
        "seeds": seeds, f"{role}_seeds": seeds,
        "lr": lr if lr is not None else (cfg.lr if cfg.lr is not None else 0.01),
        "n_train": int(len(y)), "models": len(seeds), "epochs": cfg.epochs, "arch": cfg.arch,
        "seconds": round(time.perf_counter() - t0, 2),
        "device": str(resolve_device(cfg.device)),
    })
    return out


def protocol(cfg: EvalConfig) -> dict:
    """What a result file records of the protocol it was evaluated under."""
    return {"version": 2, "arch": cfg.arch, "models": cfg.models, "epochs": cfg.epochs,
            "momentum": cfg.momentum, "weight_decay": cfg.weight_decay,
            "batch_size": cfg.batch_size, "lr_decay": "x0.1 at epochs // 2",
            "augment": cfg.augment.to_dict(), "metrics": ["acc", "bacc", "auc"],
            "seed_ranges": ranges()}
