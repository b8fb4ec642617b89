import pytest
import torch

from mdd.nets import (ConvNet, ParamLayout, default_depth, flatten_params, functional_embed,
                      functional_forward, load_flat)


@pytest.mark.parametrize("channels, size, depth, head", [(1, 28, 3, 3), (3, 28, 3, 3), (3, 64, 4, 4),
                                                         (1, 128, 5, 4)])
def test_shapes_follow_the_real_input(channels, size, depth, head):
    net = ConvNet(channels, 7, size, width=16)
    assert net.config["depth"] == depth == default_depth(size)
    assert net.classifier.in_features == 16 * head * head
    assert net(torch.randn(2, channels, size, size)).shape == (2, 7)


def test_instance_norm_is_per_channel_groupnorm():
    net = ConvNet(1, 2, 28, width=8)
    norms = [m for m in net.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert len(norms) == 3 and all(m.num_groups == m.num_channels == 8 and m.affine for m in norms)
    assert any(isinstance(m, torch.nn.AvgPool2d) for m in net.modules())


def test_functional_call_matches_module():
    torch.manual_seed(0)
    net = ConvNet(3, 4, 28, width=8)
    layout = ParamLayout.of(net)
    flat = flatten_params(net)
    assert flat.shape == (layout.numel,) == (sum(p.numel() for p in net.parameters()),)
    x = torch.randn(5, 3, 28, 28)
    assert torch.allclose(functional_forward(net, layout, flat, x), net(x), atol=1e-6)
    assert torch.allclose(functional_embed(net, layout, flat, x), net.embed(x), atol=1e-6)


def test_functional_call_is_twice_differentiable():
    net = ConvNet(1, 2, 28, width=4)
    layout = ParamLayout.of(net)
    flat = flatten_params(net).requires_grad_(True)
    x = torch.randn(3, 1, 28, 28, requires_grad=True)
    loss = functional_forward(net, layout, flat, x).logsumexp(1).sum()
    g, = torch.autograd.grad(loss, flat, create_graph=True)
    gx, = torch.autograd.grad(g.pow(2).sum(), x)
    assert gx.abs().sum() > 0


def test_load_flat_round_trip_and_size_check():
    a, b = ConvNet(1, 2, 28, width=4), ConvNet(1, 2, 28, width=4)
    load_flat(b, flatten_params(a))
    assert torch.equal(flatten_params(a), flatten_params(b))
    with pytest.raises(ValueError, match="network needs"):
        load_flat(b, torch.zeros(3))


def test_depth_too_deep():
    with pytest.raises(ValueError, match="below 1px"):
        ConvNet(1, 2, 28, depth=6)


def test_evaluation_architectures_have_the_right_outputs():
    import torch
    from mdd.nets import ResNet18, build_network
    for arch, depth_blocks in (("convnet", 3), ("convnet-d4", 4)):
        net = build_network(arch, 1, 2, 28, width=8)
        assert net(torch.zeros(3, 1, 28, 28)).shape == (3, 2)
        assert net.config["depth"] == depth_blocks
    r = build_network("resnet18", 3, 5, 28)
    assert isinstance(r, ResNet18) and r(torch.zeros(2, 3, 28, 28)).shape == (2, 5)
    assert sum(p.numel() for p in r.parameters()) > 10_000_000   # ResNet-18: ~11 M weights
