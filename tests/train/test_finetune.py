"""Transfer learning: freeze policies, separate learning rates, starting from a fovea run."""

import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import fovea
from fovea.errors import UserError
from fovea.train.finetune import apply_freeze, freeze_batchnorm, param_groups

FOVEA = [sys.executable, "-m", "fovea.cli.main"]


def trainable(net):
    return {n for n, p in net.named_parameters() if p.requires_grad}


def test_freeze_backbone_leaves_only_the_head():
    net = fovea.create_model("resnet18", num_classes=3)
    apply_freeze(net, "backbone")
    assert trainable(net) == {"fc.weight", "fc.bias"}
    vgg = fovea.create_model("vgg11", num_classes=3)  # VGG's head is the whole fc6-fc8 classifier
    apply_freeze(vgg, "backbone")
    assert trainable(vgg) == {f"classifier.{i}.{w}" for i in (0, 3, 6) for w in ("weight", "bias")}
    spec = fovea.create_model("conv3x3-4,relu,maxpool2,fc8,relu,fc3", in_channels=1, input_size=8)
    apply_freeze(spec, "backbone", input_shape=(1, 8, 8))
    assert trainable(spec) == {"head.fc1.weight", "head.fc1.bias", "head.fc2.weight", "head.fc2.bias"}


def test_freeze_until_a_stage_and_named_modules():
    net = fovea.create_model("resnet18", num_classes=3)
    frozen = apply_freeze(net, "none", until="layer3")
    assert "layer3.1.bn2.bias" in frozen and "conv1.weight" in frozen
    assert all(n.startswith(("layer4.", "fc.")) for n in trainable(net))
    apply_freeze(net, "none", modules=["conv1", "layer2"])
    assert "conv1.weight" not in trainable(net) and "layer3.0.conv1.weight" in trainable(net)
    assert not any(n.startswith("layer2.") for n in trainable(net))


def test_unknown_stage_names_the_value_and_lists_modules():
    net = fovea.create_model("resnet18")
    with pytest.raises(UserError, match="'layer5'.*layer4"):
        apply_freeze(net, "none", until="layer5")
    with pytest.raises(UserError, match="--freeze 'all'"):
        apply_freeze(net, "all")


def test_backbone_learning_rate_is_its_own_group():
    net = fovea.create_model("resnet18", num_classes=3)
    groups = param_groups(net, lr=0.1, lr_backbone=0.001)
    assert [g["lr"] for g in groups] == [0.1, 0.001]
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters()))
    assert {id(p) for p in groups[0]["params"]} == {id(net.fc.weight), id(net.fc.bias)}


def test_frozen_batchnorm_statistics_stay_put_in_training():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4))
    freeze_batchnorm(net)
    net.train()
    before = net[1].running_mean.clone()
    net(torch.randn(8, 1, 6, 6) + 5)
    assert torch.equal(net[1].running_mean, before)


def run(*args):
    res = subprocess.run([*FOVEA, *args], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return res


def test_fine_tune_from_a_fovea_run_on_other_classes(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    spec = "conv3x3-8,relu,maxpool2,conv3x3-16,relu,gap,fc10"
    run("train", "classify", "--data", "digits", "--model", spec, "--image-size", "16", "--epochs", "2",
        "--classes", "0-4", "--out", str(src))
    run("train", "classify", "--data", "digits", "--image-size", "16", "--epochs", "2", "--init", str(src),
        "--classes", "5-9", "--train-fraction", "0.2", "--freeze", "backbone", "--out", str(dst))
    a, b = load_file(src / "model.safetensors"), load_file(dst / "model.safetensors")
    body = [k for k in a if k.startswith("net.features.")]
    assert body and all(torch.equal(a[k], b[k]) for k in body)  # frozen backbone: unchanged
    assert not torch.equal(a["net.head.fc1.weight"], b["net.head.fc1.weight"])  # a new output layer, trained
    assert b["net.head.fc1.weight"].shape[0] == 5
    text = run("summary", str(dst)).stdout
    assert "trainable" in text and "trainable: 85" in text  # 16*5 + 5 parameters in the new head
