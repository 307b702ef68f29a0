import pytest
import torch
from torch import nn

import fovea
from fovea.arith import trace
from fovea.errors import SpecError

EXAMPLE = "conv5x5-10,relu,maxpool4,conv3x3-20,relu,conv1x1-40,relu,maxpool4,fc32,relu,fc5"


def test_tutorial_worked_example_has_24097_parameters():
    model = fovea.create_model(EXAMPLE, input_size=64)
    assert sum(p.numel() for p in model.parameters()) == 24_097
    # by hand: (5*5*3+1)*10 + (3*3*10+1)*20 + (1*1*20+1)*40 + (4*4*40+1)*32 + (32+1)*5
    assert 760 + 1820 + 840 + 20512 + 165 == 24_097
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 5)


def test_convolutions_default_to_same_padding():
    tr = trace(fovea.create_model(EXAMPLE, input_size=64), (3, 64, 64))
    shapes = {layer.name: layer.output_shape for layer in tr.layers}
    assert shapes["features.conv1"] == (10, 64, 64) and shapes["features.pool2"] == (40, 4, 4)


def test_options_stride_padding_dilation_groups_and_modes():
    m = fovea.create_model("conv3x3-8/s2/valid,conv3x3-8/d2/g4/reflect/p2,bn,lrn,dropout0.25,maxpool3/s2,gap,fc4",
                           in_channels=3)
    c1, c2 = m.features.conv1, m.features.conv2
    assert c1.stride == (2, 2) and c1.padding == (0, 0)
    assert c2.dilation == (2, 2) and c2.groups == 4 and c2.padding_mode == "reflect" and c2.padding == (2, 2)
    assert m.features.dropout1.p == 0.25
    assert m(torch.randn(2, 3, 33, 33)).shape == (2, 4)


def test_depthwise_separable_and_transposed_tokens():
    m = fovea.create_model("conv3x3-8,dwconv3x3,sepconv3x3-16,deconv2x2-4/s2,gap,fc3")
    assert m.features.dwconv1.groups == 8
    assert m(torch.randn(1, 3, 8, 8)).shape == (1, 3)


def test_num_classes_replaces_last_fc_and_surface_methods():
    m = fovea.create_model("conv3x3-8,relu,maxpool2,fc16,relu,fc10", num_classes=3, in_channels=1, input_size=8)
    x = torch.randn(2, 1, 8, 8)
    assert m(x).shape == (2, 3)
    assert m.forward_head(m.forward_features(x), pre_logits=True).shape == (2, 16) and m.num_features == 16
    m.reset_classifier(7)
    assert m(x).shape == (2, 7)


@pytest.mark.parametrize("spec,token", [
    ("conv5x5-10,rleu,fc3", "token 2 'rleu'"),
    ("conv3x3,fc2", "token 1 'conv3x3'"),
    ("conv3x3-4/q2,fc2", "unknown option 'q2'"),
    ("conv3x3-4,,fc2", "token 2 ''"),
    ("fc10,conv3x3-4", "token 2 'conv3x3-4'"),
    ("conv3x3-4,relu/s2", "token 2 'relu/s2'"),
])
def test_malformed_specs_point_at_the_token(spec, token):
    with pytest.raises(SpecError, match=token.replace("/", ".")):
        fovea.create_model(spec)


def test_lazy_fc_materializes_on_first_forward():
    m = fovea.create_model("conv3x3-4,maxpool2,fc5")
    m(torch.randn(1, 3, 10, 10))
    assert isinstance(m.head.fc1, nn.Linear) and m.head.fc1.in_features == 4 * 5 * 5
