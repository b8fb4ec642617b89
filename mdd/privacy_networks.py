"""Networks of the privacy audit (:mod:`mdd.privacy`): the targets an attacker trains on
a released set, the shadow networks of the likelihood-ratio attack and the feature
network; their per-example outputs, cached on disk by what determines them.

Seeds: audit networks use their own range, disjoint from distillation, val and test
networks (:mod:`mdd.seeds`): 3 000 000 + 1 000·s + (k for target networks, 200 + k for
shadows, 999 for the feature network).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from . import __version__
from . import data as mdata
from . import privacy_metrics as pm
from .evaluate import EvalConfig, resolve_device, train_network
from .io import atomic_path, write_json

if TYPE_CHECKING:
    from .privacy import AuditConfig

SEED_BASE, SHADOW_OFFSET, FEATURE_OFFSET, SEED_STRIDE = 3_000_000, 200, 999, 1_000


def audit_seed(seed: int, offset: int) -> int:
    """Seed of audit network ``offset`` (see the module doc) for artifact seed ``seed``."""
    return SEED_BASE + SEED_STRIDE * int(seed) + int(offset)


@dataclass
class Target:
    """A training set whose networks are attacked: x N×C×H×W normalised, y N."""

    kind: str
    x: torch.Tensor
    y: torch.Tensor
    lr: float
    epochs: int
    models: int
    key: dict = field(default_factory=dict)   # what identifies its networks in the cache


def _eval_config(cfg: AuditConfig, epochs: int) -> EvalConfig:
    return EvalConfig(models=1, epochs=epochs, device=cfg.device, threads=None)


def _cache_key(target: Target, data: mdata.MedMNIST, cfg: AuditConfig, seeds: list[int],
               role: str) -> dict:
    ec = _eval_config(cfg, target.epochs).to_dict()
    for k in ("device", "threads", "models", "seed"):
        ec.pop(k, None)
    return {"role": role, **target.key, "flag": data.flag, "size": data.size,
            "data_md5": mdata.expected_md5(data.flag, data.size), "n_train": int(len(target.y)),
            "lr": target.lr, "epochs": target.epochs, "seeds": seeds, "protocol": ec,
            "device": resolve_device(cfg.device).type, "torch": torch.__version__,
            "mdd": __version__}


def _cached(cache: Path | None, key: dict, compute: Callable[[], dict[str, np.ndarray]],
            on_hit: Callable[[], object] | None = None) -> dict[str, np.ndarray]:
    """``compute()`` (a dict of arrays), stored under ``cache`` by the hash of ``key``;
    ``on_hit()`` is called when the cache answers instead."""
    if cache is None:
        return compute()
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]
    path = cache / f"{key['role']}-{key.get('kind', 'x')}-{digest}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                out = {k: z[k] for k in z.files}
            if on_hit is not None:
                on_hit()
            return out
        except (OSError, ValueError):   # a damaged cache file is recomputed
            pass
    out = compute()
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **out)
    write_json(path.with_suffix(".json"), key)
    return out


def _score_networks(xs: list[torch.Tensor], ys: list[torch.Tensor], seeds: list[int],
                    data: mdata.MedMNIST, cfg: AuditConfig, lr: float, epochs: int,
                    bar: tqdm) -> dict[str, np.ndarray]:
    """Train one network per seed (the i-th on xs[i], ys[i]) and score every candidate
    (train then test split): ``phi``/``loss`` K×(N_train+N_test), ``test_acc`` K."""
    ec = _eval_config(cfg, epochs)
    train, test = data.train, data.test
    phi, loss, acc = [], [], []
    for x, y, s in zip(xs, ys, seeds):
        net = train_network(x, y, data, ec, seed=s, lr=lr)
        a, b = pm.example_scores(net, train.x, train.y), pm.example_scores(net, test.x, test.y)
        phi.append(np.r_[a["phi"], b["phi"]])
        loss.append(np.r_[a["loss"], b["loss"]])
        acc.append(float(b["correct"].mean()))
        bar.update(1)
    return {"phi": np.stack(phi), "loss": np.stack(loss), "test_acc": np.array(acc)}


def balanced_indices(y: torch.Tensor, per_class: int, gen: torch.Generator) -> torch.Tensor:
    """``per_class`` random indices of each class of labels ``y`` (fewer where a class
    has fewer), class by class."""
    picks = []
    for c in torch.unique(y).tolist():
        pool = (y == c).nonzero().flatten()
        picks.append(pool[torch.randperm(len(pool), generator=gen)[:per_class]])
    return torch.cat(picks)


def shadow_sets(target: Target, data: mdata.MedMNIST, seeds: list[int]) -> list[torch.Tensor]:
    """Val indices each shadow trains on: a class-balanced random subset of the target's
    size (ipc per class) for a small set, a random half of val for the full training set
    (val is smaller than train: the shadows cannot match its size)."""
    val_y = data.val.y
    out = []
    for s in seeds:
        g = torch.Generator().manual_seed(s)
        if target.kind == "full":
            out.append(torch.randperm(len(val_y), generator=g)[: max(1, len(val_y) // 2)])
        else:
            per = max(1, int(np.ceil(len(target.y) / max(1, data.num_classes))))
            out.append(balanced_indices(val_y, per, g))
    return out


def run_target(target: Target, data: mdata.MedMNIST, cfg: AuditConfig, cache: Path | None,
               bar: tqdm) -> dict[str, np.ndarray]:
    """Target networks' outputs, and with ``cfg.shadow`` the shadows' (``shadow_phi``)."""
    seeds = [audit_seed(cfg.seed, k) for k in range(target.models)]
    out = dict(_cached(cache, _cache_key(target, data, cfg, seeds, "target"),
                       lambda: _score_networks([target.x] * len(seeds), [target.y] * len(seeds),
                                               seeds, data, cfg, target.lr, target.epochs, bar),
                       lambda: bar.update(len(seeds))))
    if cfg.shadow:
        sseeds = [audit_seed(cfg.seed, SHADOW_OFFSET + k) for k in range(cfg.shadow)]
        epochs = cfg.shadow_epochs or target.epochs
        sets = shadow_sets(target, data, sseeds)
        key = _cache_key(dataclasses.replace(target, epochs=epochs, key={"kind": f"shadow-{target.kind}"}),
                         data, cfg, sseeds, "shadow")
        key["shadow_sets"] = [hashlib.sha256(s.numpy().tobytes()).hexdigest()[:16] for s in sets]
        sh = _cached(cache, key, lambda: _score_networks(
            [data.val.x[i] for i in sets], [data.val.y[i] for i in sets], sseeds, data, cfg,
            target.lr, epochs, bar), lambda: bar.update(len(sseeds)))
        out["shadow_phi"], out["shadow_n"] = sh["phi"], np.array([len(s) for s in sets])
    return out


def feature_network(data: mdata.MedMNIST, cfg: AuditConfig, cache: Path | None) -> torch.nn.Module:
    """A ConvNet trained on the val split only (§2 recipe, lr 0.01): its features never
    saw a training image. Cached as safetensors (weights only)."""
    from safetensors.torch import load_file, save_file

    from .nets import ConvNet
    seed = audit_seed(cfg.seed, FEATURE_OFFSET)
    ec = _eval_config(cfg, cfg.feature_epochs)
    key = {"role": "features", "kind": "val", "flag": data.flag, "size": data.size,
           "data_md5": mdata.expected_md5(data.flag, data.size), "epochs": cfg.feature_epochs,
           "seed": seed, "device": resolve_device(cfg.device).type, "torch": torch.__version__}
    path = None
    if cache is not None:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
        path = cache / f"features-{data.flag}-{digest}.safetensors"
        if path.is_file():
            net = ConvNet(data.n_channels, data.num_classes, data.size, width=ec.width)
            net.load_state_dict(load_file(str(path)))
            return net.to(resolve_device(cfg.device))
    net = train_network(data.val.x, data.val.y, data, ec, seed=seed, lr=0.01)
    if path is not None:
        with atomic_path(path) as tmp:
            save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, str(tmp))
    return net
