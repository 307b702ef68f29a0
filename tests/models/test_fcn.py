"""FCN-32s/16s/8s: exact output size for any input, crop offsets from the layer geometry,
fc6/fc7 as convolutions with a VGG-16 classifier's weights, bilinear-initialized upsampling."""

import pytest
import torch
from torch import nn

import fovea
from fovea.errors import UserError
from fovea.models import fcn as fcn_mod
from fovea.models.fcn import FCN, FCNConfig, fcn8s, fcn16s, fcn32s, linear_to_conv
from fovea.models.vgg import CFGS
from fovea.nn.upsample import bilinear_kernel

SMALL = dict(width=1 / 32, fc_width=16, num_classes=3, score_init="normal")
VGG16_EIGHTH = tuple(v if v == "M" else v // 8 for v in CFGS["vgg16"])


@pytest.mark.parametrize("builder", [fcn32s, fcn16s, fcn8s])
def test_output_has_the_input_size_for_odd_and_even_sizes(builder):
    torch.manual_seed(0)
    model = builder(**SMALL).eval()
    for h, w in [(1, 1), (31, 64), (45, 97), (17, 250)]:
        with torch.no_grad():
            y = model(torch.randn(1, 3, h, w))
        assert y.shape == (1, 3, h, w), (h, w)
        assert torch.isfinite(y).all()


def test_full_width_fcn8s_on_vgg16():
    model = fcn8s().eval()
    assert model.fc6.weight.shape == (4096, 512, 7, 7) and model.fc7.weight.shape == (4096, 4096, 1, 1)
    assert [m.out_channels for m in model.features if isinstance(m, nn.Conv2d)] == [
        v for v in CFGS["vgg16"] if v != "M"]
    with torch.no_grad():
        assert model(torch.randn(1, 3, 37, 50)).shape == (1, 21, 37, 50)


def _compose(layers):
    """(a, b) with input-pixel coordinate = a * index + b for the last layer's output index,
    from each layer's kernel, stride and padding: a conv or pool maps output o to the centre of
    its window, s*o - p + (k-1)/2; a transposed conv maps o to (o + p - (k-1)/2) / s."""
    a, b = 1.0, 0.0
    for m in layers:
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.ConvTranspose2d)):
            k, s, p = (m.kernel_size, m.stride, m.padding)
            k, s, p = (v[0] if isinstance(v, tuple) else v for v in (k, s, p))
            la, lb = (1 / s, (p - (k - 1) / 2) / s) if isinstance(m, nn.ConvTranspose2d) else (s, -p + (k - 1) / 2)
            a, b = a * la, a * lb + b
    return a, b


def test_crop_offsets_align_every_map_with_the_input():
    model = fcn8s(**SMALL)
    feats = list(model.features)
    pool3 = [i for i, m in enumerate(feats) if isinstance(m, nn.MaxPool2d)][2]
    pool4 = [i for i, m in enumerate(feats) if isinstance(m, nn.MaxPool2d)][3]
    trunk = feats + [model.fc6, model.fc7, model.score_fr]

    # FCN-32s: the 32x output's pixel u lies at input pixel u - offset
    assert _compose(trunk + [model.upscore.deconv]) != (1.0, -fcn_mod._FINAL_OFFSET[32])  # 8s's upscore is 8x
    assert _compose(trunk + [fcn32s(**SMALL).upscore.deconv]) == (1.0, -fcn_mod._FINAL_OFFSET[32])

    # 2x-upsampled scores against pool4's scores cropped at _POOL4_OFFSET: same input coordinate
    a, b = _compose(trunk + [model.upscore2.deconv])
    a4, b4 = _compose(feats[:pool4 + 1] + [model.score_pool4])
    assert a == a4 and b == a4 * fcn_mod._POOL4_OFFSET + b4
    assert _compose(trunk + [model.upscore2.deconv, fcn16s(**SMALL).upscore.deconv]) == (
        1.0, -fcn_mod._FINAL_OFFSET[16])

    a, b = _compose(trunk + [model.upscore2.deconv, model.upscore_pool4.deconv])
    a3, b3 = _compose(feats[:pool3 + 1] + [model.score_pool3])
    assert a == a3 and b == a3 * fcn_mod._POOL3_OFFSET + b3
    assert _compose(trunk + [model.upscore2.deconv, model.upscore_pool4.deconv, model.upscore.deconv]) == (
        1.0, -fcn_mod._FINAL_OFFSET[8])


def test_fc6_fc7_copied_from_a_vgg16_classifier_compute_the_same_numbers():
    torch.manual_seed(0)
    vgg = fovea.create_model("vgg16", cfg=VGG16_EIGHTH, num_classes=10).eval()
    with torch.no_grad():
        for m in vgg.classifier:  # biases nonzero, so a dropped bias would show
            if isinstance(m, nn.Linear):
                m.bias.normal_()
    model = FCN(FCNConfig(width=1 / 8, fc_width=4096, num_classes=5), backbone=vgg.state_dict()).eval()
    assert set(model.features.state_dict()) == set(vgg.features.state_dict())
    for k, v in vgg.features.state_dict().items():
        torch.testing.assert_close(model.features.state_dict()[k], v)
    x = torch.randn(2, 64, 9, 8)  # a pool5-shaped map larger than 7x7: fc6 runs at every window
    with torch.no_grad():
        ours6 = model.fc6(x)
        assert ours6.shape == (2, 4096, 3, 2)
        for i in range(3):
            for j in range(2):
                ref6 = vgg.classifier[0](torch.flatten(x[:, :, i:i + 7, j:j + 7], 1))
                torch.testing.assert_close(ours6[:, :, i, j], ref6, atol=1e-4, rtol=1e-4)
        ref7 = vgg.classifier[3](torch.relu(vgg.classifier[0](torch.flatten(x[:, :, :7, :7], 1))))
        torch.testing.assert_close(model.fc7(torch.relu(ours6[:, :, :1, :1]))[:, :, 0, 0], ref7, atol=1e-4, rtol=1e-4)
        # and through VGG's own head: its fc7 activation on a 7x7 pool5 map is FCN's on the same map
        p5 = torch.randn(1, 64, 7, 7)
        pre = vgg.forward_head(p5, pre_logits=True)
        torch.testing.assert_close(model.drop7(torch.relu(model.fc7(torch.relu(model.fc6(p5)))))[:, :, 0, 0], pre,
                                   atol=1e-4, rtol=1e-4)


def test_linear_to_conv_reshapes_and_refuses_a_mismatch():
    lin = nn.Linear(2 * 3 * 3, 4)
    conv = linear_to_conv(lin, 2, 3)
    x = torch.randn(5, 2, 3, 3)
    torch.testing.assert_close(conv(x)[:, :, 0, 0], lin(x.flatten(1)))
    with pytest.raises(UserError, match="in_features=18"):
        linear_to_conv(lin, 3, 3)


def test_backbone_from_a_weights_file_and_bad_backbones(tmp_path):
    from safetensors.torch import save_file

    vgg = fovea.create_model("vgg16", cfg=VGG16_EIGHTH)
    save_file(vgg.state_dict(), tmp_path / "vgg.safetensors")
    model = fcn32s(width=1 / 8, num_classes=2, backbone=tmp_path / "vgg.safetensors")
    torch.testing.assert_close(model.features[0].weight, vgg.features[0].weight)
    torch.testing.assert_close(model.fc7.weight[:, :, 0, 0], vgg.classifier[3].weight)
    with pytest.raises(UserError, match=r"has shape .*expected"):
        fcn32s(width=1 / 16, backbone=vgg.state_dict())  # widths do not match
    with pytest.raises(UserError, match="width=1, fc_width=4096"):
        fcn32s(width=1 / 8, backbone="torchvision")
    with pytest.raises(UserError, match="lacks"):
        fcn32s(width=1 / 8, backbone={k: v for k, v in vgg.state_dict().items() if k != "features.0.bias"})


def test_upsampling_is_bilinear_initialized_learned_at_2x_fixed_at_the_end():
    model = fcn8s(**SMALL)
    torch.testing.assert_close(model.upscore2.deconv.weight, bilinear_kernel(3, 2))
    torch.testing.assert_close(model.upscore.deconv.weight, bilinear_kernel(3, 8))
    assert model.upscore2.deconv.weight.requires_grad and model.upscore_pool4.deconv.weight.requires_grad
    assert not model.upscore.deconv.weight.requires_grad
    assert fcn8s(**SMALL, learn_final_upsample=True).upscore.deconv.weight.requires_grad
    # the paper's zero-initialized score layers
    assert (fcn8s(width=1 / 16, fc_width=32).score_pool3.weight == 0).all()
    # both skips feed the loss
    model.train()
    model(torch.randn(2, 3, 40, 36)).square().mean().backward()
    for layer in (model.score_pool3, model.score_pool4, model.score_fr, model.upscore2.deconv, model.features[0]):
        assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0


def test_bad_arguments():
    with pytest.raises(UserError, match="stride=4"):
        FCN(FCNConfig(stride=4))
    with pytest.raises(UserError, match="width=0"):
        fcn8s(width=0)
    with pytest.raises(UserError, match="does not take depth"):
        fcn8s(depth=3)
    with pytest.raises(UserError, match=r"\(1, 1, 32, 32\); expected \(N, 3, H, W\)"):
        fcn8s(**SMALL)(torch.randn(1, 1, 32, 32))
