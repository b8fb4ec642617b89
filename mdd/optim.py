"""The outer loop's optimisers (engine v2): what moves the synthetic images, the
student's step size α and the soft labels between matching iterations.

Every optimiser keeps its state in plain tensors so that a checkpoint can save and
restore it exactly, and every ``step`` can be restricted to some rows (DOM retrains
a few re-seeded images while the rest stay put).

Why not a fixed learning rate on log α (the first engine): MTT learns α itself with
``lr_lr``; a step ``η·∂L/∂log α`` is ``η·α·∂L/∂α``, so its MTT-equivalent rate is
``η·α²`` and collapses as α shrinks: α could fall, but never grow back when a later
PTM stage asks it to stretch. Adam's step on log α has a size set by ``lr`` alone
(about ``lr`` per iteration while the gradient keeps its sign), on either side.
"""
from __future__ import annotations

import math

import torch

#: Optimisers by name (``DistillConfig.image_opt`` / ``alpha_opt``).
OPTIMIZERS = ("sgd", "adam")


class Momentum:
    """SGD with momentum on one tensor, torch.optim.SGD's rule, explicit state.

    buf ← m·buf + g (buf ← g at the first step); p ← p − lr·buf. ``rows`` (of p)
    restricts an update to some images; their buffers alone move.
    """

    def __init__(self, lr: float, momentum: float):
        self.lr, self.momentum = lr, momentum
        self.buf: torch.Tensor | None = None

    def step(self, p: torch.Tensor, g: torch.Tensor, rows: torch.Tensor | None = None,
             lr: float | None = None) -> None:
        lr = self.lr if lr is None else lr
        first = self.buf is None
        if first:
            self.buf = torch.zeros_like(g)
        elif self.buf.shape != g.shape:   # a scalar's buffer comes back from a checkpoint as (1,)
            self.buf = self.buf.reshape(g.shape)
        with torch.no_grad():
            if rows is None:
                self.buf = g.clone() if first else self.buf.mul_(self.momentum).add_(g)
                p.sub_(lr * self.buf)
            else:
                self.buf[rows] = g[rows] if first else self.buf[rows] * self.momentum + g[rows]
                p[rows] -= lr * self.buf[rows]

    def reset_rows(self, rows: list[int]) -> None:
        if self.buf is not None and rows:
            self.buf[rows] = 0

    def reset(self) -> None:
        if self.buf is not None:
            self.buf.zero_()

    def state(self) -> dict[str, torch.Tensor]:
        return {} if self.buf is None else {"buf": self.buf}

    def load(self, state: dict[str, torch.Tensor]) -> None:
        self.buf = state.get("buf")


class Adam:
    """Adam (Kingma & Ba) on one tensor, with a per-row step count so that rows
    re-seeded by DOM restart their bias correction while the others carry on.

    m ← β₁m + (1−β₁)g, v ← β₂v + (1−β₂)g², p ← p − lr · m̂ / (√v̂ + ε).
    """

    def __init__(self, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.lr, self.betas, self.eps = lr, betas, eps
        self.m: torch.Tensor | None = None
        self.v: torch.Tensor | None = None
        self.t: torch.Tensor | None = None   # steps taken, per row (one row for a scalar)

    def _init(self, g: torch.Tensor) -> None:
        self.m, self.v = torch.zeros_like(g), torch.zeros_like(g)
        self.t = torch.zeros(g.shape[:1], dtype=torch.float64, device=g.device)

    def step(self, p: torch.Tensor, g: torch.Tensor, rows: torch.Tensor | None = None,
             lr: float | None = None) -> None:
        lr = self.lr if lr is None else lr
        if p.ndim == 0:   # a scalar (log α) is kept as one row
            p, g = p.view(1), g.reshape(1)
        if self.m is None:
            self._init(g)
        b1, b2 = self.betas
        sel = slice(None) if rows is None else rows
        with torch.no_grad():
            t = self.t[sel] + 1
            m = self.m[sel] * b1 + (1 - b1) * g[sel]
            v = self.v[sel] * b2 + (1 - b2) * g[sel].pow(2)
            shape = (-1,) + (1,) * (g.ndim - 1)
            c1 = (1 - b1 ** t).to(g.dtype).reshape(shape)
            c2 = (1 - b2 ** t).to(g.dtype).reshape(shape)
            p[sel] -= lr * (m / c1) / ((v / c2).sqrt() + self.eps)
            self.m[sel], self.v[sel], self.t[sel] = m, v, t

    def reset_rows(self, rows: list[int]) -> None:
        if self.m is not None and rows:
            self.m[rows], self.v[rows], self.t[rows] = 0, 0, 0

    def reset(self) -> None:
        if self.m is not None:
            self._init(self.m)

    def state(self) -> dict[str, torch.Tensor]:
        return {} if self.m is None else {"m": self.m, "v": self.v, "t": self.t}

    def load(self, state: dict[str, torch.Tensor]) -> None:
        self.m, self.v, self.t = state.get("m"), state.get("v"), state.get("t")


def make(name: str, lr: float, momentum: float = 0.5) -> Momentum | Adam:
    """The optimiser ``name`` (``sgd``: momentum SGD; ``adam``)."""
    if name == "sgd":
        return Momentum(lr, momentum)
    if name == "adam":
        return Adam(lr)
    raise ValueError(f"optimiser must be one of {OPTIMIZERS}, got {name!r}")


def warmup_lr(lr: float, iteration: int, warmup: int) -> float:
    """Linear warm-up: ``lr · (i+1)/warmup`` for the first ``warmup`` iterations."""
    if warmup <= 0 or iteration >= warmup:
        return lr
    return lr * (iteration + 1) / warmup


def expert_alpha(expert_lr: float, expert_steps: float, student_steps: int) -> float:
    """α₀ from the segment: the expert moves ``expert_steps`` SGD steps at ``expert_lr``
    between start and target; a student that covers it in N steps needs about
    ``expert_lr · expert_steps / N`` per step (its gradients are of the same kind:
    cross-entropy of the same network on images of the same classes)."""
    if expert_steps <= 0 or student_steps <= 0:
        raise ValueError("α₀ from the expert needs a positive segment and step count")
    return expert_lr * expert_steps / student_steps


def log_grid(center: float, factor: float = 2.0, points: int = 5) -> list[float]:
    """``points`` values spaced by ``factor`` around ``center`` (a calibration grid)."""
    half = (points - 1) / 2
    return [center * factor ** (k - half) for k in range(points)]


def rms(t: torch.Tensor) -> float:
    """Root mean square of a tensor (images move in σ units: they are normalized)."""
    return math.sqrt(float(t.double().pow(2).mean())) if t.numel() else 0.0
