"""Normalized image tensors back to MedMNIST-style uint8 pixels: what the artifact stores
(:mod:`mdd.artifact`) and what the figures show (:mod:`mdd.viz`)."""
from __future__ import annotations

import numpy as np
import torch

from .data import Normalization


def to_pixels(x: torch.Tensor, norm: Normalization) -> np.ndarray:
    """Normalized N×C×H×W → MedMNIST-style uint8 N×H×W (grey) or N×H×W×C."""
    p = norm.denormalize(x.detach().cpu().float()).clamp(0, 1)
    u8 = (p * 255).round().to(torch.uint8).numpy()
    return u8[:, 0] if u8.shape[1] == 1 else u8.transpose(0, 2, 3, 1)
