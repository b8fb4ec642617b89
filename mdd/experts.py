"""Expert trajectories (DESIGN.md §1.1): networks trained on the real data with their
flat parameters saved after every epoch, one safetensors file per expert.

A folder of experts::

    manifest.json          flag, size, recipe, layout, normalization, versions, experts[]
    expert_000.safetensors "trajectory": (T+1)×P, epochs 0…T of one expert

``ExpertSet(folder)`` reads it back for the matching code.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import platform
import subprocess
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from . import __version__
from .augment import Augment, AugmentConfig
from .data import MedMNIST, Normalization, load
from .evaluate import metrics, predict, resolve_device
from .io import atomic_path, read_json, write_json
from .nets import ConvNet, ParamLayout, flatten_params

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


@dataclass
class ExpertRecipe:
    """How each expert is trained (MTT's defaults). Every field lands in the manifest."""

    epochs: int = 50
    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    batch_size: int = 256
    width: int = 128
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    fp16: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ExpertRecipe":
        d = dict(d)
        d["augment"] = AugmentConfig(**d.get("augment", {}))
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


#: experts, epochs and width per preset.
PRESETS: dict[str, dict] = {
    "smoke": dict(experts=2, epochs=2, width=32),
    "cpu": dict(experts=5, epochs=20, width=128),
    "paper": dict(experts=100, epochs=50, width=128),
}


def expert_file(i: int) -> str:
    return f"expert_{i:03d}.safetensors"


def build_net(data: MedMNIST, width: int) -> ConvNet:
    return ConvNet(data.n_channels, data.num_classes, data.size, width=width)


def train_expert(data: MedMNIST, recipe: ExpertRecipe, seed: int, device: str = "auto",
                 progress: bool = False) -> tuple[torch.Tensor, dict]:
    """Train one expert; returns its trajectory (T+1)×P (float32, CPU) and val/test accuracy."""
    dev = resolve_device(device)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    net = build_net(data, recipe.width).to(dev)
    aug = Augment(data.flag, recipe.augment).to(dev)
    opt = torch.optim.SGD(net.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                          weight_decay=recipe.weight_decay)
    x, y = data.train.x, data.train.y
    snapshots = [flatten_params(net).cpu()]
    for _ in tqdm(range(recipe.epochs), desc=f"expert seed {seed}", leave=False,
                  disable=not progress):
        net.train()
        for idx in torch.randperm(len(y), generator=g).split(recipe.batch_size):
            loss = F.cross_entropy(net(aug(x[idx].to(dev))), y[idx].to(dev))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        snapshots.append(flatten_params(net).cpu())
    result = {}
    for split in ("val", "test"):
        s = data.split(split)
        result[f"{split}_acc"], result[f"{split}_auc"] = metrics(s.y.numpy(), predict(net, s.x), data.task)
    return torch.stack(snapshots), result


def save_trajectory(path: str | Path, trajectory: torch.Tensor, fp16: bool = False) -> None:
    """Write a (T+1)×P trajectory atomically as safetensors."""
    t = trajectory.detach().cpu().contiguous()
    t = t.half() if fp16 else t.float()
    with atomic_path(path) as tmp:
        save_file({"trajectory": t}, str(tmp))


def load_trajectory(path: str | Path, device: str | torch.device = "cpu") -> torch.Tensor:
    """Read a trajectory back as float32 (T+1)×P; safetensors, never pickle."""
    return load_file(str(path), device=str(device))["trajectory"].float()


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict:
    return {"mdd": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "git_commit": git_commit()}


def new_manifest(data: MedMNIST, recipe: ExpertRecipe) -> dict:
    net = build_net(data, recipe.width)
    return {"format": FORMAT_VERSION, "flag": data.flag, "size": data.size,
            "n_channels": data.n_channels, "num_classes": data.num_classes,
            "recipe": recipe.to_dict(), "net": net.config,
            "layout": ParamLayout.of(net).to_dict(), "norm": data.norm.to_dict(),
            "versions": versions(), "experts": []}


def _identity(m: dict) -> dict:
    """The parts of a manifest that must agree before two runs may share a folder."""
    return {k: m[k] for k in ("format", "flag", "size", "recipe", "layout")}


class ExpertSet:
    """A folder of expert trajectories, as the matching code reads it."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        path = self.folder / MANIFEST
        if not path.is_file():
            raise FileNotFoundError(f"no expert manifest at {path}; train experts with "
                                    f"`mdd experts --flag F --out {self.folder}`")
        self.manifest = read_json(path)
        self.entries = [e for e in self.manifest["experts"] if (self.folder / e["file"]).is_file()]
        if not self.entries:
            raise FileNotFoundError(f"{self.folder} lists no finished experts")
        lay = self.manifest["layout"]
        self.layout = ParamLayout(tuple(lay["names"]), tuple(tuple(s) for s in lay["shapes"]))
        self.norm = Normalization.from_dict(self.manifest["norm"])
        self.recipe = ExpertRecipe.from_dict(self.manifest["recipe"])

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def epochs(self) -> int:
        return self.recipe.epochs

    def trajectory(self, i: int, device: str | torch.device = "cpu") -> torch.Tensor:
        """Expert ``i``'s trajectory, (T+1)×P float32."""
        return load_trajectory(self.folder / self.entries[i]["file"], device)

    def net(self) -> ConvNet:
        """A ConvNet with this set's architecture (its parameters are not the experts')."""
        c = self.manifest["net"]
        return ConvNet(c["channels"], c["num_classes"], c["image_size"], c["width"], c["depth"])

    def digest(self) -> str:
        """A hash of the manifest, recorded by whatever is distilled from these experts."""
        return hashlib.sha256(json.dumps(self.manifest, sort_keys=True).encode()).hexdigest()[:16]


def train_experts(flag: str, out: str | Path, experts: int, recipe: ExpertRecipe | None = None,
                  root=None, size: int = 28, seed: int = 0, device: str = "auto",
                  progress: bool = True) -> dict:
    """Train ``experts`` experts into ``out``, resuming: finished experts are skipped.

    Expert ``i`` uses seed ``seed + i``. The manifest is rewritten atomically after each
    expert, so a killed run loses at most the expert in progress. A folder whose
    manifest was made with another recipe is refused.
    """
    recipe = recipe or ExpertRecipe()
    data = load(flag, size=size, root=root)
    out = Path(out)
    manifest = new_manifest(data, recipe)
    path = out / MANIFEST
    if path.is_file():
        old = read_json(path)
        if _identity(old) != _identity(manifest):
            raise ValueError(f"{out} holds experts of another recipe or dataset; use another --out "
                             f"or delete it (theirs: {json.dumps(_identity(old)['recipe'])})")
        manifest["experts"] = [e for e in old["experts"] if (out / e["file"]).is_file()]
    done = {e["id"] for e in manifest["experts"]}
    for i in tqdm(range(experts), desc=f"experts {flag}", disable=not progress):
        if i in done:
            continue
        traj, result = train_expert(data, recipe, seed=seed + i, device=device, progress=progress)
        save_trajectory(out / expert_file(i), traj, recipe.fp16)
        manifest["experts"].append({"id": i, "seed": seed + i, "file": expert_file(i), **result})
        manifest["experts"].sort(key=lambda e: e["id"])
        write_json(path, manifest)
    write_json(path, manifest)
    return manifest
