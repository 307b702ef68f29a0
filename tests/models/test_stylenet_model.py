"""Johnson et al.'s image transformation network: sizes, output range, variants, the registry
and bad settings."""

import pytest
import torch

import fovea
import fovea.models.stylenet  # noqa: F401  (registers the model)
from fovea.errors import UserError
from fovea.models.stylenet import StyleNet, StyleNetConfig, time_forward


def test_paper_width_has_johnsons_layout_and_parameter_count():
    net = fovea.create_model("stylenet")
    assert isinstance(net, StyleNet)
    # 9x9x3->32, 3x3 32->64, 64->128, 5 residual blocks of two 3x3 128->128, two 3x3 up-convolutions, 9x9 32->3,
    # each conv (but the last) followed by an affine instance norm: the paper's 1.68M parameters
    convs = [m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert [tuple(c.weight.shape[-2:]) for c in (convs[0], convs[-1])] == [(9, 9), (9, 9)]
    assert len(convs) == 3 + 10 + 2 + 1
    assert sum(p.numel() for p in net.parameters()) == 1_679_235
    assert sum(isinstance(m, torch.nn.InstanceNorm2d) for m in net.modules()) == 15


@pytest.mark.parametrize("size", [(32, 32), (36, 44), (30, 37), (5, 9)])
def test_any_size_in_same_size_out_in_unit_range(size):
    net = fovea.create_model("stylenet", width=4)
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        y = net(x)
    assert y.shape == x.shape
    assert 0 <= float(y.min()) and float(y.max()) <= 1


def test_padding_keeps_the_multiple_of_four_result_on_the_image():
    """An odd-sized input gives the crop of the output of its padded version (nothing shifts)."""
    net = fovea.create_model("stylenet", width=4).eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        full = net(torch.nn.functional.pad(x[..., :30, :31], (0, 1, 0, 2), mode="reflect"))
        part = net(x[..., :30, :31])
    torch.testing.assert_close(part, full[..., :30, :31])


def test_refuses_odd_sizes_when_padding_is_off():
    net = fovea.create_model("stylenet", width=4, pad_input=False)
    assert net(torch.rand(1, 3, 16, 20)).shape == (1, 3, 16, 20)
    with pytest.raises(UserError, match="multiples of 4"):
        net(torch.rand(1, 3, 18, 20))


@pytest.mark.parametrize("kwargs", [dict(norm="bn"), dict(upsample="nearest"), dict(output="sigmoid"),
                                    dict(blocks=0)])
def test_variants_forward_and_backward(kwargs):
    net = fovea.create_model("stylenet", width=4, **kwargs)
    x = torch.rand(2, 3, 24, 24)
    y = net(x)
    y.mean().backward()
    assert y.shape == x.shape
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


@pytest.mark.parametrize("kwargs, match", [(dict(norm="lrn"), "norm"), (dict(upsample="bilinear"), "upsample"),
                                           (dict(width=0), "width"), (dict(depth=3), "does not take")])
def test_bad_settings_fail_in_one_line(kwargs, match):
    with pytest.raises(UserError, match=match):
        fovea.create_model("stylenet", **kwargs)


def test_bad_input_shape_fails_clearly():
    with pytest.raises(UserError, match=r"expected \(N, 3, H, W\)"):
        StyleNet(StyleNetConfig(width=4))(torch.rand(1, 1, 16, 16))


def test_time_forward_is_a_positive_median():
    assert time_forward(fovea.create_model("stylenet", width=4), size=32, repeats=2) > 0
