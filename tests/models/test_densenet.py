"""DenseNets: parameter counts and state dict keys against torchvision and the paper,
torchvision weight interop, dense blocks and transitions, the head surface."""

import math

import pytest
import torch
import torchvision
from torch import nn

import fovea
from fovea.arith import count_params as n_params
from _helpers import randomize_batch_norm
from fovea.models.weights import load_into
from fovea.nn.dense import DenseBlock, DenseLayer, Transition

TORCHVISION = ["densenet121", "densenet161", "densenet169", "densenet201"]


# --- torchvision equivalence ----------------------------------------------------------------

@pytest.mark.parametrize("name", TORCHVISION)
def test_param_count_and_keys_equal_torchvision(name):
    with torch.device("meta"):  # shapes only: no memory, no init
        ours = fovea.create_model(name)
        theirs = getattr(torchvision.models, name)(weights=None)
    assert n_params(ours) == n_params(theirs)
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == \
           [(k, v.shape) for k, v in theirs.state_dict().items()]
    assert ours.torchvision_name == name


@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_weights_give_the_same_outputs(name):
    torch.manual_seed(0)
    side = 64  # 2x2 after the last dense block; enough to pass through every layer
    theirs = getattr(torchvision.models, name)(weights=None)
    randomize_batch_norm(theirs, torch.randn(2, 3, side, side))
    ours = fovea.create_model(name)
    assert load_into(ours, theirs.state_dict()) == []
    ours.eval()
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        want, got = theirs(x), ours(x)
    assert want.abs().max() > 0.1  # the comparison is not between two near-zero outputs
    assert (got - want).abs().max().item() <= 1e-4


def test_torchvision_name_only_for_the_unchanged_architecture():
    with torch.device("meta"):
        assert fovea.create_model("densenet121", num_classes=10, drop_rate=0.2).torchvision_name == "densenet121"
        assert fovea.create_model("densenet121", growth_rate=16).torchvision_name is None
        assert fovea.create_model("densenet169", compression=0.7).torchvision_name is None
        assert fovea.create_model("densenet_bc100").torchvision_name is None


# --- the CIFAR DenseNet-BC (Huang et al. 2017, Table 2) ---------------------------------------------

def cifar_densenet_params(depth: int, k: int, bottleneck: bool = True, theta: float = 0.5,
                          num_classes: int = 10, bn_size: int = 4) -> int:
    """By hand: a 3x3 conv to 2k channels (16 for plain DenseNet), three blocks of
    (L - 4) / 6 (or / 3) layers [BN, 1x1 conv to 4k, BN, 3x3 conv to k], transitions
    [BN, 1x1 conv to floor(theta C)], a final BN and the fc layer. No conv has a bias."""
    n = (depth - 4) // (6 if bottleneck else 3)
    c = 2 * k if bottleneck or theta < 1 else 16
    total = 3 * c * 9
    for b in range(3):
        for _ in range(n):
            if bottleneck:
                total += 2 * c + c * bn_size * k + 2 * bn_size * k + bn_size * k * k * 9
            else:
                total += 2 * c + c * k * 9
            c += k
        if b < 2:
            out = math.floor(theta * c)
            total += 2 * c + c * out
            c = out
    return total + 2 * c + c * num_classes + num_classes


def test_densenet_bc100_matches_the_paper():
    model = fovea.create_model("densenet_bc100")
    count = n_params(model)
    assert count == cifar_densenet_params(100, 12)
    assert round(count / 1e6, 1) == 0.8  # Table 2: DenseNet-BC (L=100, k=12), 0.8M
    assert [(f["num_chs"], f["reduction"]) for f in model.feature_info] == [(216, 1), (300, 2), (342, 4)]
    assert model.num_features == 342 and model.num_classes == 10
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_densenet_bc_builder_is_configurable():
    with torch.device("meta"):
        # the plain DenseNet (L=40, k=12): no bottleneck, no compression, 16 stem channels; Table 2: 1.0M
        plain = fovea.create_model("densenet_bc", depth=40, bottleneck=False, compression=1.0)
        assert n_params(plain) == cifar_densenet_params(40, 12, bottleneck=False, theta=1.0)
        assert round(n_params(plain) / 1e6, 1) == 1.0
        assert plain.features.conv0.out_channels == 16
        # depth gives the paper's equal blocks; the default is DenseNet-BC L=100, k=12
        assert fovea.create_model("densenet_bc", depth=250, growth_rate=24).cfg.block_config == (41, 41, 41)
        assert n_params(fovea.create_model("densenet_bc")) == n_params(fovea.create_model("densenet_bc100"))
        custom = fovea.create_model("densenet_bc", growth_rate=8, block_config=(2, 3), compression=0.3)
        assert custom.num_features == math.floor(0.3 * (16 + 2 * 8)) + 3 * 8
    with pytest.raises(ValueError, match="depth=101"):
        fovea.create_model("densenet_bc", depth=101)


def test_imagenet_feature_info_matches_the_feature_maps():
    model = fovea.create_model("densenet121").eval()
    assert [(f["module"], f["num_chs"], f["reduction"]) for f in model.feature_info] == [
        ("features.denseblock1", 256, 4), ("features.denseblock2", 512, 8),
        ("features.denseblock3", 1024, 16), ("features.denseblock4", 1024, 32)]
    seen = {}
    for f in model.feature_info:
        model.get_submodule(f["module"]).register_forward_hook(
            lambda m, i, o, name=f["module"]: seen.__setitem__(name, tuple(o.shape[1:])))
    with torch.no_grad():
        feats = model.forward_features(torch.randn(1, 3, 64, 64))
    assert seen == {f["module"]: (f["num_chs"], 64 // f["reduction"], 64 // f["reduction"]) for f in model.feature_info}
    assert feats.shape == (1, model.num_features, 2, 2)
    assert feats.min() >= 0  # forward_features ends with the final norm's activation


# --- blocks ---------------------------------------------------------------------------------------

def test_dense_block_concatenates_growth_rate_channels_per_layer():
    torch.manual_seed(0)
    for bottleneck in (True, False):
        block = DenseBlock(num_layers=3, in_channels=10, growth_rate=4, bottleneck=bottleneck).eval()
        x = torch.randn(2, 10, 7, 7)
        with torch.no_grad():
            y = block(x)
        assert block.out_channels == 10 + 3 * 4 and y.shape == (2, 22, 7, 7)
        assert torch.equal(y[:, :10], x)  # the input is carried through unchanged
        widths = [layer.norm1.num_features for layer in block.children()]
        assert widths == [10, 14, 18]  # layer l sees all earlier maps


def test_dense_layer_bottleneck():
    layer = DenseLayer(20, growth_rate=6, bn_size=4)
    assert layer.conv1.kernel_size == (1, 1) and layer.conv1.out_channels == 24
    assert layer.conv2.kernel_size == (3, 3) and layer.conv2.out_channels == 6
    plain = DenseLayer(20, growth_rate=6, bottleneck=False)
    assert plain.conv1.kernel_size == (3, 3) and plain.conv1.out_channels == 6
    assert not hasattr(plain, "conv2")
    assert n_params(plain) == 2 * 20 + 20 * 6 * 9
    dropped = DenseLayer(20, growth_rate=6, drop_rate=0.5).train()
    assert (dropped(torch.randn(2, 20, 5, 5)) == 0).any()


def test_transition_compresses_and_halves():
    x = torch.randn(2, 22, 8, 8)
    for theta, want in [(0.5, 11), (0.3, 6), (1.0, 22)]:
        t = Transition(22, compression=theta)
        assert t.out_channels == math.floor(theta * 22) == want
        assert t(x).shape == (2, want, 4, 4)
        assert isinstance(t.pool, nn.AvgPool2d)
    with pytest.raises(ValueError, match="compression"):
        Transition(22, compression=0.0)


def test_norm_and_act_are_names():
    block = DenseBlock(2, 8, 4, norm="gn", act="leaky_relu")
    assert isinstance(block.denselayer1.norm1, nn.GroupNorm) and isinstance(block.denselayer1.act1, nn.LeakyReLU)
    x = torch.randn(1, 8, 4, 4)
    plain = DenseBlock(2, 8, 4, norm=None)
    y = plain(x.clone())
    assert torch.equal(y[:, :8], x)  # no in-place activation reaches the input when there is no norm


# --- the model surface ------------------------------------------------------------------------------

@pytest.mark.parametrize("name,side", [("densenet121", 64), ("densenet_bc100", 32)])
def test_head_surface(name, side):
    model = fovea.create_model(name).eval()
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape[1] == model.num_features == model.feature_info[-1]["num_chs"]
        assert torch.allclose(model.forward_head(feats), model(x), atol=1e-5)
        assert model.forward_head(feats, pre_logits=True).shape == (2, model.num_features)
        model.reset_classifier(7)
        assert model.num_classes == 7 and model.get_classifier().out_features == 7
        assert model(x).shape == (2, 7)
        model.reset_classifier(0)
        assert isinstance(model.get_classifier(), nn.Identity)
        assert model(x).shape == (2, model.num_features)


def test_trains_with_any_num_classes_and_in_channels():
    model = fovea.create_model("densenet_bc", depth=22, growth_rate=4, num_classes=3, in_channels=1, drop_rate=0.2)
    out = model(torch.randn(2, 1, 20, 20))
    assert out.shape == (2, 3)
    out.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_bad_config_values_name_the_value():
    with pytest.raises(ValueError, match="'tiny'"):
        fovea.create_model("densenet121", stem="tiny")
    with pytest.raises(ValueError, match="block_config=\\(\\)"):
        fovea.create_model("densenet121", block_config=())
