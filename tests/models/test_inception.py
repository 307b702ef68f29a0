"""GoogLeNet, Inception v3 and the Inception modules: torchvision parity (parameter counts,
weights, outputs), auxiliary heads, the classifier surface, and the factorizations' costs."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from torch import nn

import fovea
from fovea.arith import count_params as n_params
from fovea.errors import InputTooSmallError
from fovea.models.base import AuxOutputs
from fovea.models.googlenet import INCEPTION_CFG
from fovea.models.weights import load_into
from fovea.nn.inception import (AsymmetricConv, InceptionA, InceptionB, InceptionC, InceptionD, InceptionE,
                                InceptionNaive, InceptionV1, StackedConv3x3)
from fovea.nn.init import truncated_normal_


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Tiny inputs gain nothing from a second thread, and OpenMP threads spinning on cores that
    # other processes share can make each op many times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def calibrate_bn(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Random but well-scaled weights: random BN affine parameters, running statistics set to
    the statistics of ``x``'s activations (so eval-mode outputs are O(1), not vanishing)."""
    torch.manual_seed(0)
    model.eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.normal_(m.bias, 0.0, 0.1)
            m.reset_running_stats()
            m.momentum = None  # cumulative average: one batch sets the statistics
            m.train()  # the model stays in eval mode, so no auxiliary head or dropout runs
    with torch.no_grad():
        model(x)
    return model.eval()


@pytest.fixture(scope="module")
def tv_googlenet():
    # init_weights=False: PyTorch's default init (fast); the weights' values are set by calibrate_bn.
    tv = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=False, transform_input=False)
    return calibrate_bn(tv, torch.randn(4, 3, 64, 64))


@pytest.fixture(scope="module")
def tv_inception():
    tv = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False, transform_input=False)
    return calibrate_bn(tv, torch.randn(4, 3, 75, 75))


# ------------------------------------------------------------------ parameter counts

@pytest.mark.parametrize("aux", [True, False])
def test_googlenet_param_count_matches_torchvision(aux, tv_googlenet):
    tv = tv_googlenet if aux else torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=False)
    ours = fovea.create_model("googlenet", aux_logits=aux, branch3_kernel=3)
    assert n_params(ours) == n_params(tv) == (13_004_888 if aux else 6_624_904)
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [(k, v.shape) for k, v in tv.state_dict().items()]


def test_googlenet_paper_5x5_branch_param_count():
    # The paper's 5x5 adds (25 - 9) * #5x5reduce * #5x5 weights per module over torchvision's 3x3.
    extra = sum(16 * c[4] * c[5] for c in INCEPTION_CFG.values())
    assert n_params(fovea.create_model("googlenet", aux_logits=False)) == 6_624_904 + extra


@pytest.mark.parametrize("aux", [True, False])
def test_inception_v3_param_count_matches_torchvision(aux, tv_inception):
    tv = tv_inception if aux else torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False)
    ours = fovea.create_model("inception_v3", aux_logits=aux)
    assert n_params(ours) == n_params(tv) == (27_161_264 if aux else 23_834_568)
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [(k, v.shape) for k, v in tv.state_dict().items()]


# ------------------------------------------------------------------ weight interop

def test_googlenet_loads_torchvision_weights(tv_googlenet):
    ours = fovea.create_model("googlenet", branch3_kernel=3)
    assert load_into(ours, tv_googlenet.state_dict()) == []
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected, got = tv_googlenet(x), ours.eval()(x)
    assert expected.std() > 0.1  # a meaningful comparison, not two vanishing outputs
    assert (got - expected).abs().max() <= 1e-4


def test_googlenet_training_outputs_match_torchvision(tv_googlenet):
    tv = copy.deepcopy(tv_googlenet).train()  # training updates BN statistics: work on copies
    ours = fovea.create_model("googlenet", branch3_kernel=3, dropout=0.2)  # torchvision's rate
    load_into(ours, tv.state_dict())
    ours.train()
    x = torch.randn(2, 3, 64, 64)
    torch.manual_seed(1)
    expected = tv(x)
    torch.manual_seed(1)  # same dropout masks: both run aux1, aux2, then the main dropout
    got = ours(x)
    assert isinstance(got, AuxOutputs)
    for a, b in [(got.logits, expected.logits), (got.aux[0], expected.aux_logits1), (got.aux[1], expected.aux_logits2)]:
        assert (a - b).abs().max() <= 1e-4


def test_inception_v3_loads_torchvision_weights(tv_inception):
    ours = fovea.create_model("inception_v3")
    assert load_into(ours, tv_inception.state_dict()) == []
    x = torch.randn(2, 3, 75, 75)
    with torch.no_grad():
        expected, got = tv_inception(x), ours.eval()(x)
    assert expected.std() > 0.1
    assert (got - expected).abs().max() <= 1e-4


# ------------------------------------------------------------------ the classifier surface

@pytest.mark.parametrize("name, size, n_aux, width", [("googlenet", 64, 2, 1024), ("inception_v3", 75, 1, 2048)])
def test_aux_outputs_heads_and_features(name, size, n_aux, width):
    model = fovea.create_model(name, num_classes=10)
    x = torch.randn(2, 3, size, size)
    model.train()
    out = model(x)
    assert isinstance(out, AuxOutputs)
    assert out.logits.shape == (2, 10) and len(out.aux) == n_aux
    assert all(a.shape == (2, 10) for a in out.aux)
    out.logits.sum().add(sum(a.sum() for a in out.aux)).backward()  # every head reaches the trunk
    assert model.get_classifier().weight.grad is not None

    model.eval()
    with torch.no_grad():
        logits = model(x)
        feats = model.forward_features(x)
        assert isinstance(logits, torch.Tensor) and logits.shape == (2, 10)
        torch.testing.assert_close(model.forward_head(feats), logits)
        assert feats.shape[1] == model.num_features == model.feature_info[-1]["num_chs"] == width
        assert model.forward_head(feats, pre_logits=True).shape == (2, width)

        model.reset_classifier(5)
        assert model.num_classes == 5 and model(x).shape == (2, 5)
        model.train()
        out = model(x)
        assert out.logits.shape == (2, 5) and all(a.shape == (2, 5) for a in out.aux)
        model.eval()
        model.reset_classifier(0)
        assert isinstance(model.get_classifier(), nn.Identity)
        assert model(x).shape == (2, width)


def test_aux_logits_off_returns_tensor_in_training():
    model = fovea.create_model("googlenet", num_classes=3, aux_logits=False).train()
    assert model.aux1 is None and model.aux2 is None
    out = model(torch.randn(2, 3, 32, 32))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 3)


def test_googlenet_feature_info_matches_hooks():
    model = fovea.create_model("googlenet", num_classes=4).eval()
    shapes = {}
    for info in model.feature_info:
        model.get_submodule(info["module"]).register_forward_hook(
            lambda m, i, o, key=info["module"]: shapes.__setitem__(key, o.shape))
    with torch.no_grad():
        model(torch.randn(2, 3, 64, 64))
    for info in model.feature_info:
        assert shapes[info["module"]][1:] == (info["num_chs"], 64 // info["reduction"], 64 // info["reduction"])


def test_googlenet_paper_options_and_any_input():
    # The 2014 network: no batch norm, LRN in the stem, the 5x5 branch; one input channel, odd size.
    model = fovea.create_model("googlenet", num_classes=7, in_channels=1, norm=None, stem_norm="lrn").eval()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert model.inception3a.branch3[1].conv.kernel_size == (5, 5)
    with torch.no_grad():
        assert model(torch.randn(2, 1, 15, 15)).shape == (2, 7)
        assert model(torch.randn(2, 1, 50, 37)).shape == (2, 7)
    with pytest.raises(InputTooSmallError, match="below 1 at layer"):
        model(torch.randn(1, 1, 14, 20))


def test_inception_v3_minimum_input_and_aux_at_any_size():
    model = fovea.create_model("inception_v3", num_classes=3)
    assert model.AuxLogits.fc.weight.abs().max() <= 0.002  # its own std, 0.001, cut at 2 std
    with pytest.raises(InputTooSmallError, match="below 1 at layer"):
        model(torch.randn(1, 3, 74, 80))
    out = model.train()(torch.randn(2, 3, 75, 80))  # the aux head sees a 3x3 grid here
    assert out.aux[0].shape == (2, 3)


def test_truncated_normal_is_cut_at_two_std():
    w = truncated_normal_(torch.empty(100_000), std=0.1)
    assert w.abs().max() <= 0.2
    assert 0.085 < w.std() < 0.091  # std of N(0, 1) cut at +-2 is 0.880


# ------------------------------------------------------------------ the modules

def test_inception_v1_modules_concatenate_branches():
    x = torch.randn(2, 192, 9, 9)
    naive = InceptionNaive(192, 64, 128, 32)
    assert naive.out_channels == 64 + 128 + 32 + 192 and naive(x).shape == (2, naive.out_channels, 9, 9)
    block = InceptionV1(*INCEPTION_CFG["inception3a"])  # 64 + 128 + 32 + 32 = 256
    assert block.out_channels == 256 and block(x).shape == (2, 256, 9, 9)
    # The 1x1 reductions make it cheaper than the naive module with the same 1x1/3x3/5x5 widths.
    assert n_params(block) < n_params(InceptionNaive(192, 64, 128, 32))
    # 5x5 vs 3x3 "5x5" branch: the difference is (25 - 9) * 16 * 32 weights.
    small = InceptionV1(*INCEPTION_CFG["inception3a"], branch3_kernel=3)
    assert n_params(block) - n_params(small) == 16 * 16 * 32


def test_two_3x3_replace_a_5x5():
    c = 64
    stacked = StackedConv3x3(c, c, kernel_size=5, norm=None)
    full = nn.Conv2d(c, c, 5, padding=2)
    assert len(stacked) == 2
    assert n_params(stacked) == 2 * (9 * c * c + c) and n_params(full) == 25 * c * c + c
    assert n_params(stacked) < n_params(full)  # 18/25 of the weights: 28% fewer
    x = torch.randn(2, c, 11, 13)
    assert stacked(x).shape == full(x).shape == (2, c, 11, 13)
    assert len(StackedConv3x3(8, 8, kernel_size=7)) == 3


def test_n_by_1_then_1_by_n_replace_an_n_by_n():
    c, n = 32, 7
    asym = AsymmetricConv(c, c, n=n, norm=None)
    full = nn.Conv2d(c, c, n, padding=n // 2)
    assert n_params(asym) == 2 * (n * c * c + c) and n_params(full) == n * n * c * c + c
    assert n_params(asym) < n_params(full)  # 2n / n^2 of the weights: 71% fewer at n = 7
    x = torch.randn(2, c, 10, 12)
    assert asym(x).shape == full(x).shape == (2, c, 10, 12)
    assert [m.conv.kernel_size for m in asym] == [(1, 7), (7, 1)]


def test_inception_a_factorized_option():
    x = torch.randn(2, 192, 7, 7)
    released, factorized = InceptionA(192, 32), InceptionA(192, 32, factorize_5x5=True)
    assert released(x).shape == factorized(x).shape == (2, 256, 7, 7)
    # 5x5 48->64 (+ BN) replaced by 3x3 48->64 and 3x3 64->64 (+ BN each)
    assert n_params(released) - n_params(factorized) == (25 * 48 * 64 + 128) - (9 * 48 * 64 + 128 + 9 * 64 * 64 + 128)


@pytest.mark.parametrize("block, size, out_size", [
    (InceptionB(288), 9, 4), (InceptionC(768, 128), 5, 5), (InceptionD(768), 9, 4), (InceptionE(1280), 3, 3)])
def test_inception_v3_modules_shapes(block, size, out_size):
    in_ch = next(block.parameters()).shape[1]
    y = block(torch.randn(2, in_ch, size, size))
    assert y.shape == (2, block.out_channels, out_size, out_size)


def test_inception_c_factorization_is_cheaper():
    block = InceptionC(768, channels_7x7=128)
    c7 = 128
    branch = [block.branch7x7_2, block.branch7x7_3]  # 1x7 c7->c7 then 7x1 c7->192 (+ BN)
    assert sum(n_params(m) for m in branch) == 7 * c7 * c7 + 2 * c7 + 7 * c7 * 192 + 2 * 192
    assert sum(n_params(m) for m in branch) < 49 * c7 * 192  # one 7x7 c7->192
    assert InceptionC(768, 128, n=5).branch7x7_2.conv.kernel_size == (1, 5)


def test_blocks_take_norm_and_act_names():
    block = InceptionE(64, norm="gn", act="leaky_relu")
    assert isinstance(block.branch1x1.bn, nn.GroupNorm) and isinstance(block.branch1x1.act, nn.LeakyReLU)
    assert block(torch.randn(2, 64, 4, 4)).shape == (2, 2048, 4, 4)
