"""Bilinear upsampling by transposed convolution against F.interpolate."""

import pytest
import torch
import torch.nn.functional as F

from fovea.errors import UserError
from fovea.nn.upsample import BilinearUpsample, bilinear_kernel, bilinear_kernel_size


def test_kernel_matches_the_interpolation_formula():
    # factor 2: taps (1 - |u - 1.5| / 2) = 1/4, 3/4, 3/4, 1/4; factor 3: 1/3, 2/3, 1, 2/3, 1/3
    torch.testing.assert_close(bilinear_kernel(1, 2)[0, 0, 0], torch.tensor([1, 3, 3, 1]) / 16)
    torch.testing.assert_close(bilinear_kernel(1, 3)[0, 0, 2], torch.tensor([1, 2, 3, 2, 1]) / 3)
    w = bilinear_kernel(3, 4)
    assert w.shape == (3, 3, 8, 8) and bilinear_kernel_size(4) == 8 and bilinear_kernel_size(5) == 9
    assert (w[0, 1] == 0).all() and (w[2, 0] == 0).all()  # no channel mixing
    torch.testing.assert_close(w[1, 1], w[0, 0])
    assert bilinear_kernel(3, 4, depthwise=True).shape == (3, 1, 8, 8)


@pytest.mark.parametrize("factor", [2, 3, 4, 5, 8])
@pytest.mark.parametrize("depthwise", [False, True])
def test_equals_interpolate_in_the_interior_and_differs_only_in_the_outer_f_div_2_pixels(factor, depthwise):
    torch.manual_seed(factor)
    x = torch.randn(2, 3, 7, 6) + 3.0  # away from zero, so a zero-padded border cannot agree by chance
    up = BilinearUpsample(3, factor, depthwise=depthwise)
    ours = up(x).detach()
    ref = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    assert ours.shape == ref.shape == (2, 3, 7 * factor, 6 * factor)
    b = factor // 2
    torch.testing.assert_close(ours[..., b:-b or None, b:-b or None], ref[..., b:-b or None, b:-b or None])
    if b:
        # every pixel in the border band differs: the edge is blended with zeros, not clamped
        band = torch.ones(7 * factor, 6 * factor, dtype=torch.bool)
        band[b:-b, b:-b] = False
        assert ((ours - ref).abs() > 1e-3)[..., band].all()
    # everywhere: interpolation of the zero-padded input, cropped by f on each side
    padded = F.interpolate(F.pad(x, (1, 1, 1, 1)), scale_factor=factor, mode="bilinear", align_corners=False)
    torch.testing.assert_close(ours, padded[..., factor:-factor, factor:-factor])


def test_frozen_or_learnable():
    frozen, learnable = BilinearUpsample(2, 2), BilinearUpsample(2, 2, learnable=True)
    assert not frozen.deconv.weight.requires_grad and learnable.deconv.weight.requires_grad
    learnable(torch.randn(1, 2, 3, 3)).sum().backward()
    assert learnable.deconv.weight.grad.abs().sum() > 0
    # FCN's layer: no padding, (n - 1) f + k outputs
    assert BilinearUpsample(2, 32, padding=0)(torch.randn(1, 2, 3, 3)).shape[-1] == 2 * 32 + 64


def test_bad_arguments_name_the_value():
    with pytest.raises(UserError, match="factor=0"):
        bilinear_kernel(3, 0)
    with pytest.raises(UserError, match="channels=0"):
        BilinearUpsample(0, 2)
    with pytest.raises(UserError, match="padding=-1"):
        BilinearUpsample(2, 2, padding=-1)
