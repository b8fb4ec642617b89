"""ConvNet of the distillation literature, sized for the data's real shape, and a
functional call on one flat parameter vector (what trajectory matching unrolls)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call


def default_depth(image_size: int) -> int:
    """3 blocks at 28/32 px, one more per doubling (64 → 4, 128 → 5, 224 → 6)."""
    return max(3, 3 + round(math.log2(image_size / 28)))


class ConvNet(nn.Module):
    """``depth`` × [conv 3×3 (width) → instance norm → ReLU → avg-pool 2×2] → linear.

    Instance norm is GroupNorm with one group per channel (affine), as in MTT. The
    head's input size is computed from the real input (28 → 3×3 after three pools),
    not by padding 28 up to 32.

    Input N×C×H×W, output N×num_classes logits.
    """

    def __init__(self, channels: int, num_classes: int, image_size: int, width: int = 128,
                 depth: int | None = None):
        super().__init__()
        depth = depth or default_depth(image_size)
        layers: list[nn.Module] = []
        c, hw = channels, image_size
        for _ in range(depth):
            layers += [nn.Conv2d(c, width, 3, padding=1), nn.GroupNorm(width, width, affine=True),
                       nn.ReLU(), nn.AvgPool2d(2)]
            c, hw = width, hw // 2
        if hw < 1:
            raise ValueError(f"depth {depth} pools a {image_size}px image below 1px")
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width * hw * hw, num_classes)
        self.config = dict(channels=channels, num_classes=num_classes, image_size=image_size,
                           width=width, depth=depth)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features, N×(width·h·w)."""
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


@dataclass(frozen=True)
class ParamLayout:
    """How a flat parameter vector maps onto a module's named parameters."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, net: nn.Module) -> "ParamLayout":
        named = list(net.named_parameters())
        return cls(tuple(n for n, _ in named), tuple(tuple(p.shape) for _, p in named))

    @property
    def numel(self) -> int:
        return sum(math.prod(s) for s in self.shapes)

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Flat vector P → {name: view}; views keep autograd through ``flat``."""
        sizes = [math.prod(s) for s in self.shapes]
        return {n: t.view(s) for n, s, t in zip(self.names, self.shapes, flat.split(sizes))}

    def to_dict(self) -> dict:
        return {"names": list(self.names), "shapes": [list(s) for s in self.shapes],
                "numel": self.numel}


def flatten_params(net: nn.Module) -> torch.Tensor:
    """All parameters of ``net`` as one detached flat vector P (layout: ParamLayout.of)."""
    return torch.cat([p.detach().reshape(-1) for p in net.parameters()])


def load_flat(net: nn.Module, flat: torch.Tensor) -> nn.Module:
    """Copy a flat vector P into ``net``'s parameters, in place."""
    layout = ParamLayout.of(net)
    if flat.numel() != layout.numel:
        raise ValueError(f"flat vector has {flat.numel()} values, network needs {layout.numel}")
    views = layout.unflatten(flat.detach())
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.copy_(views[name])
    return net


def functional_forward(net: nn.Module, layout: ParamLayout, flat: torch.Tensor,
                       x: torch.Tensor) -> torch.Tensor:
    """``net(x)`` with parameters taken from the flat vector ``flat`` (differentiable)."""
    return functional_call(net, layout.unflatten(flat), (x,))


def functional_embed(net: ConvNet, layout: ParamLayout, flat: torch.Tensor,
                     x: torch.Tensor) -> torch.Tensor:
    """Penultimate features (N×D) of ``net`` at the parameters ``flat``."""
    params = {k.removeprefix("features."): v for k, v in layout.unflatten(flat).items()
              if k.startswith("features.")}
    return functional_call(net.features, params, (x,)).flatten(1)


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 for small images as MedMNIST v2 trains it at 28 px: a 3×3 stride-1
    stem without max-pool (the CIFAR variant), four stages of two basic blocks
    (64, 128, 256, 512 channels), batch norm, global average pool, linear head.

    Input N×C×H×W, output N×num_classes logits. A second network family for
    cross-architecture scores (DESIGN.md §2): the distilled images never saw it.
    """

    def __init__(self, channels: int, num_classes: int, image_size: int, width: int = 64):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(channels, width, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU())
        blocks, c = [], width
        for i, mult in enumerate((1, 2, 4, 8)):
            stride = 1 if i == 0 else 2
            blocks += [_BasicBlock(c, width * mult, stride), _BasicBlock(width * mult, width * mult, 1)]
            c = width * mult
        self.layers = nn.Sequential(*blocks)
        self.classifier = nn.Linear(c, num_classes)
        self.config = dict(channels=channels, num_classes=num_classes, image_size=image_size,
                           width=width, arch="resnet18")

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(self.stem(x)).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


#: Evaluation architectures: the distillation network (ConvNet-3 at 28 px) and two
#: others it was not distilled for.
ARCHS = ("convnet", "convnet-d4", "resnet18")


def build_network(arch: str, channels: int, num_classes: int, image_size: int,
                  width: int = 128) -> nn.Module:
    """A fresh evaluation network. ``width`` is the ConvNet's; ResNet-18 keeps its own
    64-channel stem. ``convnet-d4`` is the ConvNet one block deeper than its default."""
    if arch == "convnet":
        return ConvNet(channels, num_classes, image_size, width=width)
    if arch == "convnet-d4":
        return ConvNet(channels, num_classes, image_size, width=width,
                       depth=default_depth(image_size) + 1)
    if arch == "resnet18":
        return ResNet18(channels, num_classes, image_size)
    raise ValueError(f"arch must be one of {', '.join(ARCHS)}, got {arch!r}")
