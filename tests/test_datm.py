"""DATM's initialisation levers (mdd.datm): expert soft labels, correctly classified subsets."""
from __future__ import annotations

import warnings

import pytest
import torch

import mdd.data as D
from mdd.baselines import random_subset
from mdd.datm import correct_subset, expert_soft_labels
from mdd.matching import Student
from mdd.nets import ConvNet, flatten_params


class Brightness:
    """A stand-in expert: class 1 iff the image mean exceeds θ[0] (logits (0, 10·(x̄ − θ₀)))."""

    def forward(self, flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        z = 10 * (x.flatten(1).mean(1) - flat[0])
        return torch.stack([torch.zeros_like(z), z], 1)


def fake(make_fake):
    # 20 training images, 10 per class, class 1 brighter by 100 grey levels
    return D.load("breastmnist", root=make_fake("breastmnist", n=(20, 6, 8)))


def convnet_expert(classes: int = 2, seed: int = 0):
    torch.manual_seed(seed)
    net = ConvNet(1, classes, 28, width=8)
    return Student(net), flatten_params(net)


def test_expert_soft_labels_are_the_experts_logits_over_temperature() -> None:
    st, theta = convnet_expert(classes=3)
    x = torch.randn(7, 1, 28, 28)
    full = st.forward(theta, x)
    out = expert_soft_labels(st, theta, x, batch=3)          # 3 chunks, the last one short
    assert out.shape == (7, 3) and not out.requires_grad
    assert torch.allclose(out, full, rtol=1e-6, atol=1e-6)
    t2 = expert_soft_labels(st, theta, x, temperature=2.0)
    assert torch.allclose(t2, full / 2, rtol=1e-6, atol=1e-6)
    # softer target at a higher temperature
    assert float(t2.softmax(1).max()) <= float(out.softmax(1).max())
    with pytest.raises(ValueError, match="temperature"):
        expert_soft_labels(st, theta, x, temperature=0.0)


def test_perfect_expert_draws_what_random_subset_draws(make_fake) -> None:
    data = fake(make_fake)
    thr = float(data.train.x.flatten(1).mean(1).mean())      # between the two class means
    expert = Brightness()
    assert bool((expert.forward(torch.tensor([thr]), data.train.x).argmax(1) == data.train.y).all())
    x, y, idx = correct_subset(data, 3, 5, expert, torch.tensor([thr]), batch=7)
    rx, ry, ridx = random_subset(data, 3, 5)
    assert torch.equal(idx, ridx) and torch.equal(y, ry) and torch.equal(x, rx)
    assert x.shape == (6, 1, 28, 28) and y.tolist() == [0, 0, 0, 1, 1, 1]


def test_draws_only_correctly_classified_images(make_fake) -> None:
    data = fake(make_fake)
    means = data.train.x.flatten(1).mean(1)
    c0 = means[data.train.y == 0].sort().values
    # threshold below the 6th darkest class-0 image: its 5 brightest ones are "wrong"
    theta = torch.tensor([float(c0[4] + c0[5]) / 2])
    expert = Brightness()
    correct = expert.forward(theta, data.train.x).argmax(1) == data.train.y
    assert int(correct[data.train.y == 0].sum()) == 5 and bool(correct[data.train.y == 1].all())
    seen = set()
    for seed in range(5):
        x, y, idx = correct_subset(data, 4, seed, expert, theta)
        assert bool(correct[idx].all())
        assert y.tolist() == [0] * 4 + [1] * 4 and torch.equal(x, data.train.x[idx])
        assert len(set(idx.tolist())) == 8
        seen.add(tuple(idx.tolist()))
        again = correct_subset(data, 4, seed, expert, theta)[2]
        assert torch.equal(idx, again)                       # seeded
    assert len(seen) > 1                                     # and the seed matters


def test_too_few_correct_images_warns_and_fills_up(make_fake) -> None:
    data = fake(make_fake)
    means = data.train.x.flatten(1).mean(1)
    c0 = means[data.train.y == 0].sort().values
    theta = torch.tensor([float(c0[1] + c0[2]) / 2])          # 2 correct class-0 images
    expert = Brightness()
    correct = expert.forward(theta, data.train.x).argmax(1) == data.train.y
    with pytest.warns(UserWarning, match="class 0 .*only 2 of 10"):
        x, y, idx = correct_subset(data, 4, 0, expert, theta)
    assert y.tolist() == [0] * 4 + [1] * 4 and len(set(idx.tolist())) == 8
    # every correct class-0 image is kept; the rest is filled with wrong ones
    assert set((correct & (data.train.y == 0)).nonzero().flatten().tolist()) <= set(idx[:4].tolist())
    assert bool(correct[idx[4:]].all())
    with pytest.raises(ValueError, match="fewer than ipc=11"):
        correct_subset(data, 11, 0, expert, theta)


def test_with_a_convnet_expert(make_fake) -> None:
    data = fake(make_fake)
    st, theta = convnet_expert()
    pred = st.forward(theta, data.train.x).argmax(1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        x, y, idx = correct_subset(data, 2, 0, st, theta, batch=6)
    warned = {c for c in (0, 1) if any(f"class {c} " in str(w.message) for w in caught)}
    assert x.shape == (4, 1, 28, 28) and y.tolist() == [0, 0, 1, 1]
    for c in (0, 1):
        if c not in warned:                                  # enough correct images: all picks correct
            assert bool((pred[idx[2 * c:2 * c + 2]] == c).all())
    labels = expert_soft_labels(st, theta, x)
    assert labels.shape == (4, 2) and torch.equal(labels.argmax(1), pred[idx])
