"""The matching hot loop (mdd.matching): loss, gradients, the two ways to get them."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mdd.augment import Augment
from mdd.matching import MatchProblem, Student, _reverse_eager, match
from mdd.nets import ConvNet, flatten_params, functional_embed, functional_forward


class Toy:
    """A 2-parameter student: logits (0, w·x̄ + b) with x̄ the image mean (θ = (w, b))."""

    def loss(self, flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        z = flat[0] * x.flatten(1).mean(1) + flat[1]
        return F.cross_entropy(torch.stack([torch.zeros_like(z), z], 1), y)


def hand_unroll(theta0, target, xbar, y, alpha, batches):
    """The same unroll and loss with plain floats: dCE/dz = σ(z) − y."""
    w, b = theta0
    for idx in batches:
        gw = gb = 0.0
        for i in idx:
            z = w * xbar[i] + b
            r = 1 / (1 + math.exp(-z)) - y[i]
            gw += r * xbar[i] / len(idx)
            gb += r / len(idx)
        w, b = w - alpha * gw, b - alpha * gb
    num = (w - target[0]) ** 2 + (b - target[1]) ** 2
    den = (theta0[0] - target[0]) ** 2 + (theta0[1] - target[1]) ** 2
    return num / den


@pytest.mark.parametrize("mode", ["adjoint", "unrolled"])
def test_loss_equals_hand_computation_on_a_two_parameter_toy(mode: str) -> None:
    x = torch.tensor([0.5, -1.0, 2.0, 0.25], dtype=torch.float64).view(4, 1, 1, 1) * torch.ones(4, 1, 2, 2,
                                                                                           dtype=torch.float64)
    y = torch.tensor([1, 0, 1, 0])
    start = torch.tensor([0.3, -0.2], dtype=torch.float64)
    target = torch.tensor([1.1, 0.4], dtype=torch.float64)
    batches = [torch.tensor([0, 1, 2, 3]), torch.tensor([2, 0]), torch.tensor([1, 3])]
    alpha = 0.7
    res = match(Toy(), x, y, torch.tensor(math.log(alpha), dtype=torch.float64),
                MatchProblem(start, target, batches, [0, 1, 2]), augment=None, mode=mode)
    want = hand_unroll(start.tolist(), target.tolist(), [0.5, -1.0, 2.0, 0.25], y.tolist(), alpha,
                       [b.tolist() for b in batches])
    assert float(res.loss) == pytest.approx(want, rel=1e-12)
    assert res.start_distance == pytest.approx(0.8 ** 2 + 0.6 ** 2)

    # the gradients are those of the hand computation (central differences, float64)
    eps = 1e-6
    for i in range(4):
        xb = [0.5, -1.0, 2.0, 0.25]
        up, dn = list(xb), list(xb)
        up[i] += eps
        dn[i] -= eps
        fd = (hand_unroll(start.tolist(), target.tolist(), up, y.tolist(), alpha, [b.tolist() for b in batches])
              - hand_unroll(start.tolist(), target.tolist(), dn, y.tolist(), alpha, [b.tolist() for b in batches])) / (2 * eps)
        # x̄ is the mean of 4 pixels: ∂L/∂pixel = ∂L/∂x̄ / 4
        assert float(res.grad_images[i].sum()) == pytest.approx(fd, rel=1e-6, abs=1e-10)
    la = math.log(alpha)
    fd_alpha = (hand_unroll(start.tolist(), target.tolist(), [0.5, -1.0, 2.0, 0.25], y.tolist(), math.exp(la + eps),
                            [b.tolist() for b in batches])
                - hand_unroll(start.tolist(), target.tolist(), [0.5, -1.0, 2.0, 0.25], y.tolist(),
                              math.exp(la - eps), [b.tolist() for b in batches])) / (2 * eps)
    assert float(res.grad_log_alpha) == pytest.approx(fd_alpha, rel=1e-6)


def tiny(width: int = 32, channels: int = 1, classes: int = 2, m: int = 2, seed: int = 0):
    torch.manual_seed(seed)
    net = ConvNet(channels, classes, 28, width=width)
    start = flatten_params(net)
    target = start + 0.05 * torch.randn_like(start) * start.abs().mean()
    x = torch.randn(m, channels, 28, 28)
    y = torch.arange(classes).repeat_interleave(m // classes)
    return net, Student(net), start, target, x, y


def test_student_is_the_convnet_bit_for_bit() -> None:
    net, st, theta, _, x, _ = tiny(channels=3, classes=4, m=4)
    assert torch.equal(st.forward(theta, x), functional_forward(net, st.layout, theta, x))
    assert torch.equal(st.embed(theta, x), functional_embed(net, st.layout, theta, x))


def test_adjoint_equals_the_classic_unrolled_loop() -> None:
    net, st, start, target, x, y = tiny(m=4)
    aug = Augment("breastmnist")
    prob = MatchProblem(start, target, [torch.arange(4), torch.tensor([0, 3]), torch.tensor([1, 2])],
                        [11, 12, 13])
    la = torch.tensor(0.02).log()
    a = match(st, x, y, la, prob, aug, "unrolled")
    b = match(st, x, y, la, prob, aug, "adjoint")
    assert float(a.loss) == pytest.approx(float(b.loss), rel=1e-6)
    assert float((a.grad_images - b.grad_images).norm() / a.grad_images.norm()) < 1e-5
    assert float(a.grad_log_alpha) == pytest.approx(float(b.grad_log_alpha), rel=1e-4)
    # ∂L/∂log α = α ∂L/∂α
    assert float(b.grad_log_alpha) == pytest.approx(0.02 * float(b.grad_alpha), rel=1e-5)


def test_gradients_reach_the_images_used_and_only_those() -> None:
    net, st, start, target, x, y = tiny(m=4)
    prob = MatchProblem(start, target, [torch.tensor([0, 2]), torch.tensor([0, 3])], [1, 2])
    res = match(st, x, y, torch.tensor(0.01).log(), prob, Augment("breastmnist"))
    norms = res.grad_images.flatten(1).norm(dim=1)
    assert (norms[[0, 2, 3]] > 0).all() and norms[1] == 0
    assert res.finite()


def test_image_gradient_matches_finite_differences_float64() -> None:
    net, st, start, target, x, y = tiny(width=8, m=2)
    net = net.double()
    st = Student(net)
    start, target, x = start.double(), target.double(), x.double()
    prob = MatchProblem(start, target, [torch.arange(2)] * 3, [0, 1, 2])
    la = torch.tensor(0.05, dtype=torch.float64).log()
    res = match(st, x, y, la, prob, augment=None)
    d = torch.randn_like(x, generator=torch.Generator().manual_seed(1))
    eps = 1e-6
    lp = match(st, x + eps * d, y, la, prob, augment=None).loss
    lm = match(st, x - eps * d, y, la, prob, augment=None).loss
    assert float((res.grad_images * d).sum()) == pytest.approx(float(lp - lm) / (2 * eps), rel=1e-5)


def test_tangent_kernel_equals_the_double_backward() -> None:
    """The compiled path's math, checked eagerly: ∇_(θ,x) (∇_θ CE · v)."""
    net, st, theta, _, x, y = tiny(channels=3, classes=4, m=4)
    v = torch.randn_like(theta) * 0.01
    s, h_theta, h_x, h_y = _reverse_eager(st, theta, v, x, y)
    assert h_y is None
    th, xr = theta.clone().requires_grad_(True), x.clone().requires_grad_(True)
    t = st.tangent_loss(th, v, xr, y)
    g_theta, g_x = torch.autograd.grad(t, (th, xr))
    assert float(t.detach()) == pytest.approx(float(s), rel=1e-4)
    assert torch.allclose(g_theta, h_theta, rtol=1e-3, atol=1e-6)
    assert torch.allclose(g_x, h_x, rtol=1e-3, atol=1e-7)


def test_alpha_is_positive_whatever_the_update() -> None:
    """α = exp(log α): a gradient step that would push a raw α below zero (MTT's failure
    mode) only shrinks it; even α underflowing to 0 keeps the unroll finite."""
    alpha_raw, log_alpha, lr = 0.01, torch.tensor(math.log(0.01)), 1e-3
    for _ in range(20):
        g = 50.0                            # ∂L/∂α, large and positive
        alpha_raw -= lr * g                 # MTT's parametrization
        log_alpha -= lr * 10 * float(log_alpha.exp()) * g   # mdd: ∂L/∂log α = α ∂L/∂α
        assert float(log_alpha.exp()) > 0
    assert alpha_raw < 0
    net, st, start, target, x, y = tiny()
    for la in (-50.0, -1e4):                # α ≈ 0 and α == 0 in float32: the student stays put
        res = match(st, x, y, torch.tensor(la), MatchProblem(start, target, [torch.arange(2)], [0]))
        assert res.finite() and float(res.loss) == pytest.approx(1.0, abs=1e-6)


def test_rejects_bad_modes_and_empty_unrolls() -> None:
    net, st, start, target, x, y = tiny()
    with pytest.raises(ValueError, match="mode"):
        match(st, x, y, torch.tensor(0.0), MatchProblem(start, target, [torch.arange(2)], [0]), mode="x")
    with pytest.raises(ValueError, match="at least one"):
        match(st, x, y, torch.tensor(0.0), MatchProblem(start, target, [], []))


def test_compiled_kernels_fall_back_to_eager_when_compilation_fails() -> None:
    from mdd.matching import CompiledKernels
    net, st, start, target, x, y = tiny(m=2)
    ck = CompiledKernels(st)

    def broken(*a, **k):
        raise RuntimeError("no C++ compiler")

    ck._tangent = broken
    prob = MatchProblem(start, target, [torch.arange(2)] * 2, [0, 1])
    with pytest.warns(UserWarning, match="torch.compile failed"):
        a = match(st, x, y, torch.tensor(0.01).log(), prob, None, "adjoint", ck)
    b = match(st, x, y, torch.tensor(0.01).log(), prob, None, "adjoint")
    assert ck.failed and torch.equal(a.grad_images, b.grad_images) and torch.equal(a.loss, b.loss)


# ------------------------------------------------------------------ soft labels (DATM)
def soft_problem(dtype=torch.float64, width: int = 8, classes: int = 3, m: int = 6, seed: int = 0):
    """A tiny matching problem with soft labels: M×K random label logits."""
    net, st, start, target, x, y = tiny(width=width, classes=classes, m=m, seed=seed)
    net = net.to(dtype)
    st = Student(net)
    g = torch.Generator().manual_seed(seed + 100)
    labels = torch.randn(m, classes, generator=g, dtype=dtype)
    # an index drawn twice in one batch: its label gradient must collect both terms
    prob = MatchProblem(start.to(dtype), target.to(dtype),
                        [torch.arange(m), torch.tensor([0, 3, 3, 5]), torch.tensor([1, 2, 4])],
                        [21, 22, 23])
    return st, x.to(dtype), y, labels, prob


def test_peaked_soft_labels_give_the_hard_label_numbers() -> None:
    net, st, start, target, x, y = tiny(m=4)
    prob = MatchProblem(start, target, [torch.arange(4), torch.tensor([0, 3]), torch.tensor([1, 2])],
                        [11, 12, 13])
    la = torch.tensor(0.02).log()
    soft = F.one_hot(y, 2).float() * 50            # softmax: 1 − e⁻⁵⁰, i.e. one-hot in float32
    for mode in ("adjoint", "unrolled"):
        a = match(st, x, y, la, prob, Augment("breastmnist"), mode)
        b = match(st, x, soft, la, prob, Augment("breastmnist"), mode)
        assert a.grad_labels is None and b.grad_labels.shape == soft.shape
        assert b.grad_labels.dtype == soft.dtype and b.finite()
        assert float(b.loss) == pytest.approx(float(a.loss), rel=1e-6)
        assert float((a.grad_images - b.grad_images).norm() / a.grad_images.norm()) < 1e-5
        assert float(b.grad_log_alpha) == pytest.approx(float(a.grad_log_alpha), rel=1e-5)
        # saturated softmax: the labels barely move the loss
        assert float(b.grad_labels.abs().max()) < 1e-12


@pytest.mark.parametrize("augment", [False, True])
def test_soft_labels_adjoint_equals_unrolled_float64(augment: bool) -> None:
    st, x, _, labels, prob = soft_problem()
    aug = Augment("breastmnist") if augment else None
    la = torch.tensor(0.05, dtype=torch.float64).log()
    a = match(st, x, labels, la, prob, aug, "unrolled")
    b = match(st, x, labels, la, prob, aug, "adjoint")
    assert float(a.loss) == pytest.approx(float(b.loss), rel=1e-12)
    assert float((a.grad_images - b.grad_images).norm() / a.grad_images.norm()) < 1e-10
    assert float(a.grad_log_alpha) == pytest.approx(float(b.grad_log_alpha), rel=1e-10)
    assert float((a.grad_labels - b.grad_labels).norm() / a.grad_labels.norm()) < 1e-10
    assert float(a.grad_labels.norm()) > 0


def test_soft_labels_adjoint_equals_unrolled_float32() -> None:
    st, x, _, labels, prob = soft_problem(torch.float32, width=32)
    la = torch.tensor(0.02).log()
    a = match(st, x, labels, la, prob, Augment("breastmnist"), "unrolled")
    b = match(st, x, labels, la, prob, Augment("breastmnist"), "adjoint")
    assert float(a.loss) == pytest.approx(float(b.loss), rel=1e-6)
    assert float((a.grad_images - b.grad_images).norm() / a.grad_images.norm()) < 1e-5
    assert float(a.grad_log_alpha) == pytest.approx(float(b.grad_log_alpha), rel=1e-4)
    assert float((a.grad_labels - b.grad_labels).norm() / a.grad_labels.norm()) < 1e-5


@pytest.mark.parametrize("mode", ["adjoint", "unrolled"])
def test_label_gradient_matches_finite_differences_float64(mode: str) -> None:
    st, x, _, labels, prob = soft_problem(width=4, m=4, classes=3)
    prob = MatchProblem(prob.start, prob.target,
                        [torch.arange(4), torch.tensor([0, 3, 3]), torch.tensor([1, 2])], [0, 1, 2])
    la = torch.tensor(0.5, dtype=torch.float64).log()   # a large step: labels matter
    res = match(st, x, labels, la, prob, None, mode)
    eps = 1e-6
    for k in range(3):
        d = torch.randn(labels.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(k))
        lp = match(st, x, labels + eps * d, la, prob, None, mode).loss
        lm = match(st, x, labels - eps * d, la, prob, None, mode).loss
        assert float((res.grad_labels * d).sum()) == pytest.approx(float(lp - lm) / (2 * eps), rel=1e-6)
    # a label shift common to a row does not change softmax: no gradient along it
    assert torch.allclose(res.grad_labels.sum(1), torch.zeros(4, dtype=torch.float64), atol=1e-12)


def test_soft_tangent_kernel_equals_the_double_backward() -> None:
    """The compiled path's soft-label math, checked eagerly (incl. ∂s/∂label logits)."""
    net, st, theta, _, x, _ = tiny(channels=3, classes=4, m=4)
    logits = torch.randn(4, 4, generator=torch.Generator().manual_seed(3))
    v = torch.randn_like(theta) * 0.01
    s, h_theta, h_x, h_y = _reverse_eager(st, theta, v, x, logits)
    th, xr = theta.clone().requires_grad_(True), x.clone().requires_grad_(True)
    lr = logits.clone().requires_grad_(True)
    t = st.tangent_loss(th, v, xr, lr.softmax(1))
    g_theta, g_x, g_y = torch.autograd.grad(t, (th, xr, lr))
    assert float(t.detach()) == pytest.approx(float(s), rel=1e-4)
    assert torch.allclose(g_theta, h_theta, rtol=1e-3, atol=1e-6)
    assert torch.allclose(g_x, h_x, rtol=1e-3, atol=1e-7)
    assert torch.allclose(g_y, h_y, rtol=1e-3, atol=1e-7)


def test_compiled_reverse_handles_soft_labels() -> None:
    """CompiledKernels' plumbing with soft labels (the tangent run eagerly: no compile)."""
    from mdd.matching import CompiledKernels
    st, x, _, labels, prob = soft_problem(torch.float32, width=16)
    ck = CompiledKernels(st)
    ck._tangent = st.tangent_loss
    la = torch.tensor(0.02).log()
    a = match(st, x, labels, la, prob, Augment("breastmnist"), "adjoint", ck)
    b = match(st, x, labels, la, prob, Augment("breastmnist"), "adjoint")
    assert torch.equal(a.loss, b.loss) and not ck.failed
    assert float((a.grad_images - b.grad_images).norm() / b.grad_images.norm()) < 1e-4
    assert float(a.grad_log_alpha) == pytest.approx(float(b.grad_log_alpha), rel=1e-4)
    assert float((a.grad_labels - b.grad_labels).norm() / b.grad_labels.norm()) < 1e-4
    # and the compiled path's hard-label answer carries no label gradient
    y = labels.argmax(1)
    assert match(st, x, y, la, prob, None, "adjoint", ck).grad_labels is None


def test_soft_labels_must_be_m_by_k() -> None:
    net, st, start, target, x, y = tiny()
    prob = MatchProblem(start, target, [torch.arange(2)], [0])
    with pytest.raises(ValueError, match="M×K"):
        match(st, x, torch.zeros(3, 2), torch.tensor(0.0), prob)
    with pytest.raises(ValueError, match="M×K"):
        match(st, x, torch.zeros(2), torch.tensor(0.0), prob)
