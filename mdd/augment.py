"""Differentiable augmentation (DSA-style) built on kornia.

Two modes (``AugmentConfig.mode``):

``dsa`` (default)
    DSA's single mode, as MTT runs it: each call draws **one** operation group —
    colour (brightness and contrast), crop (shift), cutout, flip, scale or rotate —
    from the call's seed, and applies it with per-image random parameters.
``compose``
    Every group in a row, each at p = 1 (mdd's first engine): a much stronger
    perturbation of every image at every step.

Applied to normalized images, inside the distillation unroll too, so it must pass
second-order gradients and must not clip: kornia's colour ops clip to [0, 1] by
default, which would zero the gradient of every synthetic pixel outside that range.
Horizontal flips are used only where the modality allows them (chest X-rays and CT
have a laterality a flip would break).
"""
from __future__ import annotations

import threading
from dataclasses import asdict, dataclass

import kornia.augmentation as K
import torch
from torch import nn

MODES = ("dsa", "compose")
_SEEDED = threading.Lock()   # seeded calls reseed the global generator (Augment.forward)

#: Flags whose images keep their meaning under a left-right flip.
FLIP_OK = frozenset({"pathmnist", "dermamnist", "octmnist", "retinamnist", "breastmnist",
                     "bloodmnist", "tissuemnist"})


@dataclass
class AugmentConfig:
    """DSA's strategy ``color_crop_cutout_flip_scale_rotate``, expressed with kornia.

    ``flip=None`` decides by modality (:data:`FLIP_OK`). ``mode``: ``dsa`` (one group
    per call) or ``compose`` (all groups every call); see the module docstring.
    """

    enabled: bool = True
    mode: str = "dsa"
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
        if cfg.mode not in MODES:
            raise ValueError(f"augmentation mode must be one of {MODES}, got {cfg.mode!r}")
        self.config = cfg
        flip = cfg.flip if cfg.flip is not None else (flag in FLIP_OK)
        self.flip = flip
        groups: dict[str, list[nn.Module]] = {}
        if cfg.enabled:
            groups["color"] = [
                K.RandomBrightness((1 - cfg.brightness, 1 + cfg.brightness), clip_output=False, p=1.0),
                K.RandomContrast((1 - cfg.contrast, 1 + cfg.contrast), clip_output=False, p=1.0)]
            if cfg.mode == "compose":
                if cfg.rotate or cfg.translate or cfg.scale != 1.0:
                    groups["affine"] = [K.RandomAffine(
                        degrees=cfg.rotate, translate=(cfg.translate, cfg.translate),
                        scale=(1 / cfg.scale, cfg.scale), p=1.0)]
            else:   # DSA keeps crop, scale and rotate apart: one of them per call
                if cfg.translate:
                    groups["crop"] = [K.RandomAffine(degrees=0, translate=(cfg.translate,) * 2, p=1.0)]
                if cfg.scale != 1.0:
                    groups["scale"] = [K.RandomAffine(degrees=0, scale=(1 / cfg.scale, cfg.scale), p=1.0)]
                if cfg.rotate:
                    groups["rotate"] = [K.RandomAffine(degrees=cfg.rotate, p=1.0)]
            if cfg.cutout > 0:
                groups["cutout"] = [K.RandomErasing(scale=(cfg.cutout ** 2, cfg.cutout ** 2),
                                                    ratio=(1.0, 1.0), value=0.0, p=1.0)]
            if flip:
                # DSA flips each image with p = 0.5 when the flip group is drawn
                groups["flip"] = [K.RandomHorizontalFlip(p=0.5)]
        self.groups = list(groups)
        if cfg.mode == "compose":
            ops = [op for g in groups.values() for op in g]
            self.ops = nn.ModuleList([K.AugmentationSequential(*ops)]) if ops else None
        else:
            self.ops = nn.ModuleList(K.AugmentationSequential(*g) for g in groups.values()) \
                if groups else None

    def choose(self, seed: int | None) -> int:
        """Index of the operation group a call with ``seed`` applies (0 in compose mode)."""
        if self.ops is None or len(self.ops) == 1:
            return 0
        if seed is None:
            return int(torch.randint(len(self.ops), (1,)))
        # a generator of its own: the group must not depend on (or disturb) the global RNG
        g = torch.Generator().manual_seed(int(seed) + 0x5EED)
        return int(torch.randint(len(self.ops), (1,), generator=g))

    def forward(self, x: torch.Tensor, seed: int | None = None) -> torch.Tensor:
        if self.ops is None:
            return x
        op = self.ops[self.choose(seed)]
        if seed is None:
            return op(x)
        devices = [x.device] if x.device.type == "cuda" else []
        # fork_rng + manual_seed reseed the global generator: one seeded call at a time,
        # or two matching problems on two threads would draw each other's parameters
        with _SEEDED, torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            return op(x)
