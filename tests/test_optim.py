import math

import pytest
import torch

from mdd.optim import Adam, Momentum, expert_alpha, log_grid, make, rms, warmup_lr


def test_adam_matches_torch_adam():
    torch.manual_seed(0)
    p0 = torch.randn(4, 3)
    mine, ref = p0.clone(), p0.clone().requires_grad_(True)
    opt_ref = torch.optim.Adam([ref], lr=0.01)
    adam = Adam(0.01)
    for _ in range(5):
        g = torch.randn(4, 3)
        adam.step(mine, g)
        ref.grad = g.clone()
        opt_ref.step()
    assert torch.allclose(mine, ref.detach(), atol=1e-6)


def test_adam_on_a_scalar_moves_by_about_lr_whatever_the_gradient_scale():
    for scale in (1e-6, 1.0, 1e6):
        p = torch.tensor(0.0)
        opt = Adam(0.05)
        for _ in range(10):
            opt.step(p, torch.tensor(scale))
        assert float(p) == pytest.approx(-0.5, rel=0.02)   # ε = 1e-8 shows at 1e-6


def test_adam_rows_restart_alone():
    p = torch.zeros(3, 2)
    opt = Adam(0.1)
    opt.step(p, torch.ones(3, 2))
    opt.reset_rows([1])
    before = p.clone()
    opt.step(p, torch.ones(3, 2), rows=torch.tensor([1]))
    assert torch.equal(p[0], before[0]) and torch.equal(p[2], before[2])
    assert float(opt.t[1]) == 1 and float(opt.t[0]) == 1
    assert torch.allclose(p[1], before[1] - 0.1)


def test_momentum_is_torch_sgd():
    p0 = torch.randn(5)
    mine, ref = p0.clone(), p0.clone().requires_grad_(True)
    opt_ref = torch.optim.SGD([ref], lr=0.1, momentum=0.5)
    opt = Momentum(0.1, 0.5)
    for k in range(4):
        g = torch.full((5,), float(k + 1))
        opt.step(mine, g)
        ref.grad = g.clone()
        opt_ref.step()
    assert torch.allclose(mine, ref.detach())


def test_helpers():
    assert isinstance(make("adam", 0.1), Adam) and isinstance(make("sgd", 0.1), Momentum)
    with pytest.raises(ValueError, match="optimiser"):
        make("lbfgs", 0.1)
    assert warmup_lr(1.0, 0, 4) == 0.25 and warmup_lr(1.0, 3, 4) == 1.0 and warmup_lr(1.0, 9, 0) == 1.0
    assert expert_alpha(0.01, 24, 12) == pytest.approx(0.02)
    assert log_grid(1.0, 2.0, 3) == [0.5, 1.0, 2.0]
    assert rms(torch.full((3, 3), 2.0)) == pytest.approx(2.0)
    assert math.isclose(rms(torch.empty(0)), 0.0)
