"""The distilled-set artifact: the one folder users share (DESIGN.md §5).

::

    distilled.npz   train_images  uint8 N×H×W (grey) or N×H×W×C — MedMNIST layout, pixel space
                    train_labels  uint8 N×1                     — MedMNIST layout
                    x             float32 N×C×H×W — the learned images exactly, normalized
                    y             int64 N
    manifest.json   flag, size, ipc, method, learned α, normalization, seed, experts'
                    manifest hash, versions, git commit, val/test results, sha256 of the npz
    grid.png        the images, one row per class

``train_images``/``train_labels`` drop into any MedMNIST-style loader (clipped to
[0, 255] and rounded); ``x`` keeps the learned values bit for bit (they may lie outside
the pixel range), and is what :func:`load_distilled` returns by default.
"""
from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .data import Normalization
from .io import atomic_path, read_json, write_json
from .pixels import to_pixels  # noqa: F401  (also offered here, beside the artifact)

NPZ, MANIFEST, GRID = "distilled.npz", "manifest.json", "grid.png"
ARTIFACT_DIR = "distilled"   # inside a run folder
FORMAT_VERSION = 1


@dataclass
class DistilledSet:
    """A loaded artifact: tensors ready to train a torch model.

    ``x`` normalized float32 N×C×H×W (normalize new images with ``norm`` the same way),
    ``y`` int64 N, ``lr`` the learned step size α (the evaluation protocol trains with it).
    """

    x: torch.Tensor
    y: torch.Tensor
    lr: float
    norm: Normalization
    flag: str
    size: int
    ipc: int
    num_classes: int
    class_names: list[str]
    method: str
    manifest: dict = field(repr=False)
    pixels: np.ndarray = field(repr=False, default=None)   # MedMNIST-style uint8
    path: Path | None = None

    def __len__(self) -> int:
        return len(self.y)

    def dataset(self) -> torch.utils.data.TensorDataset:
        return torch.utils.data.TensorDataset(self.x, self.y)


def sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def write_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """An npz (readable by ``np.load``) that is byte-identical for identical arrays:
    fixed zip timestamps, fixed order, no pickle; written atomically."""
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
            for name, arr in arrays.items():
                info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.external_attr = 0o644 << 16
                with zf.open(info, "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, np.ascontiguousarray(arr), allow_pickle=False)


def save_distilled(folder: str | os.PathLike, x: torch.Tensor, y: torch.Tensor, norm: Normalization,
                   info: dict, class_names: list[str] | None = None, grid: bool = True) -> Path:
    """Write ``distilled.npz`` + ``manifest.json`` (+ ``grid.png``) into ``folder``, atomically each.

    ``x`` normalized N×C×H×W, ``y`` N. ``info`` goes into the manifest as is (flag,
    size, ipc, method, alpha, seed, experts, versions, results …); the normalization,
    shapes and the npz hash are added here. The manifest is written last: a folder with
    a manifest is complete.
    """
    folder = Path(folder)
    x = x.detach().cpu().float().contiguous()
    y = y.detach().cpu().long()
    if x.ndim != 4 or len(x) != len(y):
        raise ValueError(f"expected x N×C×H×W and y N, got {tuple(x.shape)} and {tuple(y.shape)}")
    pixels = to_pixels(x, norm)
    write_npz(folder / NPZ, {"train_images": pixels,
                             "train_labels": y.numpy().astype(np.uint8)[:, None],
                             "x": x.numpy(), "y": y.numpy()})
    if grid:
        save_grid(folder / GRID, x, y, norm, class_names)
    manifest = {"format": FORMAT_VERSION, **info, "n_images": int(len(y)),
                "image_shape": list(x.shape[1:]), "normalization": norm.to_dict(),
                "class_names": class_names, "files": {NPZ: sha256(folder / NPZ)}}
    write_json(folder / MANIFEST, manifest)
    return folder


def artifact_folder(path: str | os.PathLike) -> Path:
    """The artifact folder for ``path``: the folder itself, its ``distilled/``, or the npz's folder."""
    p = Path(path)
    if p.is_file() and p.name == NPZ:
        p = p.parent
    if not (p / MANIFEST).is_file() and (p / ARTIFACT_DIR / MANIFEST).is_file():
        p = p / ARTIFACT_DIR
    if not (p / MANIFEST).is_file() or not (p / NPZ).is_file():
        raise FileNotFoundError(f"no distilled set at {Path(path)}: expected {NPZ} and {MANIFEST} "
                                f"there or in {Path(path) / ARTIFACT_DIR}")
    return p


def load_distilled(path: str | os.PathLike, quantized: bool = False, verify: bool = True) -> DistilledSet:
    """Read an artifact back (a folder with distilled.npz + manifest.json, or a run folder).

    Returns the learned images exactly (``x``), or with ``quantized=True`` the uint8
    MedMNIST arrays normalized again (what a MedMNIST-style loader would see).
    ``verify`` checks the npz against the manifest's sha256.
    """
    folder = artifact_folder(path)
    manifest = read_json(folder / MANIFEST)
    want = manifest.get("files", {}).get(NPZ)
    if verify and want and sha256(folder / NPZ) != want:
        raise ValueError(f"{folder / NPZ} does not match its manifest's sha256: the file was "
                         "changed or truncated")
    norm = Normalization.from_dict(manifest["normalization"])
    with np.load(folder / NPZ, allow_pickle=False) as z:
        pixels = z["train_images"]
        x_exact, y = z["x"], z["y"]
    if quantized:
        nchw = pixels[:, None] if pixels.ndim == 3 else pixels.transpose(0, 3, 1, 2)
        x = norm.normalize(torch.from_numpy(nchw.astype(np.float32) / 255.0))
    else:
        x = torch.from_numpy(x_exact)
    return DistilledSet(x=x, y=torch.from_numpy(y).long(), lr=float(manifest["alpha"]), norm=norm,
                        flag=manifest["flag"], size=int(manifest["size"]), ipc=int(manifest["ipc"]),
                        num_classes=int(manifest.get("num_classes", int(y.max()) + 1)),
                        class_names=manifest.get("class_names") or [],
                        method=manifest.get("method", "?"), manifest=manifest, pixels=pixels,
                        path=folder)


def save_grid(path: str | os.PathLike, x: torch.Tensor, y: torch.Tensor, norm: Normalization,
              class_names: list[str] | None = None, max_per_class: int = 20,
              title: str | None = None) -> Path:
    """A PNG grid of normalized images x N×C×H×W: one row per class, up to ``max_per_class`` columns."""
    from . import viz  # matplotlib only when a grid is drawn

    y = y.cpu()
    num = int(y.max()) + 1 if len(y) else 0
    names = list(class_names or [])
    names += [str(c) for c in range(len(names), num)]
    fig = viz.image_grid(to_pixels(x, norm), y.numpy(), names, title or "", per_class=max_per_class)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    return path
