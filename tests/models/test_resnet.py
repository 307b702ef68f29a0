"""ResNets: parameter counts and state dict keys against torchvision and the 2015 paper,
torchvision weight interop, shortcut options A/B/C, pre-activation blocks, the head surface."""

import pytest
import torch
import torchvision
from torch import nn

import fovea
from fovea.arith import count_params as n_params
from _helpers import randomize_batch_norm
from fovea.models.weights import load_into
from fovea.nn.residual import BasicBlock, Bottleneck, PreActBasicBlock, ZeroPadShortcut, make_shortcut

TORCHVISION = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
# Input side for the interop check: small to keep the test fast, 64x64 (2x2 at the end) for the deeper nets.
INTEROP_SIDE = {"resnet18": 112, "resnet34": 96, "resnet50": 64, "resnet101": 64, "resnet152": 64}


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
    side = INTEROP_SIDE[name]
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
        assert fovea.create_model("resnet50", num_classes=10, zero_init_residual=True).torchvision_name == "resnet50"
        assert fovea.create_model("resnet50", shortcut="C").torchvision_name is None
        assert fovea.create_model("resnet18", norm="gn").torchvision_name is None
        assert fovea.create_model("resnet50", bottleneck_stride="1x1").torchvision_name is None
        assert fovea.create_model("resnet20").torchvision_name is None
        assert fovea.create_model("preact_resnet18").torchvision_name is None


# --- CIFAR ResNets (He et al. 2015, section 4.2) ----------------------------------------------

def cifar_resnet_params(depth: int, shortcut: str = "A", num_classes: int = 10) -> int:
    """By hand: 3x3 conv to 16 + BN, three stages of n basic blocks (16, 32, 64 channels; two
    3x3 conv + BN each), projections (1x1 conv + BN) as the shortcut option says, fc."""
    n = (depth - 2) // 6

    def conv(cin, cout, k):
        return cin * cout * k * k  # no bias: a BN follows every conv

    def bn(c):
        return 2 * c

    total = conv(3, 16, 3) + bn(16)
    cin = 16
    for width in (16, 32, 64):
        for _ in range(n):
            total += conv(cin, width, 3) + bn(width) + conv(width, width, 3) + bn(width)
            if shortcut == "C" or (shortcut == "B" and cin != width):
                total += conv(cin, width, 1) + bn(width)
            cin = width
    return total + 64 * num_classes + num_classes


# The paper's Table 6 column "# params", in millions.
PAPER = {20: 0.27, 32: 0.46, 44: 0.66, 56: 0.85, 110: 1.7}


@pytest.mark.parametrize("depth", sorted(PAPER))
def test_cifar_resnet_param_counts(depth):
    model = fovea.create_model(f"resnet{depth}")
    count = n_params(model)
    assert count == cifar_resnet_params(depth, "A")
    digits = 2 if depth < 100 else 1  # the paper rounds to 0.01M, and to 0.1M for ResNet-110
    assert round(count / 1e6, digits) == PAPER[depth]
    assert model.num_classes == 10 and model.num_features == 64


def test_resnet20_exact_counts_per_shortcut_option():
    # A: 269,722. The often-quoted 272,474 is option B: 269,722 + (16*32 + 64) + (32*64 + 128).
    assert cifar_resnet_params(20, "A") == 269_722
    assert cifar_resnet_params(20, "B") == 272_474
    for option in "ABC":
        assert n_params(fovea.create_model("resnet20", shortcut=option)) == cifar_resnet_params(20, option)


def test_cifar_resnet_shapes_and_feature_info():
    model = fovea.create_model("resnet20").eval()
    assert [(f["module"], f["num_chs"], f["reduction"]) for f in model.feature_info] == \
           [("layer1", 16, 1), ("layer2", 32, 2), ("layer3", 64, 4)]
    assert not hasattr(model, "layer4")
    seen = {}
    hooks = [model.get_submodule(f["module"]).register_forward_hook(
        lambda m, i, o, name=f["module"]: seen.__setitem__(name, o.shape)) for f in model.feature_info]
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
        assert model(torch.randn(2, 3, 33, 33)).shape == (2, 10)  # odd sizes: subsampling = ceil(n / 2)
    for h in hooks:
        h.remove()
    assert seen == {"layer1": (2, 16, 33, 33), "layer2": (2, 32, 17, 17), "layer3": (2, 64, 9, 9)}


def test_imagenet_feature_info_matches_the_feature_maps():
    model = fovea.create_model("resnet50").eval()
    assert [(f["num_chs"], f["reduction"]) for f in model.feature_info] == \
           [(256, 4), (512, 8), (1024, 16), (2048, 32)]
    seen = {}
    for f in model.feature_info:
        model.get_submodule(f["module"]).register_forward_hook(
            lambda m, i, o, name=f["module"]: seen.__setitem__(name, tuple(o.shape[1:])))
    with torch.no_grad():
        feats = model.forward_features(torch.randn(1, 3, 64, 64))
    assert seen == {f["module"]: (f["num_chs"], 64 // f["reduction"], 64 // f["reduction"]) for f in model.feature_info}
    assert feats.shape == (1, model.num_features, 2, 2)


# --- blocks and shortcut options ---------------------------------------------------------------

def test_shortcut_a_is_parameter_free_and_zero_pads():
    block = BasicBlock(16, 32, stride=2, shortcut="A")
    assert isinstance(block.downsample, ZeroPadShortcut)
    assert n_params(block.downsample) == 0
    assert n_params(block) == 16 * 32 * 9 + 32 * 32 * 9 + 2 * 2 * 32
    x = torch.randn(2, 16, 9, 9)
    s = block.downsample(x)
    assert s.shape == (2, 32, 5, 5)
    assert torch.equal(s[:, :16], x[:, :, ::2, ::2])
    assert torch.count_nonzero(s[:, 16:]) == 0
    assert block(x).shape == (2, 32, 5, 5)
    assert BasicBlock(16, 16, shortcut="A").downsample is None
    with pytest.raises(ValueError, match="only add channels"):
        ZeroPadShortcut(32, 16)


def test_shortcut_b_projects_only_where_the_shape_changes():
    assert BasicBlock(64, 64, shortcut="B").downsample is None
    for cin, cout, stride in [(64, 128, 2), (64, 64, 2), (64, 128, 1)]:
        proj = BasicBlock(cin, cout, stride=stride, shortcut="B").downsample
        assert isinstance(proj, nn.Sequential)
        conv, bn = proj
        assert conv.kernel_size == (1, 1) and conv.stride == (stride, stride) and conv.bias is None
        assert isinstance(bn, nn.BatchNorm2d)
        assert n_params(proj) == cin * cout + 2 * cout


def test_shortcut_c_projects_on_every_block():
    assert isinstance(BasicBlock(64, 64, shortcut="C").downsample, nn.Sequential)

    def projections(model):
        return sum(isinstance(m, (BasicBlock, Bottleneck, PreActBasicBlock)) and isinstance(m.downsample, nn.Sequential)
                   for m in model.modules())

    with torch.device("meta"):
        assert projections(fovea.create_model("resnet20", shortcut="A")) == 0
        assert projections(fovea.create_model("resnet20", shortcut="B")) == 2
        assert projections(fovea.create_model("resnet20", shortcut="C")) == 9
        assert projections(fovea.create_model("resnet50")) == 4  # every stage's first block (64 -> 256 too)
    with pytest.raises(ValueError, match="shortcut must be one of"):
        make_shortcut(16, 32, 2, shortcut="D")


def test_bottleneck_width_and_stride_placement():
    x = torch.randn(2, 64, 15, 15)
    for stride_at in ("3x3", "1x1"):
        block = Bottleneck(64, 32, stride=2, stride_at=stride_at)
        assert block.out_channels == 128 and block(x).shape == (2, 128, 8, 8)
        strided = block.conv2 if stride_at == "3x3" else block.conv1
        assert strided.stride == (2, 2)
    with pytest.raises(ValueError, match="stride_at"):
        Bottleneck(64, 32, stride_at="middle")


def test_norm_and_act_are_names():
    block = BasicBlock(8, 8, norm="gn", act="leaky_relu")
    assert isinstance(block.bn1, nn.GroupNorm) and isinstance(block.act1, nn.LeakyReLU)
    plain = BasicBlock(8, 16, stride=2, norm=None)
    assert isinstance(plain.bn1, nn.Identity) and plain.conv1.bias is not None
    assert plain(torch.randn(1, 8, 6, 6)).shape == (1, 16, 3, 3)


def test_preact_block_is_identity_plus_residual():
    torch.manual_seed(0)
    block = PreActBasicBlock(16, 16).eval()
    assert [n for n, _ in block.named_children()][:3] == ["bn1", "act1", "conv1"]  # norm-act-conv
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        out = block(x)
        assert (out < 0).any()  # nothing after the addition
        block.zero_init_last()
        assert torch.equal(block(x), x)  # a zero residual leaves the identity path untouched
    down = PreActBasicBlock(16, 32, stride=2, shortcut="B")
    assert down(x).shape == (2, 32, 4, 4)


def test_zero_init_residual():
    model = fovea.create_model("resnet18", zero_init_residual=True)
    assert all(torch.count_nonzero(b.bn2.weight) == 0 for b in model.modules() if isinstance(b, BasicBlock))
    assert all(torch.count_nonzero(b.bn1.weight) == b.bn1.weight.numel()
               for b in model.modules() if isinstance(b, BasicBlock))
    model = fovea.create_model("resnet50", zero_init_residual=True)
    assert all(torch.count_nonzero(b.bn3.weight) == 0 for b in model.modules() if isinstance(b, Bottleneck))
    block = BasicBlock(8, 8).eval()
    block.zero_init_last()
    x = torch.randn(1, 8, 5, 5)
    with torch.no_grad():
        assert torch.equal(block(x), torch.relu(x))  # the block starts as relu(shortcut)


def test_he_init():
    model = fovea.create_model("resnet34")
    w = model.layer3[1].conv1.weight  # 256 * 3 * 3 fan-in
    assert abs(w.std().item() - (2.0 / (256 * 9)) ** 0.5) < 0.002


# --- the model surface ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["resnet18", "resnet20", "preact_resnet18", "preact_resnet110"])
def test_head_surface(name):
    model = fovea.create_model(name).eval()
    side = 32 if model.feature_info[-1]["reduction"] == 4 else 64
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


def test_preact_models_train():
    model = fovea.create_model("preact_resnet18", num_classes=5)
    assert isinstance(model.final_bn, nn.BatchNorm2d)  # pre-activation nets end with norm-act
    assert all(isinstance(b, PreActBasicBlock) for s in ("layer1", "layer4") for b in getattr(model, s))
    out = model(torch.randn(2, 3, 64, 64))
    out.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_any_input_size_num_classes_and_in_channels():
    model = fovea.create_model("resnet18", num_classes=3, in_channels=1, head_drop_rate=0.5).eval()
    with torch.no_grad():
        for side in (33, 70, 97):
            assert model(torch.randn(1, 1, side, side)).shape == (1, 3)


def test_bad_config_values_name_the_value():
    with pytest.raises(ValueError, match="'wide'"):
        fovea.create_model("resnet18", block="wide")
    with pytest.raises(ValueError, match="'tiny'"):
        fovea.create_model("resnet18", stem="tiny")
    with pytest.raises(ValueError, match="layers=\\(2, 2\\)"):
        fovea.create_model("resnet18", layers=(2, 2))
