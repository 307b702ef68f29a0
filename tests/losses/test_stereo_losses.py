"""Inverse warping, photometric and smoothness terms of the unsupervised stereo loss, checked
against direct numpy formulas."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fovea.errors import UserError
from fovea.losses.stereo import (disparity_smoothness, multiscale_stereo_loss, parse_stereo_loss, photometric_error,
                                 ssim_map, stereo_loss, warp_right_to_left)


def _numpy_warp(right: np.ndarray, disp: np.ndarray) -> np.ndarray:
    """left_hat[c, y, x] = right[c, y, x - d] by linear interpolation along the row, edge values
    beyond the border: the definition, one row at a time."""
    c, h, w = right.shape
    out = np.empty_like(right)
    xs = np.arange(w, dtype=np.float64)
    for ch in range(c):
        for y in range(h):
            out[ch, y] = np.interp(xs - disp[y], xs, right[ch, y])  # np.interp clamps to the edge values
    return out


def test_constant_integer_disparity_is_a_shift():
    rng = np.random.default_rng(0)
    right = rng.random((2, 3, 9, 14)).astype(np.float32)
    d = 3
    warped, valid = warp_right_to_left(torch.from_numpy(right), torch.full((2, 1, 9, 14), float(d)))
    shifted = np.zeros_like(right)
    shifted[..., d:] = right[..., :-d]  # left(x) = right(x - d)
    np.testing.assert_allclose(warped.numpy()[..., d:], shifted[..., d:], atol=1e-6)
    # the first d columns look outside the right image: the edge column is repeated, the mask says so
    np.testing.assert_allclose(warped.numpy()[..., :d], np.repeat(right[..., :1], d, -1), atol=1e-6)
    assert valid[..., :d].sum() == 0 and bool((valid[..., d:] == 1).all())


def test_fractional_and_varying_disparity_match_linear_interpolation():
    rng = np.random.default_rng(1)
    right = rng.random((3, 7, 16))
    disp = rng.uniform(0, 5, (7, 16))
    warped, _ = warp_right_to_left(torch.from_numpy(right)[None], torch.from_numpy(disp)[None, None])
    np.testing.assert_allclose(warped[0].numpy(), _numpy_warp(right, disp), atol=1e-10)


def test_true_disparity_reconstructs_the_left_view():
    rng = np.random.default_rng(2)
    scene = rng.random((1, 3, 12, 40)).astype(np.float32)
    d = 5
    left = torch.from_numpy(scene[..., :-d])  # left(x) = scene(x), right(x) = scene(x + d): right(x - d) = left(x)
    right = torch.from_numpy(scene[..., d:])
    true = stereo_loss(left, right, torch.full((1, 1, 12, 35), float(d)), photometric="l2", mask="columns", margin=d)
    wrong = stereo_loss(left, right, torch.full((1, 1, 12, 35), float(d + 1)), photometric="l2", mask="columns",
                        margin=d + 1)
    assert float(true["photometric"]) < 1e-12 < float(wrong["photometric"])


def test_warp_gradient_matches_finite_differences():
    torch.manual_seed(0)
    right = torch.rand(1, 2, 5, 9, dtype=torch.float64)
    disp = (torch.rand(1, 1, 5, 9, dtype=torch.float64) * 3 + 0.1).requires_grad_()
    # away from integer disparities the bilinear sample is differentiable
    disp.data = disp.data.floor() + 0.2 + 0.6 * (disp.data - disp.data.floor())
    assert torch.autograd.gradcheck(lambda d: warp_right_to_left(right, d)[0], (disp,))


def test_photometric_terms():
    rng = np.random.default_rng(3)
    a, b = rng.random((2, 3, 6, 7)), rng.random((2, 3, 6, 7))
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    np.testing.assert_allclose(photometric_error(ta, tb, "l2")[:, 0].numpy(), ((a - b) ** 2).mean(1))
    np.testing.assert_allclose(photometric_error(ta, tb, "l1")[:, 0].numpy(), np.abs(a - b).mean(1))
    dssim = np.clip((1 - ssim_map(ta, tb).numpy()) / 2, 0, 1).mean(1)
    np.testing.assert_allclose(photometric_error(ta, tb, "ssim")[:, 0].numpy(),
                               0.85 * dssim + 0.15 * np.abs(a - b).mean(1))
    assert float(photometric_error(ta, ta, "ssim").abs().max()) < 1e-6


def test_ssim_map_matches_scikit_image_inside():
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(4)
    a = rng.random((20, 24))
    b = np.clip(a + 0.1 * rng.standard_normal((20, 24)), 0, 1)
    _, ref = structural_similarity(a, b, win_size=3, data_range=1.0, use_sample_covariance=False, full=True,
                                   gaussian_weights=False)
    ours = ssim_map(torch.from_numpy(a)[None, None], torch.from_numpy(b)[None, None])[0, 0].numpy()
    # the two pad the border differently; every pixel of a full 3x3 window agrees
    np.testing.assert_allclose(ours[1:-1, 1:-1], ref[1:-1, 1:-1], atol=1e-10)


def test_l2_smoothness_is_the_mean_squared_gradient():
    y, x = np.mgrid[0:6, 0:8].astype(np.float64)
    disp = 0.5 * x - 2.0 * y + 0.3 * x * y
    d = torch.from_numpy(disp)[None, None]
    dx, dy = np.diff(disp, axis=1), np.diff(disp, axis=0)
    expected = (dx ** 2).mean() + (dy ** 2).mean()
    assert float(disparity_smoothness(d, kind="l2")) == pytest.approx(expected, rel=1e-12)
    # a plane of slopes a, b: a^2 + b^2
    assert float(disparity_smoothness(torch.from_numpy(1.5 * x + 0.5 * y)[None, None], kind="l2")) == pytest.approx(2.5)


def test_edge_aware_smoothness_hand_formula():
    rng = np.random.default_rng(5)
    disp, img = rng.random((5, 7)) * 4, rng.random((3, 5, 7))
    wx = np.exp(-np.abs(np.diff(img, axis=2)).mean(0))
    wy = np.exp(-np.abs(np.diff(img, axis=1)).mean(0))
    expected = (np.abs(np.diff(disp, axis=1)) * wx).mean() + (np.abs(np.diff(disp, axis=0)) * wy).mean()
    got = disparity_smoothness(torch.from_numpy(disp)[None, None], torch.from_numpy(img)[None], kind="edge")
    assert float(got) == pytest.approx(expected, rel=1e-12)
    # on a flat image the weights are 1: the mean absolute gradient
    flat = torch.zeros(1, 3, 5, 7, dtype=torch.float64)
    assert float(disparity_smoothness(torch.from_numpy(disp)[None, None], flat, kind="edge")) == pytest.approx(
        np.abs(np.diff(disp, axis=1)).mean() + np.abs(np.diff(disp, axis=0)).mean(), rel=1e-12)


def test_loss_is_photometric_plus_weighted_smoothness_and_masks():
    torch.manual_seed(1)
    left, right = torch.rand(2, 3, 8, 16), torch.rand(2, 3, 8, 16)
    disp = torch.rand(2, 1, 8, 16) * 6
    out = stereo_loss(left, right, disp, photometric="l1", smoothness="l2", smoothness_weight=0.3, mask="columns",
                      margin=4)
    recon, valid = warp_right_to_left(right, disp)
    err = (left - recon).abs().mean(1, keepdim=True)
    assert float(out["photometric"]) == pytest.approx(float(err[..., 4:].mean()))
    assert float(out["loss"]) == pytest.approx(float(out["photometric"] + 0.3 * disparity_smoothness(disp, kind="l2")))
    outside = stereo_loss(left, right, disp, photometric="l1", mask="outside")
    assert float(outside["photometric"]) == pytest.approx(float((err * valid).sum() / valid.sum()))


def test_multiscale_loss_averages_the_scales():
    torch.manual_seed(2)
    left, right = torch.rand(1, 3, 16, 32), torch.rand(1, 3, 16, 32)
    disps = [torch.rand(1, 1, 16 // 2 ** k, 32 // 2 ** k) * 4 / 2 ** k for k in range(3)]
    kw = dict(photometric="ssim", smoothness="edge", smoothness_weight=0.1, mask="columns")
    got = multiscale_stereo_loss(left, right, disps, margin=8, **kw)
    ref, lt, rt = 0.0, left, right
    for k, d in enumerate(disps):
        if k:
            lt, rt = F.avg_pool2d(lt, 2), F.avg_pool2d(rt, 2)
        ref += float(stereo_loss(lt, rt, d, margin=8 / 2 ** k, **kw)["loss"])
    assert float(got["loss"]) == pytest.approx(ref / 3, rel=1e-6)
    with pytest.raises(UserError, match="prediction 1 has size"):
        multiscale_stereo_loss(left, right, [disps[0], disps[0]], **kw)


def test_parse_stereo_loss():
    assert parse_stereo_loss("l2:l2") == ("l2", "l2")
    assert parse_stereo_loss("ssim") == ("ssim", "edge")
    for bad in ("ce", "l2:tv", "ssim:"):
        if bad == "ssim:":
            assert parse_stereo_loss(bad) == ("ssim", "edge")
            continue
        with pytest.raises(UserError, match="--loss"):
            parse_stereo_loss(bad)
