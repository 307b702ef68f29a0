"""VGG-11/13/16/19 with and without batch norm: parameter counts and state dict keys against
torchvision, weight interop, layer names, the head surface and input sizes."""

import gc

import pytest
import torch
import torchvision
from torch import nn

import fovea
from fovea.arith import count_params as n_params
from fovea.errors import InputTooSmallError, UserError
from fovea.models.weights import load_into

VARIANTS = ["vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn"]


@pytest.mark.parametrize("name", VARIANTS)
def test_param_count_and_keys_equal_torchvision(name):
    with torch.device("meta"):  # shapes only: no memory, no init
        ours = fovea.create_model(name)
        theirs = getattr(torchvision.models, name)()
    assert n_params(ours) == n_params(theirs)
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [(k, v.shape) for k, v in theirs.state_dict().items()]
    assert ours.torchvision_name == name


def test_well_known_sizes():
    with torch.device("meta"):
        assert n_params(fovea.create_model("vgg16")) == 138_357_544
        assert n_params(fovea.create_model("vgg19")) == 143_667_240
        # norm="bn" on the plain builder is the _bn model
        assert fovea.create_model("vgg11", norm="bn").torchvision_name == "vgg11_bn"
        assert fovea.create_model("vgg11", norm="gn").torchvision_name is None


def random_weights(model: nn.Module) -> nn.Module:
    """Materialize a model built on the meta device with random weights: N(0, 2 / fan_in) so
    that activations keep their scale through 19 layers, and non-trivial batch-norm
    statistics. Cheaper than the constructors' own init, which these tests would overwrite."""
    model.to_empty(device="cpu")
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.normal_(0, (2 / m.weight[0].numel()) ** 0.5)
                m.bias.normal_(0, 0.01)
            elif isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
                m.num_batches_tracked.zero_()
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
    return model.eval()


@pytest.mark.parametrize("name", VARIANTS)
def test_torchvision_weights_give_the_same_outputs(name):
    torch.manual_seed(0)
    with torch.device("meta"):
        theirs = getattr(torchvision.models, name)()
        ours = fovea.create_model(name)
    theirs = random_weights(theirs)
    ours.to_empty(device="cpu").eval()  # every tensor is about to be overwritten
    assert load_into(ours, theirs.state_dict()) == []
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a, b = ours(x), theirs(x)
    assert a.shape == (2, 1000) and a.std() > 1e-2  # a real signal, not vanishing outputs that match anyway
    assert (a - b).abs().max() <= 1e-4
    del ours, theirs, a, b
    gc.collect()


@pytest.mark.parametrize("name, expected", [
    ("vgg16", {"features.0": "conv1_1", "features.28": "conv5_3", "features.29": "relu5_3", "features.30": "pool5",
               "classifier.0": "fc6", "classifier.6": "fc8"}),
    ("vgg16_bn", {"features.1": "bn1_1", "features.40": "conv5_3", "features.43": "pool5"}),
    # conv4_2 is style transfer's content layer
    ("vgg19", {"features.34": "conv5_4", "features.36": "pool5", "features.21": "conv4_2"}),
])
def test_layer_names(name, expected):
    with torch.device("meta"):
        model = fovea.create_model(name)
    assert {k: model.layer_names[k] for k in expected} == expected
    kinds = {"conv": nn.Conv2d, "bn": nn.BatchNorm2d, "relu": nn.ReLU, "pool": nn.MaxPool2d,
             "fc": nn.Linear, "drop": nn.Dropout}
    for path, layer in model.layer_names.items():  # every name says what the layer is
        kind = next(k for k in kinds if layer.startswith(k))
        assert isinstance(model.get_submodule(path), kinds[kind]), (path, layer)
    assert len(model.layer_names) == len(model.features) + len(model.classifier)


def test_head_surface_and_feature_info():
    torch.manual_seed(0)
    with torch.device("meta"):
        model = fovea.create_model("vgg11_bn", num_classes=4, in_channels=1, dropout=0.2)
    model = random_weights(model)
    assert model.classifier[2].p == 0.2
    x = torch.randn(2, 1, 64, 64)
    outs = {}
    for info in model.feature_info:
        model.get_submodule(info["module"]).register_forward_hook(
            lambda m, i, o, name=info["module"]: outs.update({name: (o.shape[1], 64 // o.shape[-1])}))
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (2, 512, 2, 2)
        assert outs == {i["module"]: (i["num_chs"], i["reduction"]) for i in model.feature_info}
        assert [i["reduction"] for i in model.feature_info] == [2, 4, 8, 16, 32]
        assert model.forward_head(feats).shape == (2, 4)
        assert model.forward_head(feats, pre_logits=True).shape == (2, model.num_features) == (2, 4096)
        assert model.get_classifier().out_features == 4
        model.reset_classifier(9)
        assert model(x).shape == (2, 9) and model.num_classes == 9
        model.reset_classifier(0)
        assert model(x).shape == (2, 4096) and isinstance(model.get_classifier(), nn.Identity)


def test_custom_cfg_trains():
    torch.manual_seed(0)  # a narrow three-stage net: the same code path, a fraction of the cost
    model = fovea.create_model("vgg11", cfg=[8, "M", 16, 16, "M", 32, "M"], norm="bn", num_classes=3)
    assert model.min_input_size == 8 and model.torchvision_name is None
    assert model.layer_names["features.11"] == "conv3_1" and model.feature_info[-1] == dict(
        module="features.14", num_chs=32, reduction=8)
    model(torch.randn(2, 3, 16, 16)).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_init_schemes():
    torch.manual_seed(0)
    small = dict(cfg=(64, "M", 128, "M", 8, "M"))  # the first two stages of VGG-11, a narrow fc6
    model = fovea.create_model("vgg11", **small)
    fc6, conv = model.classifier[0], model.features[3]  # conv2_1: 64 -> 128
    assert abs(fc6.weight.std().item() - 0.01) < 1e-3 and torch.all(fc6.bias == 0)
    assert abs(conv.weight.std().item() - (2 / (64 * 9)) ** 0.5) < 2e-3  # He et al.: N(0, 2 / n_l)
    assert torch.all(conv.bias == 0)
    paper = fovea.create_model("vgg11", init="paper", **small)
    assert abs(paper.features[3].weight.std().item() - 0.01) < 1e-3
    xavier = fovea.create_model("vgg11", init="xavier", **small)
    assert abs(xavier.features[3].weight.std().item() - (2 / (64 * 9 + 128 * 9)) ** 0.5) < 2e-3
    with pytest.raises(UserError, match="init must be one of"):
        fovea.create_model("vgg11", init="orthogonal")


def test_input_sizes():
    with torch.device("meta"):
        model = fovea.create_model("vgg11", num_classes=3)
    model = random_weights(model)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 40)).shape == (1, 3)  # 1x1 after five pools, then pooled up to 7x7
        with pytest.raises(InputTooSmallError, match="at layer 'pool5'"):
            model(torch.randn(1, 3, 31, 64))
    with pytest.raises(UserError, match="does not take depth"):
        fovea.create_model("vgg16", depth=16)
