"""U-Net: the published sizes and parameter count, same padding, valid input sizes,
overlap-tile prediction and the border weight map."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fovea.errors import UserError
from fovea.models.unet import (mirror_pad, overlap_tile_predict, unet, unet_output_size, unet_same, unet_weight_map,
                               valid_input_size)


def _published_param_count(in_channels, num_classes, base, depth):
    """Parameters of U-Net counted layer by layer from the paper's Figure 1: per level two 3x3
    convolutions (weights + biases), per up-step a 2x2 up-convolution that halves the channels
    and two 3x3 convolutions on the concatenation, and the final 1x1 convolution."""
    ch = [base * 2**i for i in range(depth + 1)]
    conv3 = lambda a, b: 9 * a * b + b  # noqa: E731
    total, prev = 0, in_channels
    for c in ch:
        total += conv3(prev, c) + conv3(c, c)
        prev = c
    for i in reversed(range(depth)):
        total += 4 * ch[i + 1] * ch[i] + ch[i]  # up-conv 2x2
        total += conv3(2 * ch[i], ch[i]) + conv3(ch[i], ch[i])
    return total + ch[0] * num_classes + num_classes


def _simulate(size, depth):
    """Output side of a valid U-Net by following the paper's layers one by one, or None where a
    pool meets an odd side or a side drops below 1."""
    s, down = size, []
    for level in range(depth + 1):
        if level:
            if s % 2:
                return None
            s //= 2
        s -= 4
        if s < 1:
            return None
        down.append(s)
    for _ in range(depth):
        s = 2 * s - 4
        if s < 1:
            return None
    return s


def test_published_net_maps_572_to_388_with_31_million_parameters():
    model = unet()  # in_channels 1, num_classes 2, base 64, depth 4
    n = sum(p.numel() for p in model.parameters())
    assert n == _published_param_count(1, 2, 64, 4)
    assert 30.9e6 < n < 31.1e6
    # "In total the network has 23 convolutional layers" (the up-convolutions included)
    assert sum(isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)) for m in model.modules()) == 23
    assert unet_output_size(572) == 388 and model.margin == 92
    small = unet(base=2).eval()  # widths do not change the geometry
    with torch.no_grad():
        assert small(torch.randn(1, 1, 572, 572)).shape == (1, 2, 388, 388)
    assert sum(p.numel() for p in unet(in_channels=3, num_classes=5, base=8, depth=3).parameters()) == \
        _published_param_count(3, 5, 8, 3)


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_valid_sizes_agree_with_a_layer_by_layer_simulation(depth):
    valid = [s for s in range(1, 400) if _simulate(s, depth) is not None]
    assert valid[0] == valid_input_size(1, depth)
    for s in range(1, 400):
        expected = _simulate(s, depth)
        if expected is None:
            with pytest.raises(UserError, match=f"input size {s} "):
                unet_output_size(s, depth)
            assert valid_input_size(s, depth) == min(v for v in valid + [10**6] if v >= s) or s > valid[-1]
        else:
            assert unet_output_size(s, depth) == expected and valid_input_size(s, depth) == s
    model = unet(base=2, depth=depth).eval()
    for s in valid[:2]:
        with torch.no_grad():
            assert model(torch.randn(1, 1, s, valid[2])).shape[-2:] == (_simulate(s, depth), _simulate(valid[2], depth))


def test_same_padding_keeps_the_size():
    model = unet_same(base=4, depth=3, in_channels=3, num_classes=4).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 48, 64)).shape == (2, 4, 48, 64)
    with pytest.raises(UserError, match=r"\(48, 60\).*divisible by 8"):
        model(torch.randn(1, 3, 48, 60))


def test_bad_arguments_name_the_value():
    with pytest.raises(UserError, match="depth=0"):
        unet(depth=0)
    with pytest.raises(UserError, match="padding='full'"):
        from fovea.models.unet import UNet, UNetConfig

        UNet(UNetConfig(padding="full"))
    with pytest.raises(UserError, match=r"input size 98 .*depth 2; expected 2\^2\*b \+ 28 with b >= 4, e.g. 96 or 100"):
        unet(base=2, depth=2)(torch.randn(1, 1, 100, 98))
    with pytest.raises(UserError, match="input size 30 .*e.g. 44"):
        unet(base=2, depth=2)(torch.randn(1, 1, 30, 44))  # too small for a valid U-Net
    with pytest.raises(UserError, match="does not take padding"):
        unet(padding="same")


def test_mirror_pad_is_reflection_and_periodic_beyond_the_image():
    x = torch.arange(20.0).reshape(1, 4, 5)
    torch.testing.assert_close(mirror_pad(x, 3, 2, 1, 4), F.pad(x[None], (1, 4, 3, 2), mode="reflect")[0])
    row = mirror_pad(torch.tensor([[0.0, 1.0, 2.0]]), 0, 0, 5, 6)[0]
    assert row.tolist() == [1, 0, 1, 2, 1, 0, 1, 2, 1, 0, 1, 2, 1, 0]


def test_overlap_tile_equals_whole_image_valid_prediction():
    torch.manual_seed(0)
    model = unet(base=4, depth=2, in_channels=2, num_classes=3).eval()
    image = torch.randn(2, 2, 68, 72)  # both sides valid for depth 2; tiles of 52 predict 12x12
    with torch.no_grad():
        whole = model(image)
    assert whole.shape == (2, 3, 28, 32)
    tiled = overlap_tile_predict(model, image, 52)
    assert tiled.shape == (2, 3, 68, 72)
    m = model.margin
    torch.testing.assert_close(tiled[..., m:-m, m:-m], whole, atol=1e-5, rtol=1e-5)
    # at the borders too it is the valid prediction of the mirrored image, whatever the tile size
    torch.testing.assert_close(overlap_tile_predict(model, image, (60, 52), batch_size=5), tiled, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        padded = model(mirror_pad(image, m, m, m, m))  # 108 x 112 is valid, aligned with the image
    torch.testing.assert_close(padded, tiled, atol=1e-5, rtol=1e-5)
    # any size, and one image without a batch axis
    odd = overlap_tile_predict(model, image[0, :, :37, :23], 52)
    assert odd.shape == (3, 37, 23)


def test_overlap_tile_refuses_what_it_cannot_do():
    with pytest.raises(UserError, match="padding='valid'"):
        overlap_tile_predict(unet_same(base=2, depth=2), torch.randn(1, 1, 16, 16), 16)
    with pytest.raises(UserError, match="input size 50"):
        overlap_tile_predict(unet(base=2, depth=2), torch.randn(1, 1, 16, 16), 50)
    with pytest.raises(UserError, match=r"tile=\(52, 52, 52\)"):
        overlap_tile_predict(unet(base=2, depth=2), torch.randn(1, 1, 16, 16), (52, 52, 52))
    with pytest.raises(UserError, match=r"tile=92; its output \(4x4\) must be at least 8 .*e.g. tile=100"):
        overlap_tile_predict(unet(base=2, depth=3), torch.randn(1, 1, 16, 16), 92)


def test_weight_map_is_high_between_touching_objects():
    labels = np.zeros((40, 60), dtype=np.int64)
    labels[10:30, 5:20] = 1
    labels[10:30, 21:36] = 2  # one background column (x = 20) between objects 1 and 2
    labels[10:30, 50:58] = 3  # far away
    w = unet_weight_map(labels, w0=10, sigma=5)
    n_bg, n_fg = (labels == 0).sum(), (labels > 0).sum()
    wc_bg, wc_fg = labels.size / (2 * n_bg), labels.size / (2 * n_fg)
    # gap pixel: d1 = d2 = 1 (the nearest pixels of objects 1 and 2)
    assert w[20, 20] == pytest.approx(wc_bg + 10 * np.exp(-(1 + 1) ** 2 / (2 * 25)), rel=1e-5)
    # far from any pair of objects the border term vanishes
    assert w[0, 40] < wc_bg + 1e-3 and w[0, 40] >= wc_bg
    assert w[20, 20] > 5 * w[0, 40]
    assert w[20, 20] > w[20, 44]  # between objects 2 and 3, but 8 and 6 pixels away
    assert w[15, 10] == pytest.approx(wc_fg)  # object pixels: the class weight alone
    assert (w * 1.0).dtype == np.float32 and w.shape == labels.shape
    # the class weights balance: each class carries half the total weight
    wc_only = unet_weight_map(labels, w0=0)
    assert wc_only[labels == 0].sum() == pytest.approx(wc_only[labels > 0].sum(), rel=1e-5)


def test_weight_map_inputs():
    mask = np.zeros((20, 20), dtype=bool)
    mask[2:8, 2:8] = mask[2:8, 9:15] = True  # two components, one pixel apart
    as_mask = unet_weight_map(mask, class_weights=(1.0, 2.0))
    assert as_mask[5, 8] == pytest.approx(1 + 10 * np.exp(-4 / 50), rel=1e-5)
    assert as_mask[4, 4] == 2.0
    t = unet_weight_map(torch.from_numpy(mask.astype(np.int64)), class_weights=(1.0, 2.0))
    assert isinstance(t, torch.Tensor) and t[5, 8].item() == pytest.approx(1.0)  # one object: no border term
    with pytest.raises(UserError, match="labels of shape"):
        unet_weight_map(np.zeros((2, 3, 4), dtype=np.int64))
    with pytest.raises(UserError, match="class_weights="):
        unet_weight_map(mask, class_weights=(1.0, 2.0, 3.0))
