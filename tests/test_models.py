"""Every registered image classifier: forward and backward with no NaN at its smallest supported
input. The disparity networks (family ``depthnet``) register too once their module is imported;
they are dense predictors with no classes, tested in tests/models/test_depthnet.py. The video
classifiers (family ``video``) take clips (C, T, H, W), tested in tests/models/test_video_models.py."""

import pytest
import torch

import fovea
import fovea.arith
import fovea.errors
from fovea.arith import smallest_input
from fovea.errors import InputTooSmallError, UnknownModelError
from fovea.models import AuxOutputs


def _outputs(out):
    return [out.logits, *out.aux] if isinstance(out, AuxOutputs) else [out]


NOT_CLASSIFIERS = ("depthnet", "video", "stylenet")
CLASSIFIERS = [n for n in fovea.list_models() if fovea.models.registry.model_family(n) not in NOT_CLASSIFIERS]


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_forward_backward_at_smallest_input(name):
    model = fovea.create_model(name, num_classes=7)
    in_ch = model.default_input_size[0]
    side = model.min_input_size
    x = torch.randn(2, in_ch, side, side)
    model.train()
    outs = _outputs(model(x))
    assert outs[0].shape == (2, 7)
    sum(o.sum() for o in outs).backward()
    assert all(torch.isfinite(o).all() for o in outs)
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads), name
    # the common surface
    model.eval()
    with torch.no_grad():
        feats = model.forward_features(x)
        assert torch.allclose(model.forward_head(feats), model(x), atol=1e-5)
        assert model.forward_head(feats, pre_logits=True).shape == (2, model.num_features)
    assert model.feature_info and all({"module", "num_chs", "reduction"} <= set(f) for f in model.feature_info)
    model.reset_classifier(3)
    with torch.no_grad():
        assert model(x).shape == (2, 3)
    # one pixel less than the smallest input that runs at all is refused, naming a layer
    smallest = smallest_input(model, in_ch)
    assert smallest <= side
    if smallest > 1:
        with pytest.raises(InputTooSmallError, match="at layer"):
            model(torch.randn(1, in_ch, smallest - 1, smallest - 1))


@pytest.mark.parametrize("name", ["resnet18", "vgg11", "lenet5", "alexnet"])
def test_any_num_classes_and_in_channels(name):
    model = fovea.create_model(name, num_classes=4, in_channels=5).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 5, 96, 96)).shape == (1, 4)


def test_registry_rejects_duplicates_and_lists_by_pattern():
    with pytest.raises(ValueError, match="already registered"):
        fovea.register_model(lambda **kw: None, name="resnet18")
    assert fovea.list_models("resnet1*") == ["resnet101", "resnet110", "resnet152", "resnet18"]


def test_unknown_model_lists_close_matches():
    with pytest.raises(UnknownModelError, match="resnet50"):
        fovea.create_model("resnet05")


def test_compile_and_channels_last_give_the_same_output():
    model = fovea.create_model("lenet5_relu").eval()
    x = torch.randn(4, 1, 32, 32)
    with torch.no_grad():
        ref = model(x)
        cl = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
        compiled = torch.compile(model)(x)
    torch.testing.assert_close(cl, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(compiled, ref, atol=1e-5, rtol=1e-5)


def test_weights_from_a_local_safetensors_file(tmp_path):
    from safetensors.torch import save_file

    src = fovea.create_model("resnet20")
    save_file(src.state_dict(), tmp_path / "w.safetensors")
    dst = fovea.create_model("resnet20", weights=tmp_path / "w.safetensors").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src.eval()(x))
    # another number of classes keeps a fresh head and loads the rest
    other = fovea.create_model("resnet20", num_classes=3, weights=tmp_path / "w.safetensors")
    torch.testing.assert_close(other.conv1.weight, src.conv1.weight)


def test_torchvision_weights_offline_says_which_file_to_put_where(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    import socket

    def no_network(*a, **k):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    with pytest.raises(fovea.errors.UserError, match=r"resnet18-.*\.pth.*put it at .*checkpoints"):
        fovea.create_model("resnet18", weights="torchvision")


@pytest.mark.parametrize("name", ["resnet18", "googlenet", "alexnet"])
def test_torchvision_weights_from_the_hub_cache(monkeypatch, tmp_path, name):
    """weights="torchvision" reads torchvision's file from the torch hub cache (where a
    download would put it) and builds the layout those weights need."""
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    kwargs = dict(init_weights=False) if name == "googlenet" else {}
    tv = torchvision.models.get_model(name, weights=None, **kwargs).eval()
    url = torchvision.models.get_model_weights(name).DEFAULT.url
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(tv.state_dict(), tmp_path / "hub" / "checkpoints" / url.rsplit("/", 1)[-1])
    ours = fovea.create_model(name, weights="torchvision").eval()
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        ref = tv(x)
        torch.testing.assert_close(ours(x), ref.logits if hasattr(ref, "logits") else ref, atol=1e-4, rtol=1e-4)
