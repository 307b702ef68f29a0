"""SqueezeNet and the Fire module: torchvision parity, the classifier surface, Fire's widths
and costs, and the paper's simple bypass."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import fovea
from fovea.arith import count_params as n_params
from fovea.errors import InputTooSmallError
from fovea.models.weights import load_into
from fovea.nn.fire import Fire

VERSIONS = ["1_0", "1_1"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Tiny inputs gain nothing from a second thread, and OpenMP threads spinning on cores that
    # other processes share can make each op many times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tv_squeezenet(version: str, **kwargs) -> nn.Module:
    return getattr(torchvision.models, f"squeezenet{version}")(weights=None, **kwargs)


@pytest.mark.parametrize("version, count", [("1_0", 1_248_424), ("1_1", 1_235_496)])
def test_param_count_matches_torchvision(version, count):
    tv, ours = tv_squeezenet(version), fovea.create_model(f"squeezenet{version}")
    assert n_params(ours) == n_params(tv) == count
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [(k, v.shape) for k, v in tv.state_dict().items()]
    assert ours.torchvision_name == f"squeezenet{version}"


@pytest.mark.parametrize("version", VERSIONS)
def test_loads_torchvision_weights(version):
    torch.manual_seed(0)
    tv = tv_squeezenet(version).eval()
    nn.init.normal_(tv.classifier[1].weight, 0.0, 0.1)  # torchvision's 0.01 gives near-zero outputs
    ours = fovea.create_model(f"squeezenet{version}")
    assert load_into(ours, tv.state_dict()) == []
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected, got = tv(x), ours.eval()(x)
    assert expected.std() > 0.1  # a meaningful comparison, not two vanishing outputs
    assert (got - expected).abs().max() <= 1e-4


def test_other_class_count_keeps_fresh_head():
    ours = fovea.create_model("squeezenet1_1", num_classes=10)
    missing = load_into(ours, tv_squeezenet("1_1").state_dict())
    assert sorted(missing) == ["classifier.1.bias", "classifier.1.weight"]


@pytest.mark.parametrize("version", VERSIONS)
def test_classifier_surface(version):
    model = fovea.create_model(f"squeezenet{version}", num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits, feats = model(x), model.forward_features(x)
        assert logits.shape == (2, 10)
        torch.testing.assert_close(model.forward_head(feats), logits)
        pooled = model.forward_head(feats, pre_logits=True)
        assert pooled.shape == (2, model.num_features) == (2, 512)
        torch.testing.assert_close(pooled, feats.mean((2, 3)))
        conv = model.get_classifier()
        assert isinstance(conv, nn.Conv2d) and conv.out_channels == 10
        model.reset_classifier(3)
        assert model.num_classes == 3 and model(x).shape == (2, 3)
        model.reset_classifier(0)
        torch.testing.assert_close(model(x), pooled)
    # Training mode is a plain tensor too (no auxiliary heads); gradients reach the stem.
    model.reset_classifier(4)
    model.train()(x).sum().backward()
    assert model.features[0].weight.grad is not None


@pytest.mark.parametrize("version", VERSIONS)
def test_feature_info_channels(version):
    model = fovea.create_model(f"squeezenet{version}", num_classes=2).eval()
    shapes = {}
    for info in model.feature_info:
        model.get_submodule(info["module"]).register_forward_hook(
            lambda m, i, o, key=info["module"]: shapes.__setitem__(key, o.shape))
    with torch.no_grad():
        model(torch.randn(1, 3, 224, 224))
    sizes = [shapes[i["module"]][-1] for i in model.feature_info]
    assert [shapes[i["module"]][1] for i in model.feature_info] == [i["num_chs"] for i in model.feature_info]
    # Unpadded convolutions and pools shave a few pixels: each stage is within 10% of 224 / reduction.
    assert all(abs(s * i["reduction"] / 224 - 1) < 0.1 for s, i in zip(sizes, model.feature_info))


def test_any_input_channels_and_size():
    model = fovea.create_model("squeezenet1_1", num_classes=5, in_channels=1).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 17, 17)).shape == (2, 5)
        assert model(torch.randn(2, 1, 40, 33)).shape == (2, 5)
    with pytest.raises(InputTooSmallError, match="below 1 at layer"):
        model(torch.randn(1, 1, 16, 16))
    with pytest.raises(InputTooSmallError, match="below 1 at layer"):
        fovea.create_model("squeezenet1_0")(torch.randn(1, 3, 20, 64))


def test_fire_widths_and_cost():
    fire = Fire(96, 16, 64, 64)
    y = fire(torch.randn(2, 96, 13, 11))
    assert fire.out_channels == 64 + 64 and y.shape == (2, 128, 13, 11)
    # squeeze 1x1 + expand 1x1 + expand 3x3, each with bias
    assert n_params(fire) == (96 * 16 + 16) + (16 * 64 + 64) + (9 * 16 * 64 + 64)
    # The squeeze layer is the point: 3x3 filters on all 96 inputs would cost 9 * 96 * 64.
    assert n_params(fire) < 9 * 96 * 64
    assert (y >= 0).all()  # both expand branches end in ReLU
    assert Fire(32, 8, 16, 48)(torch.randn(1, 32, 5, 5)).shape == (1, 64, 5, 5)


def test_fire_norm_act_and_bypass():
    fire = Fire(128, 16, 64, 64, act="leaky_relu", norm="bn", residual=True)
    assert fire.squeeze.bias is None and isinstance(fire.squeeze_norm, nn.BatchNorm2d)
    assert isinstance(fire.expand3x3_activation, nn.LeakyReLU)
    x = torch.randn(2, 128, 6, 6)
    plain = Fire(128, 16, 64, 64, act="leaky_relu", norm="bn")
    plain.load_state_dict(fire.state_dict())
    torch.testing.assert_close(fire(x), plain(x) + x)
    with pytest.raises(ValueError, match="in_channels == out_channels"):
        Fire(96, 16, 64, 64, residual=True)


@pytest.mark.parametrize("version", VERSIONS)
def test_simple_bypass(version):
    # The paper's simple bypass goes around fire3, fire5, fire7 and fire9, the Fire modules whose
    # input and output widths agree; it adds no parameters.
    model = fovea.create_model(f"squeezenet{version}", bypass=True)
    fires = [m for m in model.features if isinstance(m, Fire)]
    assert [f.residual for f in fires] == [False, True, False, True, False, True, False, True]
    assert n_params(model) == n_params(fovea.create_model(f"squeezenet{version}"))
    assert model.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 1000)
