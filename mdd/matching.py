"""Trajectory matching's hot loop (DESIGN.md §1.1): the student unroll on a flat
parameter vector and the normalized parameter-matching loss, with its gradient with
respect to the synthetic images and the (log) step size.

One matching problem::

    θ̂_0 = θ*_start
    θ̂_{n+1} = θ̂_n − α ∇_θ CE(f(θ̂_n, aug_n(X[b_n])), y[b_n])      n = 0 … N−1
    L = ||θ̂_N − θ*_target||² / ||θ*_start − θ*_target||²

Two ways to get ∂L/∂X and ∂L/∂log α, with the same numbers:

``unrolled``
    The classic MTT code: every step's gradient is taken with ``create_graph=True`` and
    one backward runs through the whole unroll. Memory grows with N (every step's
    double-backward graph is alive at once: 4.4 GB for N=20, 100 images, width 128).
``adjoint``
    The forward pass keeps only θ̂_n (N×P floats) and the augmented batches; the
    reverse pass walks n = N−1 … 0 with the adjoint λ_n = ∂L/∂θ̂_n, recomputing one
    step's graph at a time::

        λ_N = 2 (θ̂_N − θ*_target) / ||θ*_start − θ*_target||²
        s_n = ∇_θ CE_n(θ̂_n) · λ_{n+1}                (a scalar)
        ∂L/∂α   −= s_n
        ∂L/∂x_n  = −α ∂s_n/∂x_n                     (then through aug_n to X)
        λ_n      = λ_{n+1} − α ∂s_n/∂θ̂_n             (a Hessian-vector product)

    Memory is about one step's graph whatever N is. The forward pass computes each
    step exactly as the classic loop does, so θ̂_0 … θ̂_N and the loss are bit for bit
    the classic ones. ``s_n`` and its gradient come from autograd's double backward
    (eager), or, with :class:`CompiledKernels`, from a hand-written forward-mode tangent
    of the network (:meth:`Student.tangent_loss`) differentiated once — first-order
    autograd that torch.compile can fuse (it refuses the double backward) — with the
    forward pass's ReLU masks, so both passes take the same branch at every activation.

Soft labels (DATM, ICLR 2024): ``labels`` may be M×K learnable label logits L instead of
M class indices; each step's CE then has the target softmax(L[b_n]), and both modes also
return ∂L/∂L (the adjoint adds −α ∂s_n/∂L[b_n] at every step).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .nets import ConvNet, ParamLayout

MODES = ("adjoint", "unrolled")


# ------------------------------------------------------------------ student network
class Student:
    """The ConvNet of :mod:`mdd.nets` as a pure function of one flat parameter vector.

    ``forward(flat P, x N×C×H×W) → logits N×K`` runs the same aten ops as
    ``functional_forward(net, layout, flat, x)`` (conv2d, group_norm, relu, avg_pool2d,
    linear) without rebuilding a module's parameter dict per call.
    """

    def __init__(self, net: ConvNet, layout: ParamLayout | None = None):
        self.layout = layout or ParamLayout.of(net)
        self.depth: int = net.config["depth"]
        self.width: int = net.config["width"]
        self.eps: float = net.features[1].eps
        expected = ParamLayout.of(net)
        if self.layout != expected:
            raise ValueError("parameter layout does not match the ConvNet's "
                             f"({self.layout.numel} vs {expected.numel} values)")
        self.sizes = [math.prod(s) for s in self.layout.shapes]

    def views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Flat vector P → parameter views in layout order (autograd flows through)."""
        return [t.view(s) for t, s in zip(flat.split(self.sizes), self.layout.shapes)]

    def forward(self, flat: torch.Tensor, x: torch.Tensor,
                masks: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Logits N×K. ``masks``, if a list, receives each block's ReLU mask (bool N×C×h×w)."""
        p = self.views(flat)
        a = x
        for l in range(self.depth):
            w, b, g, be = p[4 * l:4 * l + 4]
            a = F.conv2d(a, w, b, padding=1)
            a = F.group_norm(a, w.shape[0], g, be, self.eps)
            if masks is not None:
                masks.append(a.detach() > 0)
            a = F.avg_pool2d(F.relu(a), 2)
        return F.linear(a.flatten(1), p[-2], p[-1])

    def embed(self, flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features N×D (what DOM compares)."""
        p = self.views(flat)
        a = x
        for l in range(self.depth):
            w, b, g, be = p[4 * l:4 * l + 4]
            a = F.avg_pool2d(F.relu(F.group_norm(F.conv2d(a, w, b, padding=1), w.shape[0], g, be,
                                                 self.eps)), 2)
        return a.flatten(1)

    def features(self, flat: torch.Tensor, x: torch.Tensor, space: str) -> torch.Tensor:
        """Features N×D of images x N×C×H×W at parameters ``flat`` (P), in one of two spaces.

        ``pooled``: :meth:`embed` (post-ReLU, avg-pooled penultimate features, all ≥ 0).
        ``preact``: the last block's group-norm output *before* its ReLU, avg-pooled 2×2
        like the block's own pooling — same D, but signed, so cosines are not squashed
        toward 1 the way non-negative features' are (DESIGN.md §1.3).
        """
        if space == "pooled":
            return self.embed(flat, x)
        if space != "preact":
            raise ValueError(f"space must be 'pooled' or 'preact', got {space!r}")
        p = self.views(flat)
        a = x
        for l in range(self.depth):
            w, b, g, be = p[4 * l:4 * l + 4]
            a = F.group_norm(F.conv2d(a, w, b, padding=1), w.shape[0], g, be, self.eps)
            a = F.avg_pool2d(a if l == self.depth - 1 else F.relu(a), 2)
        return a.flatten(1)

    def loss(self, flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
             masks: list[torch.Tensor] | None = None) -> torch.Tensor:
        return F.cross_entropy(self.forward(flat, x, masks), y)

    def tangent_loss(self, flat: torch.Tensor, v: torch.Tensor, x: torch.Tensor,
                     y: torch.Tensor, masks: list[torch.Tensor] | None = None) -> torch.Tensor:
        """``∇_θ CE(f(θ, x), y) · v`` computed forward-mode, by hand (P, P, N×C×H×W, N → scalar).

        ``y`` is N int64 class indices, or N×K target probabilities (soft labels).

        Differentiating this once w.r.t. (θ, x) gives what the double backward gives,
        with first-order autograd only (so torch.compile can fuse it). ``masks`` (one
        bool tensor per block, from :meth:`forward`) fix the ReLU pattern: an activation
        within rounding of 0 then takes the same branch as in the step that was taken.
        """
        p, dp = self.views(flat), self.views(v)
        a, da = x, None
        for l in range(self.depth):
            w, b, g, be = p[4 * l:4 * l + 4]
            dw, db, dg, dbe = dp[4 * l:4 * l + 4]
            z = F.conv2d(a, w, b, padding=1)
            dz = F.conv2d(a, dw, db, padding=1)
            if da is not None:
                dz = dz + F.conv2d(da, w, None, padding=1)
            # instance norm: n = (z − μ)/σ per sample and channel
            mu = z.mean((2, 3), keepdim=True)
            var = z.var((2, 3), unbiased=False, keepdim=True)
            rstd = (var + self.eps).rsqrt()
            n = (z - mu) * rstd
            dn = rstd * (dz - dz.mean((2, 3), keepdim=True) - n * (n * dz).mean((2, 3), keepdim=True))
            o = n * g.view(1, -1, 1, 1) + be.view(1, -1, 1, 1)
            do = dn * g.view(1, -1, 1, 1) + n * dg.view(1, -1, 1, 1) + dbe.view(1, -1, 1, 1)
            m = masks[l] if masks is not None else o > 0
            a = F.avg_pool2d(o * m, 2)
            da = F.avg_pool2d(do * m, 2)
        h, dh = a.flatten(1), da.flatten(1)
        logits = F.linear(h, p[-2], p[-1])
        dlogits = F.linear(h, dp[-2], dp[-1]) + F.linear(dh, p[-2])
        # d CE = mean_i (softmax_i − onehot(y_i)) · dlogits_i. One-hot, not gather: inductor
        # (torch 2.13, CPU) differentiates gather with a runtime index wrongly here.
        # Soft targets (y float N×K, rows of probabilities) take the place of the one-hot;
        # the formula assumes rows summing to 1, so their gradient is only right along
        # the simplex, which is all that reaches label logits through a softmax.
        if y.is_floating_point():
            onehot = y.to(logits.dtype)
        else:
            onehot = F.one_hot(y, logits.shape[1]).to(logits.dtype)
        return ((logits.softmax(1) - onehot) * dlogits).sum(1).mean()


# ------------------------------------------------------------------ one problem
@dataclass
class MatchProblem:
    """Everything one matching iteration needs besides the images and α.

    ``start``/``target``: expert parameters P; ``batches``: N index tensors into the
    synthetic set (one per unrolled step); ``seeds``: N augmentation seeds.
    """

    start: torch.Tensor
    target: torch.Tensor
    batches: Sequence[torch.Tensor]
    seeds: Sequence[int]

    @property
    def steps(self) -> int:
        return len(self.batches)


@dataclass
class MatchResult:
    """Loss and gradients of one matching problem (all detached)."""

    loss: torch.Tensor              # scalar
    grad_images: torch.Tensor       # like the images
    grad_log_alpha: torch.Tensor    # scalar
    start_distance: float           # ||θ*_start − θ*_target||²
    grad_alpha: torch.Tensor = field(default=None)  # ∂L/∂α, scalar
    grad_labels: torch.Tensor | None = field(default=None)  # M×K like soft labels; None if hard

    def finite(self) -> bool:
        return bool(torch.isfinite(self.loss) and torch.isfinite(self.grad_log_alpha)
                    and torch.isfinite(self.grad_images).all()
                    and (self.grad_labels is None or torch.isfinite(self.grad_labels).all()))


def mean_result(results: Sequence[MatchResult]) -> MatchResult:
    """The mean loss and gradients of several problems (``experts_per_iteration``)."""
    if len(results) == 1:
        return results[0]

    def mean(ts: list[torch.Tensor | None]) -> torch.Tensor | None:
        return None if ts[0] is None else torch.stack(ts).mean(0)

    return MatchResult(mean([r.loss for r in results]), mean([r.grad_images for r in results]),
                       mean([r.grad_log_alpha for r in results]),
                       sum(r.start_distance for r in results) / len(results),
                       grad_alpha=mean([r.grad_alpha for r in results]),
                       grad_labels=mean([r.grad_labels for r in results]))


Augmenter = Callable[..., torch.Tensor]


def _augmented_batches(images: torch.Tensor, prob: MatchProblem,
                       augment: Augmenter | None) -> list[torch.Tensor]:
    """aug_n(X[b_n]) for every step, each with its graph back to ``images``."""
    out = []
    for idx, seed in zip(prob.batches, prob.seeds):
        xb = images[idx]
        out.append(augment(xb, seed=seed) if augment is not None else xb)
    return out


def match(student: Student, images: torch.Tensor, labels: torch.Tensor, log_alpha: torch.Tensor,
          prob: MatchProblem, augment: Augmenter | None = None, mode: str = "adjoint",
          compiled: "CompiledKernels | None" = None) -> MatchResult:
    """Loss and gradients of one matching problem.

    images M×C×H×W (normalized, the synthetic set), log_alpha a scalar (α = exp(log α)
    > 0 always). labels are either M int64 class indices (hard cross-entropy) or M×K
    float label logits L (DATM's learnable soft labels): each step's loss is then
    ``−(softmax(L[b]) · log_softmax(f(θ, x_b))).sum(1).mean()`` and the result carries
    ``grad_labels`` = ∂L/∂L (M×K, labels' dtype). Nothing is accumulated into ``.grad``;
    the caller decides whether to apply the result (the NaN guard needs that choice).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if prob.steps < 1:
        raise ValueError("a matching problem needs at least one unrolled step")
    if labels.is_floating_point() and (labels.dim() != 2 or labels.shape[0] != images.shape[0]):
        raise ValueError(f"soft labels must be M×K label logits with M={images.shape[0]}, "
                         f"got shape {tuple(labels.shape)}")
    if mode == "unrolled":
        return _match_unrolled(student, images, labels, log_alpha, prob, augment)
    return _match_adjoint(student, images, labels, log_alpha, prob, augment, compiled)


def _match_unrolled(student: Student, images: torch.Tensor, labels: torch.Tensor,
                    log_alpha: torch.Tensor, prob: MatchProblem,
                    augment: Augmenter | None) -> MatchResult:
    """The classic MTT loop: create_graph per step, one backward through everything."""
    x = images.detach().requires_grad_(True)
    la = log_alpha.detach().requires_grad_(True)
    alpha = la.exp()
    start, target = prob.start.detach(), prob.target.detach()
    soft = labels.is_floating_point()
    lab = labels.detach().to(images.dtype).requires_grad_(True) if soft else labels
    theta = start.clone().requires_grad_(True)
    for xa, idx in zip(_augmented_batches(x, prob, augment), prob.batches):
        ce = student.loss(theta, xa, _targets(lab, idx))
        (g,) = torch.autograd.grad(ce, theta, create_graph=True)
        theta = theta - alpha * g
    denom = (start - target).pow(2).sum()
    loss = (theta - target).pow(2).sum() / denom
    if not soft:
        gx, gla = torch.autograd.grad(loss, (x, la))
        return MatchResult(loss.detach(), gx, gla, float(denom), grad_alpha=gla / alpha.detach())
    gx, gla, gl = torch.autograd.grad(loss, (x, la, lab))
    return MatchResult(loss.detach(), gx, gla, float(denom), grad_alpha=gla / alpha.detach(),
                       grad_labels=gl.to(labels.dtype))


def _targets(labels: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """One step's CE target: class indices (b) for hard labels, softmax(L[b]) (b×K) for
    soft ones. Both modes build the target with this same op, so their forward passes
    (and hence their trajectories) agree bit for bit with soft labels too."""
    y = labels[idx]
    return y.softmax(1) if y.is_floating_point() else y


def _match_adjoint(student: Student, images: torch.Tensor, labels: torch.Tensor,
                   log_alpha: torch.Tensor, prob: MatchProblem, augment: Augmenter | None,
                   compiled: "CompiledKernels | None") -> MatchResult:
    x = images.detach().requires_grad_(True)
    alpha = log_alpha.detach().exp()
    start, target = prob.start.detach(), prob.target.detach()
    soft = labels.is_floating_point()
    lab = labels.detach().to(images.dtype) if soft else labels
    # ys: what the reverse step differentiates (class indices, or the batch's label
    # logits b×K); targets: what the forward step trains on (indices, or softmax(L[b])).
    ys = [lab[idx] for idx in prob.batches]
    targets = [_targets(lab, idx) for idx in prob.batches]
    # Augmentation graphs are small (a few image-sized tensors per step): keep them and
    # push all the image gradients through them in one backward at the end.
    xas = _augmented_batches(x, prob, augment)

    thetas, masks = [start], []
    for xa, y in zip(xas, targets):
        step_masks: list[torch.Tensor] | None = [] if compiled is not None else None
        g = _grad_exact(student, thetas[-1], xa.detach(), y, step_masks)
        masks.append(step_masks)
        thetas.append(thetas[-1] - alpha * g)

    diff = thetas[-1] - target
    denom = (start - target).pow(2).sum()
    loss = diff.pow(2).sum() / denom
    lam = 2.0 * diff / denom
    grad_alpha = torch.zeros((), dtype=start.dtype, device=start.device)
    grad_xas: list[torch.Tensor] = [None] * len(xas)  # type: ignore[list-item]
    grad_labels = torch.zeros_like(lab) if soft else None
    for n in reversed(range(len(xas))):
        if compiled is not None:
            s, h_theta, h_x, h_y = compiled.reverse(thetas[n], lam, xas[n].detach(), ys[n], masks[n])
        else:
            s, h_theta, h_x, h_y = _reverse_eager(student, thetas[n], lam, xas[n].detach(), ys[n])
        grad_alpha = grad_alpha - s
        grad_xas[n] = -alpha * h_x
        if soft:
            # index_add: an image drawn twice in one batch gets both contributions
            grad_labels.index_add_(0, prob.batches[n].to(lab.device), -alpha * h_y)
        lam = lam - alpha * h_theta
    (gx,) = torch.autograd.grad(xas, x, grad_xas)
    return MatchResult(loss.detach(), gx, grad_alpha * alpha, float(denom), grad_alpha=grad_alpha,
                       grad_labels=grad_labels.to(labels.dtype) if soft else None)


def _grad_exact(student: Student, theta: torch.Tensor, xa: torch.Tensor, y: torch.Tensor,
                masks: list[torch.Tensor] | None = None) -> torch.Tensor:
    """∇_θ CE at θ (P), bit for bit what the classic loop's step computes.

    ``y``: b class indices, or b×K target probabilities (soft labels, already softmaxed).

    Taken with ``create_graph=True`` (then dropped) because that is what the classic loop
    does, and autograd then runs a different group-norm backward whose rounding differs:
    with it, the student trajectory θ̂_0…θ̂_N is exactly the classic one.
    """
    th = theta.detach().requires_grad_(True)
    with torch.enable_grad():
        ce = student.loss(th, xa, y) if masks is None else student.loss(th, xa, y, masks)
        (g,) = torch.autograd.grad(ce, th, create_graph=True)
    return g.detach()


def _reverse_eager(student: Student, theta: torch.Tensor, v: torch.Tensor, xa: torch.Tensor,
                   y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                             torch.Tensor | None]:
    """(s = ∇_θCE·v, ∂s/∂θ P, ∂s/∂x like xa, ∂s/∂y) by autograd's double backward.

    ``y``: b int64 class indices (then ∂s/∂y is None), or b×K label *logits* L_b, the
    target being softmax(L_b); ∂s/∂y is then ∂s/∂L_b (b×K).
    """
    th = theta.detach().requires_grad_(True)
    xr = xa.detach().requires_grad_(True)
    soft = y.is_floating_point()
    yr = y.detach().requires_grad_(True) if soft else y
    with torch.enable_grad():
        target = yr.softmax(1) if soft else yr
        (g,) = torch.autograd.grad(student.loss(th, xr, target), th, create_graph=True)
        s = (g * v).sum()
        if not soft:
            h_theta, h_x = torch.autograd.grad(s, (th, xr))
            return s.detach(), h_theta, h_x, None
        h_theta, h_x, h_y = torch.autograd.grad(s, (th, xr, yr))
    return s.detach(), h_theta, h_x, h_y


# ------------------------------------------------------------------ compiled kernels
class CompiledKernels:
    """The adjoint's reverse step through torch.compile (inductor): the hand-written
    tangent of :meth:`Student.tangent_loss`, differentiated once, fused.

    The forward pass stays eager (so the trajectory is the classic one bit for bit) and
    hands its ReLU masks to the reverse step, so both take the same branch at every
    activation even where the compiled recomputation rounds differently (~1e-7).
    First use per input shape compiles (about a minute on a small CPU; inductor's
    on-disk cache makes later processes faster).
    """

    def __init__(self, student: Student):
        self.student = student
        self.compiled_once = self.failed = False
        # layout_optimization off: inductor would otherwise move every activation (and
        # the bool masks) to channels-last and back around each convolution, which costs
        # more than it gains here (measured: 15.7 s → 11.8 s CPU for 4 steps).
        self._tangent = torch.compile(student.tangent_loss, dynamic=False,
                                      options={"layout_optimization": False})

    def reverse(self, theta: torch.Tensor, v: torch.Tensor, xa: torch.Tensor, y: torch.Tensor,
                masks: list[torch.Tensor] | None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """What :func:`_reverse_eager` returns (``y``: indices, or b×K label logits)."""
        if self.failed:
            return _reverse_eager(self.student, theta, v, xa, y)
        th = theta.detach().requires_grad_(True)
        xr = xa.detach().requires_grad_(True)
        soft = y.is_floating_point()
        yr = y.detach().requires_grad_(True) if soft else y
        try:
            with torch.enable_grad():
                # the softmax stays eager, outside the compiled graph: the tangent sees
                # probabilities, and its gradient reaches the logits through it
                s = self._tangent(th, v.detach(), xr, yr.softmax(1) if soft else yr, masks)
                if soft:
                    h_theta, h_x, h_y = torch.autograd.grad(s, (th, xr, yr))
                else:
                    h_theta, h_x = torch.autograd.grad(s, (th, xr))
                    h_y = None
        except Exception as e:   # the first call compiles: a missing or broken toolchain shows here
            if self.compiled_once:
                raise
            warnings.warn(f"torch.compile failed ({type(e).__name__}: {str(e)[:200]}); "
                          "the reverse pass runs eager")
            self.failed = True
            return _reverse_eager(self.student, theta, v, xa, y)
        self.compiled_once = True
        return s.detach(), h_theta, h_x, h_y


def compile_kernels(student: Student) -> CompiledKernels | None:
    """CompiledKernels, or None (with a warning) where torch.compile is unusable."""
    try:
        import torch._inductor  # noqa: F401  (fails early where inductor is missing)
        return CompiledKernels(student)
    except Exception as e:  # pragma: no cover - depends on the toolchain
        warnings.warn(f"torch.compile unavailable ({e}); matching runs eager")
        return None

