"""MedMNIST data layer: find, verify (md5), download and load 2D MedMNIST files.

Everything about a flag (URL, md5, split sizes, labels, task, license) comes from
``medmnist.INFO``; nothing is copied by hand. Every failure is a one-line
:class:`DataError` naming the file.
"""
from __future__ import annotations

import hashlib
import os
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from medmnist.info import INFO
from tqdm.auto import tqdm

from .io import atomic_path

SIZES = (28, 64, 128, 224)
#: Sizes loaded through memory-mapped .npy files instead of into memory.
MAPPED_SIZES = (128, 224)
SPLITS = ("train", "val", "test")
ENV_ROOT = "MDD_DATA"
DEFAULT_ROOT = "data"


class DataError(RuntimeError):
    """A data problem a user can fix; the message is one line that says how."""


# ---------------------------------------------------------------- flags and files
def flags_2d() -> list[str]:
    """Every 2D MedMNIST flag in ``medmnist.INFO``."""
    return [f for f in INFO if not f.endswith("3d")]


def check_flag(flag: str) -> dict:
    """Return ``INFO[flag]`` or raise a DataError for unknown, 3D or multi-label flags."""
    if flag not in INFO:
        raise DataError(f"unknown MedMNIST flag {flag!r}; 2D flags are: {', '.join(flags_2d())}")
    if flag.endswith("3d"):
        raise DataError(f"{flag} is a 3D MedMNIST dataset; mdd distills 2D images only")
    info = INFO[flag]
    if info["task"].startswith("multi-label"):
        raise DataError(
            f"{flag} is multi-label ({info['task']}); mdd supports single-label tasks only "
            "(multi-class, binary, ordinal treated as multi-class)")
    return info


def check_size(size: int) -> int:
    if size not in SIZES:
        raise DataError(f"size {size} is not a MedMNIST size; choose one of {SIZES}")
    return size


def file_name(flag: str, size: int = 28) -> str:
    return f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"


def expected_md5(flag: str, size: int = 28) -> str:
    return INFO[flag]["MD5" if size == 28 else f"MD5_{size}"]


def url(flag: str, size: int = 28) -> str:
    return INFO[flag]["url" if size == 28 else f"url_{size}"]


def resolve_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: ``root`` if given, else ``$MDD_DATA``, else ``./data``."""
    if root is not None:
        return Path(root)
    return Path(os.environ.get(ENV_ROOT) or DEFAULT_ROOT)


def md5sum(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _how_to_get(flag: str, size: int, path: Path) -> str:
    return (f"download it from {url(flag, size)} (md5 {expected_md5(flag, size)}) into "
            f"{path.parent.resolve()}, point --root or ${ENV_ROOT} at a folder that has it, "
            f"or pass download=True (CLI: --download) where there is internet")


def _missing_message(flag: str, size: int, path: Path) -> str:
    return (f"MedMNIST file {path.name} not found in {path.parent.resolve()} "
            f"(expected md5 {expected_md5(flag, size)}): " + _how_to_get(flag, size, path))


def verify(flag: str, size: int, path: Path) -> None:
    """Raise DataError unless ``path`` exists and has INFO's md5."""
    if not path.is_file():
        raise DataError(_missing_message(flag, size, path))
    got, want = md5sum(path), expected_md5(flag, size)
    if got != want:
        raise DataError(
            f"{path} has md5 {got}, expected {want} (medmnist.INFO['{flag}']): the file is "
            f"truncated, corrupt or from another release; delete it and download it again "
            f"from {url(flag, size)}")


def fetch(flag: str, size: int = 28, root: str | os.PathLike | None = None,
             timeout: float = 60.0) -> Path:
    """Fetch ``flag``'s file from INFO's URL into ``root``, md5-verified before it lands.

    medmnist's own downloader goes through torchvision, which does not import beside a
    CPU-only torch wheel; the URL and md5 still come from ``medmnist.INFO``. The
    transfer is written to a temp file and renamed only once its md5 matches, so a
    broken transfer never leaves a file behind.
    """
    check_flag(flag)
    check_size(size)
    path = resolve_root(root) / file_name(flag, size)
    link, want = url(flag, size), expected_md5(flag, size)
    h = hashlib.md5()
    try:
        with atomic_path(path) as tmp, urllib.request.urlopen(link, timeout=timeout) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with open(tmp, "wb") as out, tqdm(total=total, unit="B", unit_scale=True,
                                              desc=path.name, leave=False) as bar:
                while block := resp.read(1 << 20):
                    out.write(block)
                    h.update(block)
                    bar.update(len(block))
            if h.hexdigest() != want:
                raise DataError(f"download of {path.name} from {link} has md5 {h.hexdigest()}, "
                                f"expected {want}; the transfer was corrupt and nothing was "
                                f"written to {path.parent}")
    except OSError as e:  # URLError, timeouts, refused connections
        raise DataError(f"could not download {path.name} from {link} ({e}); "
                        + _how_to_get(flag, size, path)) from None
    return path


# ---------------------------------------------------------------- loading
@dataclass(frozen=True)
class Normalization:
    """Per-channel mean/std of the training images in [0, 1] pixel space."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def _shape(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        s = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return m, s

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """[0, 1] pixels (N×C×H×W) → normalized network inputs."""
        m, s = self._shape(pixels)
        return (pixels - m) / s

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized inputs (N×C×H×W) → [0, 1] pixels (not clipped)."""
        m, s = self._shape(x)
        return x * s + m

    def to_dict(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict) -> "Normalization":
        return cls(tuple(float(v) for v in d["mean"]), tuple(float(v) for v in d["std"]))


def _to_nchw(images: np.ndarray) -> np.ndarray:
    """MedMNIST stores N×H×W (grey) or N×H×W×C (RGB) uint8."""
    return images[:, None] if images.ndim == 3 else images.transpose(0, 3, 1, 2)


class MappedImages:
    """Normalized float view of memory-mapped uint8 images, converted per index.

    Stands in for an N×C×H×W tensor at sizes 128/224, where the float copy would not
    fit comfortably in memory: ``len``, ``shape`` and indexing by ints, slices or index
    tensors return float tensors.
    """

    def __init__(self, raw: np.ndarray, norm: Normalization):
        self.raw, self.norm = raw, norm
        n, *rest = raw.shape
        c = 1 if raw.ndim == 3 else rest[-1]
        self.shape = torch.Size((n, c, rest[0], rest[1]))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, idx) -> torch.Tensor:
        if isinstance(idx, torch.Tensor):
            idx = idx.cpu().numpy()
        block = np.asarray(self.raw[idx])
        single = block.ndim == self.raw.ndim - 1
        block = _to_nchw(block[None] if single else block)
        x = self.norm.normalize(torch.from_numpy(block.astype(np.float32) / 255.0))
        return x[0] if single else x


@dataclass
class Split:
    """One split: ``x`` normalized float images N×C×H×W, ``y`` int64 labels N."""

    x: torch.Tensor | MappedImages
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class MedMNIST:
    """A loaded MedMNIST flag: three splits plus what INFO says about them."""

    flag: str
    size: int
    train: Split
    val: Split
    test: Split
    n_channels: int
    class_names: list[str]
    task: str
    license: str
    norm: Normalization
    path: Path
    info: dict = field(repr=False, default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def split(self, name: str) -> Split:
        if name not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {name!r}")
        return getattr(self, name)

    def pixels(self, x: torch.Tensor) -> np.ndarray:
        """Normalized images N×C×H×W → MedMNIST-style uint8 arrays (N×H×W[×C])."""
        p = self.norm.denormalize(x.detach().cpu().float()).clamp(0, 1)
        u8 = (p * 255).round().to(torch.uint8).numpy()
        return u8[:, 0] if u8.shape[1] == 1 else u8.transpose(0, 2, 3, 1)


def _open_npz(path: Path) -> np.lib.npyio.NpzFile:
    try:
        return np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise DataError(f"{path} is not a readable MedMNIST npz ({e}); delete it and "
                        "download it again") from None


def _mapped_arrays(flag: str, size: int, path: Path, npz, keys: Iterable[str]) -> dict:
    """Extract each array once to ``.mdd_cache/`` beside the file, then memory-map it."""
    cache = path.parent / ".mdd_cache" / f"{path.stem}-{expected_md5(flag, size)[:8]}"
    out = {}
    for key in keys:
        npy = cache / f"{key}.npy"
        if not npy.exists():
            with atomic_path(npy) as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, npz[key], allow_pickle=False)
        out[key] = np.load(npy, mmap_mode="r", allow_pickle=False)
    return out


def load(flag: str, size: int = 28, root: str | os.PathLike | None = None,
         download: bool = False, verify_md5: bool = True) -> MedMNIST:
    """Load a 2D MedMNIST flag from ``root`` (see :func:`resolve_root`).

    Returns normalized float tensors N×C×H×W (memory-mapped views at 128/224) with
    int64 labels N, the per-channel normalization computed on train, and INFO's
    class names, task and license. ``download=True`` fetches a missing file.
    """
    info = check_flag(flag)
    check_size(size)
    path = resolve_root(root) / file_name(flag, size)
    if download and not path.is_file():
        fetch(flag, size, path.parent)
    if verify_md5:
        verify(flag, size, path)
    elif not path.is_file():
        raise DataError(_missing_message(flag, size, path))

    keys = [f"{s}_{kind}" for s in SPLITS for kind in ("images", "labels")]
    with _open_npz(path) as npz:
        missing = [k for k in keys if k not in npz.files]
        if missing:
            raise DataError(f"{path} lacks arrays {missing}; it is not a MedMNIST file")
        try:
            if size in MAPPED_SIZES:
                arrays = _mapped_arrays(flag, size, path, npz, keys)
            else:
                arrays = {k: npz[k] for k in keys}
        except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
            raise DataError(f"{path} is corrupt ({e}); delete it and download it again") from None

    n_channels = int(info["n_channels"])
    for s in SPLITS:
        imgs, labels = arrays[f"{s}_images"], arrays[f"{s}_labels"]
        want = int(info["n_samples"][s])
        if len(imgs) != want or len(labels) != want:
            raise DataError(f"{path}: {s} split has {len(imgs)} images and {len(labels)} "
                            f"labels, medmnist.INFO['{flag}'] says {want}")
        shape = (size, size) if n_channels == 1 else (size, size, n_channels)
        if tuple(imgs.shape[1:]) != shape:
            raise DataError(f"{path}: {s} images have shape {tuple(imgs.shape[1:])}, "
                            f"expected {shape} for {flag} at size {size}")

    norm = _train_normalization(arrays["train_images"])
    splits = {}
    for s in SPLITS:
        raw = arrays[f"{s}_images"]
        y = torch.from_numpy(np.asarray(arrays[f"{s}_labels"]).reshape(-1).astype(np.int64))
        if size in MAPPED_SIZES:
            x = MappedImages(raw, norm)
        else:
            x = norm.normalize(torch.from_numpy(_to_nchw(np.asarray(raw)).astype(np.float32) / 255.0))
        splits[s] = Split(x, y)
    names = [info["label"][str(i)] for i in range(len(info["label"]))]
    return MedMNIST(flag=flag, size=size, n_channels=n_channels, class_names=names,
                    task="multi-class" if info["task"] == "ordinal-regression" else info["task"],
                    license=info["license"], norm=norm, path=path, info=info, **splits)


def _train_normalization(train_images: np.ndarray, chunk: int = 4096) -> Normalization:
    """Per-channel mean/std over the training images, in [0, 1] pixel space."""
    axes = (0, 1, 2)  # N, H, W of N×H×W[×C]
    s = s2 = 0.0
    n = 0
    for i in range(0, len(train_images), chunk):
        block = np.asarray(train_images[i:i + chunk], dtype=np.float64) / 255.0
        if block.ndim == 3:
            block = block[..., None]
        s = s + block.sum(axis=axes)
        s2 = s2 + (block ** 2).sum(axis=axes)
        n += block.shape[0] * block.shape[1] * block.shape[2]
    mean = s / n
    std = np.sqrt(np.maximum(s2 / n - mean ** 2, 1e-12))
    return Normalization(tuple(float(v) for v in mean), tuple(float(v) for v in std))


# ---------------------------------------------------------------- checking a root
def check_root(root: str | os.PathLike | None = None) -> list[dict]:
    """Every MedMNIST file in ``root`` with its md5 status.

    Returns one dict per file: ``file``, ``flag``, ``size``, ``ok`` and ``reason``
    (empty when ok). Files whose name is not a MedMNIST file are listed as unknown.
    """
    root = resolve_root(root)
    if not root.is_dir():
        raise DataError(f"data root {root.resolve()} does not exist; create it or pass --root")
    names = {file_name(f, s): (f, s) for f in INFO for s in SIZES}
    rows = []
    for path in sorted(root.glob("*.npz")):
        if path.name not in names:
            rows.append({"file": path.name, "flag": None, "size": None, "ok": False,
                         "reason": "not a MedMNIST file name"})
            continue
        flag, size = names[path.name]
        got, want = md5sum(path), expected_md5(flag, size)
        rows.append({"file": path.name, "flag": flag, "size": size, "ok": got == want,
                     "md5": got, "reason": "" if got == want else
                     f"md5 {got} != expected {want} (truncated, corrupt or another release)"})
    return rows
