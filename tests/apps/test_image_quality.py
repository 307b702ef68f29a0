"""PSNR and SSIM against their formulas and scikit-image, border shaving, and the Gaussian and
median denoising baselines."""

import math

import numpy as np
import pytest
import torch

from fovea.apps.image_quality import gaussian_filter_baseline, median_filter_baseline, psnr, ssim
from fovea.errors import UserError


def _pair(shape=(2, 3, 32, 36), noise=0.1, seed=0):
    rng = np.random.default_rng(seed)
    clean = rng.random(shape)
    return clean, np.clip(clean + noise * rng.standard_normal(shape), 0, 1)


def _skimage_ssim(a, b):
    metrics = pytest.importorskip("skimage.metrics")
    return metrics.structural_similarity(a, b, channel_axis=0, gaussian_weights=True, sigma=1.5,
                                         use_sample_covariance=False, data_range=1)


def _smooth_image(size=64):
    yy, xx = np.meshgrid(np.linspace(0, 1, size), np.linspace(0, 1, size), indexing="ij")
    return 0.5 + 0.3 * np.sin(2 * np.pi * xx) * np.cos(2 * np.pi * yy)


def test_psnr_matches_formula_per_image_and_mean():
    # rtol 1e-6 (2e-5 dB): torchmetrics' log base conversion uses a float32 constant
    a, b = _pair()
    expected = [10 * math.log10(1 / np.mean((a[i] - b[i]) ** 2)) for i in range(2)]
    per_image = psnr(torch.from_numpy(a), torch.from_numpy(b), reduction="none")
    np.testing.assert_allclose(per_image.numpy(), expected, rtol=1e-6)
    assert psnr(a, b).item() == pytest.approx(np.mean(expected), rel=1e-6)
    # data range 255 on 8-bit values gives the same number
    assert psnr(a * 255, b * 255, data_range=255).item() == pytest.approx(np.mean(expected), rel=1e-6)


def test_psnr_matches_skimage():
    metrics = pytest.importorskip("skimage.metrics")
    a, b = _pair()
    expected = [metrics.peak_signal_noise_ratio(a[i], b[i], data_range=1) for i in range(2)]
    np.testing.assert_allclose(psnr(a, b, reduction="none").numpy(), expected, rtol=1e-6)


def test_psnr_of_known_noise():
    """A constant error of 0.1 is an MSE of 0.01: exactly 20 dB."""
    a = torch.full((1, 1, 8, 8), 0.5)
    assert psnr(a, a + 0.1).item() == pytest.approx(20.0, abs=1e-4)
    assert math.isinf(psnr(a, a).item())


def test_psnr_border_crop():
    a = torch.zeros(1, 1, 20, 20)
    b = a.clone()
    b[..., :3, :] = 1.0  # errors only in the top three rows
    assert math.isinf(psnr(a, b, border=3).item())
    expected = 10 * math.log10(1 / (3 * 20 / 400))
    assert psnr(a, b).item() == pytest.approx(expected, rel=1e-6)
    # border=2 keeps one erroneous row of 16 pixels out of 16 x 16
    assert psnr(a, b, border=2).item() == pytest.approx(10 * math.log10(256 / 16), rel=1e-6)


def test_ssim_matches_skimage():
    a, b = _pair()
    expected = [_skimage_ssim(a[i], b[i]) for i in range(2)]
    np.testing.assert_allclose(ssim(a, b, reduction="none").numpy(), expected, atol=1e-6)
    # float32 tensors too
    got = ssim(torch.from_numpy(a).float(), torch.from_numpy(b).float()).item()
    assert got == pytest.approx(np.mean(expected), abs=1e-4)


def test_ssim_border_crop_equals_ssim_of_cropped_images():
    a, b = _pair(shape=(1, 1, 40, 40))
    b[..., :4, :] = 0.0  # damage the border only
    cropped = ssim(a[..., 4:-4, 4:-4], b[..., 4:-4, 4:-4]).item()
    assert ssim(a, b, border=4).item() == pytest.approx(cropped, abs=1e-12)
    assert cropped == pytest.approx(_skimage_ssim(a[0, :, 4:-4, 4:-4], b[0, :, 4:-4, 4:-4]), abs=1e-6)
    assert ssim(a, b).item() < cropped - 0.01  # the damage counts without the crop


def test_ssim_identity_and_bounds():
    a, b = _pair(shape=(1, 1, 24, 24), noise=0.3)
    assert ssim(a, a).item() == pytest.approx(1.0, abs=1e-12)
    assert -1 <= ssim(a, b).item() < 0.9


def test_metrics_bad_arguments():
    a = torch.rand(1, 1, 16, 16)
    with pytest.raises(UserError, match=r"shapes \(1, 1, 16, 16\) and \(1, 1, 16, 15\)"):
        psnr(a, a[..., :15])
    with pytest.raises(UserError, match="border=-1"):
        psnr(a, a, border=-1)
    with pytest.raises(UserError, match="border=8"):
        psnr(a, a, border=8)
    with pytest.raises(UserError, match="at least 11x11"):
        ssim(a, a, border=3)
    with pytest.raises(UserError, match="data_range=0"):
        ssim(a, a, data_range=0)
    with pytest.raises(UserError, match="reduction='sum'"):
        psnr(a, a, reduction="sum")


@pytest.mark.parametrize("as_tensor", [False, True])
def test_baselines_reduce_noise_on_a_smooth_image(as_tensor):
    rng = np.random.default_rng(0)
    clean = np.stack([_smooth_image(), 1 - _smooth_image()])[None]  # (1, 2, 64, 64)
    noisy = clean + (25 / 255) * rng.standard_normal(clean.shape)
    noisy_in = torch.from_numpy(noisy) if as_tensor else noisy
    noisy_mse = np.mean((noisy - clean) ** 2)
    for denoised in (gaussian_filter_baseline(noisy_in, 1.0), median_filter_baseline(noisy_in, 3)):
        assert isinstance(denoised, torch.Tensor) == as_tensor
        denoised = np.asarray(denoised)
        assert denoised.shape == clean.shape
        assert np.mean((denoised - clean) ** 2) < 0.3 * noisy_mse


def test_baselines_filter_only_spatially():
    """Channels are smoothed separately: a constant channel next to a noisy one stays constant,
    and the result equals filtering each (H, W) plane on its own."""
    ndimage = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(1)
    x = np.stack([np.full((16, 16), 0.25), rng.random((16, 16))])
    g, m = gaussian_filter_baseline(x, 1.5), median_filter_baseline(x, 5)
    np.testing.assert_allclose(g[0], 0.25, atol=1e-12)
    np.testing.assert_allclose(m[0], 0.25, atol=1e-12)
    np.testing.assert_allclose(g[1], ndimage.gaussian_filter(x[1], 1.5, mode="reflect"), atol=1e-12)
    np.testing.assert_allclose(m[1], ndimage.median_filter(x[1], 5, mode="reflect"), atol=1e-12)
    with pytest.raises(UserError, match="sigma=0"):
        gaussian_filter_baseline(x, 0)
    with pytest.raises(UserError, match="size=2.5"):
        median_filter_baseline(x, 2.5)
    with pytest.raises(UserError, match="dtype int64"):
        median_filter_baseline(np.zeros((4, 4), dtype=np.int64), 3)
