"""SRCNN and DnCNN: the published sizes and parameter counts, the paper's initialization, the
residual formulation, BT.601 YCbCr and the bicubic degradation."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fovea.data.color import bicubic_degrade, modcrop, rgb_to_y, rgb_to_ycbcr, ycbcr_to_rgb
from fovea.errors import UserError
from fovea.models.srcnn import SRCNN, SRCNNConfig, dncnn, srcnn, srcnn_valid, super_resolve_rgb


def _params(model):
    return sum(p.numel() for p in model.parameters())


# --- SRCNN -----------------------------------------------------------------------------------

def test_srcnn_same_keeps_size_and_valid_loses_12_pixels():
    x = torch.rand(2, 1, 33, 40)
    assert srcnn()(x).shape == (2, 1, 33, 40)
    assert srcnn_valid()(x).shape == (2, 1, 33 - 12, 40 - 12)  # (9 - 1) + (1 - 1) + (5 - 1)
    assert srcnn_valid().margin == 6 and srcnn().margin == 0
    # the paper's training setting: 33x33 sub-images give 21x21 outputs
    assert srcnn_valid()(torch.rand(1, 1, 33, 33)).shape == (1, 1, 21, 21)


def test_srcnn_valid_equals_centre_of_same():
    """Unpadded convolutions compute the same values as padded ones wherever no padding is read."""
    same, valid = srcnn(), srcnn_valid()
    valid.load_state_dict(same.state_dict())
    x = torch.rand(1, 1, 30, 30)
    # zero padding reaches 4 + 0 + 2 = 6 pixels in; beyond that the maps agree
    torch.testing.assert_close(valid(x)[..., 6:-6, 6:-6], same(x)[..., 12:-12, 12:-12])


def test_srcnn_915_parameter_count():
    expected = 9 * 9 * 1 * 64 + 64 + 1 * 1 * 64 * 32 + 32 + 5 * 5 * 32 * 1 + 1
    assert expected == 8129
    assert _params(srcnn()) == expected
    assert _params(srcnn_valid()) == expected
    # the 9-5-5 variant of the paper's Table 1
    assert _params(srcnn(kernels=(9, 5, 5))) == 9 * 9 * 64 + 64 + 5 * 5 * 64 * 32 + 32 + 5 * 5 * 32 + 1


def test_srcnn_init_is_the_papers_gaussian():
    torch.manual_seed(0)
    model = srcnn(widths=(256, 128))  # many weights, so the sample std is close to 0.001
    weights = torch.cat([m.weight.flatten() for m in (model.patch_extraction, model.mapping, model.reconstruction)])
    assert abs(weights.mean().item()) < 5e-5
    assert weights.std().item() == pytest.approx(1e-3, rel=0.02)
    for m in (model.patch_extraction, model.mapping, model.reconstruction):
        assert torch.count_nonzero(m.bias) == 0


def test_srcnn_bad_arguments():
    with pytest.raises(UserError, match="padding='full'"):
        SRCNN(SRCNNConfig(padding="full"))
    with pytest.raises(UserError, match="kernels"):
        srcnn(kernels=(9, 5))
    with pytest.raises(UserError, match="odd"):
        srcnn(kernels=(9, 2, 5))
    with pytest.raises(UserError, match="does not take"):
        srcnn(padding="valid")
    with pytest.raises(UserError, match=r"\(2, 3, 20, 20\).*\(N, 1, H, W\)"):
        srcnn()(torch.rand(2, 3, 20, 20))
    with pytest.raises(UserError, match="at least 13"):
        srcnn_valid()(torch.rand(1, 1, 12, 40))


def test_super_resolve_rgb_with_identity_net_is_bicubic():
    """A net that passes Y through unchanged leaves exactly the bicubic upscaling."""
    model = srcnn(kernels=(1, 1, 1), widths=(1, 1))
    with torch.no_grad():
        for m in (model.patch_extraction, model.mapping, model.reconstruction):
            m.weight.fill_(1.0)
    low = torch.rand(3, 10, 12)
    out = super_resolve_rgb(model, low, 3)
    expected = F.interpolate(low[None], scale_factor=3, mode="bicubic", align_corners=False).clamp(0, 1)[0]
    assert out.shape == (3, 30, 36)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


# --- DnCNN -----------------------------------------------------------------------------------

def test_dncnn_zero_init_last_starts_as_identity():
    model = dncnn(depth=4, width=8, zero_init_last=True)
    x = torch.rand(2, 1, 9, 9)
    torch.testing.assert_close(model(x), x, rtol=0, atol=0)
    assert torch.count_nonzero(dncnn(depth=4, width=8).body[-1].weight) > 0  # the paper's He init by default


def test_dncnn_zero_residual_is_identity():
    model = dncnn(depth=6, width=8).eval()
    last = model.body[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
    x = torch.rand(2, 1, 17, 23)
    torch.testing.assert_close(model(x), x, rtol=0, atol=0)
    # and the output is noisy - residual in general
    model = dncnn(depth=4, width=8).eval()
    torch.testing.assert_close(model(x), x - model.residual(x))


@pytest.mark.parametrize("size", [(1, 1), (7, 13), (31, 9)])
def test_dncnn_keeps_odd_sizes(size):
    model = dncnn(depth=5, width=8, in_channels=3)
    assert model(torch.rand(2, 3, *size)).shape == (2, 3, *size)


def test_dncnn_parameter_count():
    d, w, c = 17, 64, 1
    # first conv + bias, (d - 2) bias-free convs with batch norm (scale and shift), last conv + bias
    expected = (9 * c * w + w) + (d - 2) * (9 * w * w + 2 * w) + (9 * w * c + c)
    assert expected == 556097
    model = dncnn()
    assert _params(model) == expected
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(convs) == 17 and len(bns) == 15


def test_dncnn_bad_arguments():
    with pytest.raises(UserError, match="depth=1"):
        dncnn(depth=1)
    with pytest.raises(UserError, match="width=0"):
        dncnn(width=0)
    with pytest.raises(UserError, match=r"\(N, 1, H, W\)"):
        dncnn(depth=3, width=4)(torch.rand(1, 3, 8, 8))


def _training_image() -> torch.Tensor:
    try:
        from skimage import data
        return torch.from_numpy(data.camera()).float().div(255)
    except ImportError:  # a smooth generated texture
        yy, xx = torch.meshgrid(torch.linspace(0, 1, 256), torch.linspace(0, 1, 256), indexing="ij")
        return 0.5 + 0.25 * torch.sin(12 * xx + 5 * yy) * torch.cos(9 * yy)


def test_tiny_dncnn_learns_to_denoise():
    """A depth-5, width-16 DnCNN trained for 60 Adam steps on sigma = 25/255 Gaussian noise
    already removes most of the noise on held-out patches (it starts as the identity, so the
    gain is learned)."""
    g = torch.Generator().manual_seed(0)
    image = _training_image()
    train, held_out = image[:, : image.shape[1] // 2], image[:, image.shape[1] // 2:]

    def patches(img, n):
        r = torch.randint(0, img.shape[0] - 32, (n,), generator=g)
        c = torch.randint(0, img.shape[1] - 32, (n,), generator=g)
        return torch.stack([img[i:i + 32, j:j + 32] for i, j in zip(r.tolist(), c.tolist())])[:, None]

    sigma = 25 / 255
    model = dncnn(depth=5, width=16, zero_init_last=True)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        clean = patches(train, 16)
        noisy = clean + sigma * torch.randn(clean.shape, generator=g)
        loss = F.mse_loss(model.residual(noisy), noisy - clean)  # the paper's residual loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    clean = patches(held_out, 32)
    noisy = clean + sigma * torch.randn(clean.shape, generator=g)
    with torch.no_grad():
        denoised = model(noisy)
    noisy_mse, denoised_mse = F.mse_loss(noisy, clean).item(), F.mse_loss(denoised, clean).item()
    assert noisy_mse == pytest.approx(sigma**2, rel=0.1)
    assert denoised_mse < 0.5 * noisy_mse


# --- colour and degradation ------------------------------------------------------------------

_BT601 = np.array([[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]])


@pytest.mark.parametrize("rgb", [(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 1), (0, 0, 0), (0.2, 0.5, 0.9)])
def test_ycbcr_matches_bt601(rgb):
    expected = (np.array([16.0, 128.0, 128.0]) + _BT601 @ np.array(rgb, dtype=float)) / 255
    x = torch.tensor(rgb, dtype=torch.float64)[:, None, None].expand(3, 2, 2)
    out = rgb_to_ycbcr(x)
    np.testing.assert_allclose(out[:, 0, 0].numpy(), expected, atol=1e-12)
    torch.testing.assert_close(ycbcr_to_rgb(out), x)


def test_ycbcr_white_and_black_are_studio_range():
    white = rgb_to_ycbcr(torch.ones(3, 1, 1, dtype=torch.float64)).flatten()
    black = rgb_to_ycbcr(torch.zeros(3, 1, 1, dtype=torch.float64)).flatten()
    np.testing.assert_allclose((white * 255).numpy(), [235, 128, 128], atol=1e-9)
    np.testing.assert_allclose((black * 255).numpy(), [16, 128, 128], atol=1e-9)


def test_ycbcr_round_trip_and_skimage():
    x = torch.rand(2, 3, 8, 9)
    torch.testing.assert_close(ycbcr_to_rgb(rgb_to_ycbcr(x)), x, atol=1e-5, rtol=0)
    assert rgb_to_y(x).shape == (2, 1, 8, 9)
    color = pytest.importorskip("skimage.color")
    ref = color.rgb2ycbcr(x[0].permute(1, 2, 0).double().numpy()) / 255
    np.testing.assert_allclose(rgb_to_ycbcr(x[0].double()).permute(1, 2, 0).numpy(), ref, atol=1e-9)


def test_ycbcr_rejects_wrong_channels():
    with pytest.raises(UserError, match=r"\(1, 4, 4\).*\(\.\.\., 3, H, W\)"):
        rgb_to_ycbcr(torch.rand(1, 4, 4))


def test_bicubic_degrade():
    x = torch.rand(2, 3, 24, 30)
    assert bicubic_degrade(x, 3).shape == (2, 3, 24, 30)
    torch.testing.assert_close(bicubic_degrade(x[0], 3), bicubic_degrade(x, 3)[0])
    torch.testing.assert_close(bicubic_degrade(x[0, 0], 3), bicubic_degrade(x, 3)[0, 0])
    # a constant image stays constant
    torch.testing.assert_close(bicubic_degrade(torch.full((1, 1, 12, 12), 0.3), 2), torch.full((1, 1, 12, 12), 0.3))
    # a one-pixel checkerboard is above the low-resolution Nyquist limit: antialiasing removes it
    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    checker = ((yy + xx) % 2).float()[None, None]
    out = bicubic_degrade(checker, 2)
    assert (out[..., 4:-4, 4:-4] - 0.5).abs().max() < 0.05
    # and the degradation loses detail of a random image
    assert F.mse_loss(bicubic_degrade(x, 3), x) > 0.01


def test_bicubic_degrade_bad_arguments():
    with pytest.raises(UserError, match="multiples of 3"):
        bicubic_degrade(torch.rand(1, 1, 20, 21), 3)
    with pytest.raises(UserError, match="scale=1"):
        bicubic_degrade(torch.rand(1, 1, 20, 20), 1)
    assert modcrop(torch.rand(1, 20, 22), 3).shape == (1, 18, 21)
