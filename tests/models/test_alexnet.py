"""AlexNet and ZFNet: parameter counts against torchvision and the paper, weight interop with
torchvision, the paper's layer sizes, init, LRN placement, two-tower grouping and the head."""

import pytest
import torch
import torchvision
from torch import nn

import fovea
from fovea.arith import count_params as n_params
from fovea.errors import InputTooSmallError, UserError
from fovea.models.alexnet import TORCHVISION_CONFIG
from fovea.models.weights import load_into
from fovea.nn.norm import LocalResponseNorm


def meta(build, *args, **kwargs) -> nn.Module:
    """Build on the meta device (shapes only: no memory, no init)."""
    with torch.device("meta"):
        return build(*args, **kwargs)


def random_weights(model: nn.Module) -> nn.Module:
    """Materialize a meta-device model with random N(0, 2 / fan_in) weights (activations keep
    their scale), cheaper than an init the test would overwrite anyway."""
    model.to_empty(device="cpu")
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.normal_(0, (2 / m.weight[0].numel()) ** 0.5)
                m.bias.normal_(0, 0.01)
    return model.eval()


def module(model: nn.Module, name: str) -> nn.Module:
    """A layer by its paper name ("conv2", "fc6") through the model's layer_names."""
    path = {v: k for k, v in model.layer_names.items()}[name]
    return model.get_submodule(path)


@pytest.mark.parametrize("num_classes", [1000, 10])
def test_param_count_equals_torchvision(num_classes):
    with torch.device("meta"):  # shapes only: no memory, no init
        ours = fovea.create_model("alexnet", num_classes=num_classes, **TORCHVISION_CONFIG)
        theirs = torchvision.models.alexnet(num_classes=num_classes)
    assert n_params(ours) == n_params(theirs)
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [(k, v.shape) for k, v in theirs.state_dict().items()]


def test_paper_param_counts_lrn_free_and_two_tower_formula():
    with torch.device("meta"):
        paper = fovea.create_model("alexnet")
        no_lrn = fovea.create_model("alexnet", lrn=False)
        towers = fovea.create_model("alexnet", groups=2)
    assert n_params(paper) == n_params(no_lrn) == 62_378_344  # LRN has no parameters
    # A k x k conv from C_in to C_out maps in g groups has C_out * (C_in / g) * k^2 weights:
    # splitting conv2, conv4 and conv5 in two saves half of each one's weights (biases stay).
    saved = sum((1 - 1 / 2) * c_in * c_out * k * k for c_in, c_out, k in [(96, 256, 5), (384, 384, 3), (384, 256, 3)])
    assert n_params(paper) - n_params(towers) == saved == 1_413_120
    assert n_params(towers) == 60_965_224  # the two-GPU net as trained (Caffe's bvlc_alexnet count)


@pytest.mark.parametrize("variant, sizes", [
    # Krizhevsky et al. 2012: 224 -> 55 -> 27 -> 13 -> 6; Zeiler & Fergus 2013, Figure 3: 224 -> 110 -> 55 -> 26 -> 13 -> 6
    ("alexnet", dict(conv1=55, pool1=27, conv2=27, pool2=13, conv3=13, conv5=13, pool5=6)),
    ("zfnet", dict(conv1=110, pool1=55, conv2=26, pool2=13, conv3=13, conv5=13, pool5=6)),
])
def test_layer_sizes_at_224_match_the_papers(variant, sizes):
    model = random_weights(meta(fovea.create_model, variant))
    got = {}
    for name in sizes:
        module(model, name).register_forward_hook(lambda m, i, o, name=name: got.update({name: o.shape[-1]}))
    with torch.no_grad():
        feats = model.forward_features(torch.randn(1, 3, 224, 224))
    assert got == sizes
    assert feats.shape == (1, 256, 6, 6)


def test_torchvision_weights_load_and_give_the_same_outputs():
    torch.manual_seed(0)
    theirs = torchvision.models.alexnet().eval()
    ours = fovea.create_model("alexnet", **TORCHVISION_CONFIG).eval()
    assert list(ours.state_dict()) == list(theirs.state_dict())  # identical keys: features.0, ..., classifier.6
    assert load_into(ours, theirs.state_dict()) == []
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        a, b = ours(x), theirs(x)
    assert a.shape == (2, 1000)
    assert a.std() > 1e-3  # a real signal, not vanishing outputs that would match anyway
    assert (a - b).abs().max() <= 1e-4


def test_torchvision_weights_pair_in_order_when_lrn_shifts_the_indices():
    torch.manual_seed(0)
    theirs = torchvision.models.alexnet().eval()
    ours = fovea.create_model("alexnet", channels=TORCHVISION_CONFIG["channels"], lrn=True).eval()
    assert list(ours.state_dict()) != list(theirs.state_dict())  # features.3 is conv2 there, pool1 here
    assert load_into(ours, theirs.state_dict()) == []
    for our_name, tv_name in [("conv1", "features.0"), ("conv2", "features.3"), ("conv3", "features.6"),
                              ("conv4", "features.8"), ("conv5", "features.10"), ("fc6", "classifier.1"),
                              ("fc7", "classifier.4"), ("fc8", "classifier.6")]:
        assert torch.equal(module(ours, our_name).weight, theirs.get_submodule(tv_name).weight)
    # The reference: torchvision's layers with the two LRNs put where the paper has them.
    f = theirs.features
    reference = nn.Sequential(f[0], f[1], LocalResponseNorm(), f[2], f[3], f[4], LocalResponseNorm(), *f[5:],
                              theirs.avgpool, nn.Flatten(), theirs.classifier).eval()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        assert (ours(x) - reference(x)).abs().max() <= 1e-4


def test_weights_that_do_not_fit_fail_clearly_and_a_new_head_stays_fresh():
    torch.manual_seed(0)
    theirs = random_weights(meta(torchvision.models.alexnet)).state_dict()
    with pytest.raises(ValueError, match="shape mismatch"):
        load_into(meta(fovea.create_model, "alexnet"), theirs)  # 96 conv1 filters here, 64 there
    ours = fovea.create_model("alexnet", num_classes=10, **TORCHVISION_CONFIG)
    fresh = ours.classifier[6].weight.clone()
    assert sorted(load_into(ours, theirs)) == ["classifier.6.bias", "classifier.6.weight"]
    assert torch.equal(ours.classifier[4].weight, theirs["classifier.4.weight"])
    assert torch.equal(ours.classifier[6].weight, fresh)
    assert ours.torchvision_name == "alexnet" and meta(fovea.create_model, "zfnet").torchvision_name is None


def test_paper_init_biases_and_weight_scale():
    torch.manual_seed(0)
    model = fovea.create_model("alexnet")
    for name in ("conv2", "conv4", "conv5", "fc6", "fc7"):  # "initialized the neuron biases ... with the constant 1"
        assert torch.all(module(model, name).bias == 1), name
    for name in ("conv1", "conv3", "fc8"):  # "... in the remaining layers with the constant 0"
        assert torch.all(module(model, name).bias == 0), name
    w = module(model, "fc6").weight
    assert abs(w.std().item() - 0.01) < 1e-4 and abs(w.mean().item()) < 1e-4
    zf = fovea.create_model("zfnet")  # Zeiler & Fergus: weights 1e-2, biases 0
    assert all(torch.all(m.bias == 0) for m in zf.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


def test_lrn_placement():
    stem = ("relu1", "norm1", "pool1", "relu2", "norm2", "pool2")
    order = lambda m: [v for v in m.layer_names.values() if v in stem]
    paper = meta(fovea.create_model, "alexnet")
    assert sum(isinstance(m, LocalResponseNorm) for m in paper.modules()) == 2
    assert order(paper) == ["relu1", "norm1", "pool1", "relu2", "norm2", "pool2"]  # after the ReLU, before the pool
    zf = meta(fovea.create_model, "zfnet")
    assert order(zf) == ["relu1", "pool1", "norm1", "relu2", "pool2", "norm2"]  # ZFNet normalizes the pooled maps
    for name in ("alexnet", "zfnet"):
        assert not any(isinstance(m, LocalResponseNorm) for m in meta(fovea.create_model, name, lrn=False).modules())


def test_two_towers_split_conv2_conv4_conv5_and_normalize_each_half():
    model = meta(fovea.create_model, "alexnet", groups=2)
    assert [module(model, f"conv{i}").groups for i in range(1, 6)] == [1, 2, 1, 2, 2]
    norm = module(model, "norm1")  # parameter-free, so it runs on CPU tensors
    x = torch.randn(2, 96, 5, 5)
    halves = torch.cat([LocalResponseNorm()(h) for h in x.chunk(2, dim=1)], dim=1)
    assert torch.allclose(norm(x), halves)
    assert not torch.allclose(norm(x), LocalResponseNorm()(x))  # maps 47 and 48 see different neighbours
    with pytest.raises(UserError, match="groups=5"):
        meta(fovea.create_model, "alexnet", groups=5)
    with pytest.raises(UserError, match="groups=0"):
        meta(fovea.create_model, "alexnet", groups=0)


def test_head_surface_and_feature_info():
    torch.manual_seed(0)
    model = fovea.create_model("alexnet", num_classes=7, in_channels=1).eval()
    x = torch.randn(2, 1, 64, 64)
    outs = {}
    for info in model.feature_info:
        model.get_submodule(info["module"]).register_forward_hook(
            lambda m, i, o, name=info["module"]: outs.update({name: o.shape[1]}))
    with torch.no_grad():
        assert model(x).shape == (2, 7)
        assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (2, model.num_features) == (2, 4096)
    assert outs == {i["module"]: i["num_chs"] for i in model.feature_info}
    assert [i["reduction"] for i in model.feature_info] == [8, 16, 32]
    assert isinstance(model.get_classifier(), nn.Linear) and model.get_classifier().out_features == 7
    model.reset_classifier(3)
    assert model(x).shape == (2, 3) and model.num_classes == 3
    model.reset_classifier(0)
    assert model(x).shape == (2, 4096) and isinstance(model.get_classifier(), nn.Identity)


def test_two_tower_net_trains():
    torch.manual_seed(0)
    model = fovea.create_model("alexnet", num_classes=5, groups=2)
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("variant", ["alexnet", "zfnet"])
def test_smallest_input_works_and_smaller_fails_clearly(variant):
    torch.manual_seed(0)
    model = random_weights(meta(fovea.create_model, variant, num_classes=5))
    n = model.min_input_size
    assert n == {"alexnet": 63, "zfnet": 47}[variant]
    with torch.no_grad():
        assert model(torch.randn(2, 3, n, n)).shape == (2, 5)
    with pytest.raises(InputTooSmallError, match="at layer 'pool5'"):
        model(torch.randn(2, 3, n - 1, n))


def test_unknown_config_field_is_a_user_error():
    with pytest.raises(UserError, match="does not take depth"):
        fovea.create_model("alexnet", depth=3)
    with pytest.raises(UserError, match="does not take variant"):
        fovea.create_model("zfnet", variant="alexnet")
