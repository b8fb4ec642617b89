import torch

from mdd.augment import Augment, AugmentConfig


def test_seed_replays_exactly():
    aug = Augment("pathmnist")
    x = torch.randn(6, 3, 28, 28)
    assert torch.equal(aug(x, seed=3), aug(x, seed=3))
    assert not torch.equal(aug(x, seed=3), aug(x, seed=4))


def test_flip_only_where_the_modality_allows():
    assert Augment("breastmnist").flip and Augment("pathmnist").flip
    assert not Augment("pneumoniamnist").flip and not Augment("organamnist").flip
    assert Augment("pneumoniamnist", AugmentConfig(flip=True)).flip


def test_no_clipping_of_normalized_values():
    # only the colour ops: normalized images live far outside [0, 1]
    aug = Augment("pneumoniamnist", AugmentConfig(rotate=0, translate=0, scale=1.0, cutout=0.0))
    x = torch.full((2, 1, 28, 28), 5.0)
    y = aug(x, seed=0)
    assert (y > 3).all()


def test_disabled_is_identity():
    x = torch.randn(2, 1, 28, 28)
    assert Augment("breastmnist", AugmentConfig(enabled=False))(x) is x


def test_second_order_gradients_reach_the_images():
    aug = Augment("breastmnist")
    x = torch.randn(4, 1, 28, 28, requires_grad=True)
    w = torch.randn(3, 1, 3, 3, requires_grad=True)
    loss = torch.nn.functional.conv2d(aug(x, seed=1), w).tanh().sum()
    g, = torch.autograd.grad(loss, w, create_graph=True)
    gx, = torch.autograd.grad(g.pow(2).sum(), x)
    assert torch.isfinite(gx).all() and gx.abs().sum() > 0


def test_dsa_applies_one_group_per_call_chosen_by_the_seed():
    aug = Augment("breastmnist")   # dsa is the default mode
    assert aug.config.mode == "dsa"
    assert aug.groups == ["color", "crop", "scale", "rotate", "cutout", "flip"]
    picks = {aug.choose(s) for s in range(200)}
    assert picks == set(range(len(aug.groups)))          # every group is drawn
    assert aug.choose(7) == aug.choose(7)
    # a colour-only call changes every pixel's value but not where the content is
    x = torch.randn(3, 1, 28, 28)
    seed = next(s for s in range(100) if aug.choose(s) == aug.groups.index("color"))
    y = aug(x, seed=seed)
    flat = lambda t: (t - t.mean((2, 3), keepdim=True)).flatten(1)
    cos = torch.nn.functional.cosine_similarity(flat(x), flat(y))
    assert (cos > 0.999).all()


def test_dsa_is_milder_than_compose():
    x = torch.randn(16, 1, 28, 28)
    dsa, comp = Augment("breastmnist"), Augment("breastmnist", AugmentConfig(mode="compose"))
    d_dsa = sum(float((dsa(x, seed=s) - x).pow(2).mean()) for s in range(12))
    d_comp = sum(float((comp(x, seed=s) - x).pow(2).mean()) for s in range(12))
    assert d_dsa < d_comp


def test_unknown_mode_is_refused():
    import pytest
    with pytest.raises(ValueError, match="mode"):
        Augment("breastmnist", AugmentConfig(mode="both"))
