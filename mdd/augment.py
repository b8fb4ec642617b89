"""Differentiable augmentation (DSA-style) built on kornia.

Applied to normalized images, inside the distillation unroll too, so it must pass
second-order gradients and must not clip: kornia's colour ops clip to [0, 1] by
default, which would zero the gradient of every synthetic pixel outside that range.
Horizontal flips are used only where the modality allows them (chest X-rays and CT
have a laterality a flip would break).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import kornia.augmentation as K
import torch
from torch import nn

#: Flags whose images keep their meaning under a left-right flip.
FLIP_OK = frozenset({"pathmnist", "dermamnist", "octmnist", "retinamnist", "breastmnist",
                     "bloodmnist", "tissuemnist"})


@dataclass
class AugmentConfig:
    """DSA's strategy ``color_crop_cutout_flip_scale_rotate``, expressed with kornia.

    ``flip=None`` decides by modality (:data:`FLIP_OK`).
    """

    enabled: bool = True
    brightness: float = 0.2   # additive shift, ±
    contrast: float = 0.2     # multiplicative around the mean, 1 ±
    rotate: float = 15.0      # degrees, ±
    translate: float = 0.125  # DSA's crop: shift by up to 1/8 of the side
    scale: float = 1.2        # zoom in [1/scale, scale]
    cutout: float = 0.5       # side of the zeroed square, as a fraction of the image side
    flip: bool | None = None

    def to_dict(self) -> dict:
        return asdict(self)


class Augment(nn.Module):
    """Random differentiable augmentation of N×C×H×W normalized images.

    ``aug(x, seed=s)`` draws its random parameters from a private generator seeded
    with ``s``, so an unroll can replay exactly the same augmentation.
    """

    def __init__(self, flag: str | None = None, config: AugmentConfig | None = None):
        super().__init__()
        cfg = config or AugmentConfig()
        self.config = cfg
        flip = cfg.flip if cfg.flip is not None else (flag in FLIP_OK)
        self.flip = flip
        ops: list[nn.Module] = []
        if cfg.enabled:
            ops = [
                K.RandomBrightness((1 - cfg.brightness, 1 + cfg.brightness), clip_output=False, p=1.0),
                K.RandomContrast((1 - cfg.contrast, 1 + cfg.contrast), clip_output=False, p=1.0),
            ]
            if cfg.rotate or cfg.translate or cfg.scale != 1.0:
                ops.append(K.RandomAffine(degrees=cfg.rotate, translate=(cfg.translate, cfg.translate),
                                          scale=(1 / cfg.scale, cfg.scale), p=1.0))
            if cfg.cutout > 0:
                ops.append(K.RandomErasing(scale=(cfg.cutout ** 2, cfg.cutout ** 2), ratio=(1.0, 1.0),
                                           value=0.0, p=1.0))
            if flip:
                ops.append(K.RandomHorizontalFlip(p=0.5))
        self.ops = K.AugmentationSequential(*ops) if ops else None

    def forward(self, x: torch.Tensor, seed: int | None = None) -> torch.Tensor:
        if self.ops is None:
            return x
        if seed is None:
            return self.ops(x)
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            return self.ops(x)
