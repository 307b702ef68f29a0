import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fovea.nn import (ConvNormAct, DeformConv2d, GlobalAvgPool, LocalResponseNorm, MinPool, SeparableConv,
                      alexnet_init, conv, conv_transpose, get_act, he_init, pool, xavier_init)


@pytest.mark.parametrize("dim", [1, 2, 3])
@pytest.mark.parametrize("k,s,d", [(3, 1, 1), (5, 1, 2), (3, 2, 1), (4, 1, 1), (1, 1, 1)])
def test_same_padding_keeps_size_or_divides_by_stride(dim, k, s, d):
    if s > 1 and d * (k - 1) % 2:
        pytest.skip("same padding with stride needs an odd effective kernel")
    layer = conv(2, 3, k, stride=s, dilation=d, padding="same", dim=dim)
    n = 9
    out = layer(torch.randn(1, 2, *(n,) * dim))
    assert out.shape[2:] == (math.ceil(n / s),) * dim


def test_same_padding_with_stride_and_even_kernel_is_an_error():
    with pytest.raises(ValueError, match="odd effective kernel"):
        conv(1, 1, 4, stride=2, padding="same")


def test_valid_padding_shrinks_by_k_minus_one():
    assert conv(1, 1, 5, padding="valid")(torch.randn(1, 1, 12, 12)).shape[-1] == 8


@pytest.mark.parametrize("mode,torch_mode", [("reflect", "reflect"), ("mirror", "reflect"),
                                             ("replicate", "replicate"), ("circular", "circular")])
def test_padding_modes_equal_explicit_pad_then_valid_conv(mode, torch_mode):
    layer = conv(2, 4, 3, padding=1, padding_mode=mode)
    x = torch.randn(1, 2, 7, 6)
    ref = F.conv2d(F.pad(x, (1, 1, 1, 1), mode=torch_mode), layer.weight, layer.bias)
    torch.testing.assert_close(layer(x), ref)


def test_groups_and_one_by_one_parameter_counts():
    assert sum(p.numel() for p in conv(8, 16, 3, groups=4).parameters()) == (3 * 3 * 8 // 4 + 1) * 16
    one = conv(64, 32, 1)
    assert sum(p.numel() for p in one.parameters()) == (64 + 1) * 32
    x = torch.randn(2, 64, 5, 5)  # a 1x1 convolution is a per-pixel fully connected layer
    ref = torch.einsum("nchw,oc->nohw", x, one.weight[:, :, 0, 0]) + one.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(one(x), ref, atol=1e-5, rtol=1e-5)


def test_separable_conv_parameters_and_equivalence():
    sep = SeparableConv(8, 16, 3)
    assert sum(p.numel() for p in sep.parameters()) == 3 * 3 * 8 + 8 * 16 + 16
    x = torch.randn(1, 8, 6, 6)
    dw = F.conv2d(x, sep.depthwise.weight, padding=1, groups=8)
    torch.testing.assert_close(sep(x), F.conv2d(dw, sep.pointwise.weight, sep.pointwise.bias))


def test_transposed_conv_upsamples_by_stride():
    up = conv_transpose(4, 2, 4, stride=2, padding=1)
    assert up(torch.randn(1, 4, 7, 7)).shape == (1, 2, 14, 14)


def test_deformable_conv_starts_as_plain_conv_and_learns_offsets():
    layer = DeformConv2d(3, 5, 3)
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    ref = F.conv2d(x, layer.conv.weight, layer.conv.bias, padding=1)
    out = layer(x)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    out.square().sum().backward()
    assert layer.offset.weight.grad is not None and layer.offset.weight.grad.abs().sum() > 0


def test_max_pool_gradient_goes_to_winner_only():
    x = torch.tensor([[[[1.0, 5.0], [2.0, 3.0]]]], requires_grad=True)
    pool("max", 2)(x).sum().backward()
    assert x.grad.tolist() == [[[[0.0, 1.0], [0.0, 0.0]]]]


def test_min_pool_and_its_gradient():
    x = torch.randn(1, 2, 6, 6, requires_grad=True)
    out = MinPool(2)(x)
    torch.testing.assert_close(out, -F.max_pool2d(-x, 2))
    out.sum().backward()
    assert (x.grad.sum(dim=(-1, -2)) == 9).all()  # one winner per 2x2 window
    assert set(x.grad.unique().tolist()) <= {0.0, 1.0}


def test_average_and_global_average_pooling():
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(pool("avg", 2)(x), F.avg_pool2d(x, 2))
    torch.testing.assert_close(GlobalAvgPool()(x), x.mean((2, 3)))
    assert pool("gap")(torch.randn(2, 3, 4, 5, 6)).shape == (2, 3)


def test_overlapping_pooling_output_size():
    assert pool("max", 3, 2)(torch.randn(1, 1, 55, 55)).shape[-1] == 27  # AlexNet: 55 -> 27


@pytest.mark.parametrize("name,ref", [("relu", torch.relu), ("sigmoid", torch.sigmoid), ("tanh", torch.tanh),
                                      ("leaky_relu", lambda x: F.leaky_relu(x, 0.01))])
def test_activations_by_name(name, ref):
    x = torch.randn(50)
    torch.testing.assert_close(get_act(name)(x), ref(x))


def test_prelu_slope_is_learned():
    act = get_act("prelu")
    x = -torch.ones(4)
    act(x).sum().backward()
    assert act.weight.grad.item() == pytest.approx(-4.0)  # d/da of a*x summed over 4 negatives


def test_unknown_activation_names_the_value():
    with pytest.raises(ValueError, match="'swishy'"):
        get_act("swishy")


@pytest.mark.parametrize("shape", [(2, 16, 5, 5), (2, 7, 9), (1, 6, 2, 3, 4)])
def test_lrn_matches_torch(shape):
    x = torch.randn(*shape) * 3
    for alpha in (1e-4, 0.5):
        ours = LocalResponseNorm(5, alpha, 0.75, 2.0)(x)
        torch.testing.assert_close(ours, nn.LocalResponseNorm(5, alpha, 0.75, 2.0)(x))


def test_lrn_defaults_are_alexnets():
    lrn = LocalResponseNorm()
    assert (lrn.size, lrn.alpha, lrn.beta, lrn.k) == (5, 1e-4, 0.75, 2.0)


def test_conv_norm_act_orders():
    post = ConvNormAct(4, 8, 3)
    assert list(post._modules) == ["conv", "bn", "act"] and post.conv.bias is None
    assert post.bn.num_features == 8
    pre = ConvNormAct(4, 8, 3, order="pre")
    assert list(pre._modules) == ["bn", "act", "conv"] and pre.bn.num_features == 4
    x = torch.randn(2, 4, 5, 5)
    pre.eval()
    torch.testing.assert_close(pre(x), pre.conv(torch.relu(pre.bn(x))))
    assert isinstance(ConvNormAct(4, 8, 3, norm=None, act="leaky_relu").act, nn.LeakyReLU)


def test_he_init_std():
    layer = nn.Conv2d(64, 256, 3)
    he_init(layer)
    n_l = 3 * 3 * 64
    assert layer.weight.std().item() == pytest.approx(math.sqrt(2 / n_l), rel=0.03)
    assert layer.bias.abs().sum() == 0


def test_alexnet_init_gaussian_and_bias_one():
    net = nn.Sequential(nn.Conv2d(3, 64, 5), nn.Conv2d(64, 64, 3))
    alexnet_init(net, bias_one=["1"])
    assert net[0].weight.std().item() == pytest.approx(0.01, rel=0.05)
    assert (net[0].bias == 0).all() and (net[1].bias == 1).all()


def test_xavier_init_variance():
    layer = nn.Linear(300, 200)
    xavier_init(layer)
    assert layer.weight.var().item() == pytest.approx(2 / 500, rel=0.05)
