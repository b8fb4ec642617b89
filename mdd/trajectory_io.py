"""Trajectory files: a (T+1)×P expert trajectory as one safetensors file (tensor
``trajectory``, fp32 or fp16), written atomically and read back without pickle, whole
or a few rows at a time."""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save

from .io import atomic_path


def trajectory_bytes(trajectory: torch.Tensor, fp16: bool = False,
                     metadata: dict[str, str] | None = None) -> bytes:
    """A (T+1)×P trajectory as the bytes of a safetensors file (tensor ``trajectory``)."""
    t = trajectory.detach().cpu().contiguous()
    t = t.half() if fp16 else t.float()
    return save({"trajectory": t}, metadata)


def write_bytes(path: str | Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` atomically: the file appears whole or not at all."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)


def save_trajectory(path: str | Path, trajectory: torch.Tensor, fp16: bool = False) -> None:
    """Write a (T+1)×P trajectory atomically as safetensors."""
    write_bytes(path, trajectory_bytes(trajectory, fp16))


def load_trajectory(path: str | Path, device: str | torch.device = "cpu") -> torch.Tensor:
    """Read a trajectory back as float32 (T+1)×P; safetensors, never pickle."""
    return load_file(str(path), device=str(device))["trajectory"].float()


def load_snapshots(path: str | Path, epochs: list[int],
                   device: str | torch.device = "cpu") -> torch.Tensor:
    """Rows ``epochs`` of a trajectory file, len(epochs)×P float32, reading only those rows."""
    with safe_open(str(path), framework="pt", device=str(device)) as f:
        rows = f.get_slice("trajectory")
        return torch.stack([rows[t] for t in epochs]).float()
