"""The depth task's data (motorcycle, folders, disparity files), crops, metrics and baselines."""

import numpy as np
import pytest
import torch
from PIL import Image

from fovea.data.stereo import (load_pair, read_disparity, read_pfm, stereo_bundle, stereo_folder, stereo_motorcycle)
from fovea.errors import UserError
from fovea.tasks.depth import (Depth, disparity_errors, fill_invalid, num_disparities_for, sgbm_disparity,
                               upsample_disparity)


def _textured_pair(h=48, w=96, d=6, seed=0):
    """A random-texture scene seen by two cameras d pixels apart: right(x - d) = left(x)."""
    rng = np.random.default_rng(seed)
    scene = (rng.random((h, w + d, 3)) * 255).astype(np.uint8)
    return scene[:, :w], scene[:, d:]


def _write_folder(root, names=("a", "b"), size=(48, 96), disp_ext=".npy"):
    for sub in ("left", "right", "disp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i, n in enumerate(names):
        left, right = _textured_pair(*size, seed=i)
        Image.fromarray(left).save(root / "left" / f"{n}.png")
        Image.fromarray(right).save(root / "right" / f"{n}.png")
        d = np.full(size, 6.0, np.float32)
        d[0, 0] = np.inf
        if disp_ext == ".npy":
            np.save(root / "disp" / f"{n}.npy", d)
    return root


def test_motorcycle_pair():
    pairs = stereo_motorcycle()
    assert pairs.left.shape == pairs.right.shape == (1, 3, 500, 741) and pairs.left.dtype == torch.uint8
    known = torch.isfinite(pairs.disparity)
    assert pairs.disparity.shape == (1, 500, 741) and 0.9 < float(known.float().mean()) < 0.95
    assert 7 < float(pairs.disparity[known].min()) and float(pairs.disparity[known].max()) < 61


def test_bundle_scales_and_repeats_without_copying_one_pair():
    pairs = stereo_motorcycle()
    data = stereo_bundle(pairs, scale=4, crops_per_epoch=64)
    assert data.image_size == (125, 185) and data.train.images.shape == (64, 6, 125, 185)
    assert data.train.images.untyped_storage().nbytes() == 6 * 125 * 185  # a view of the one pair
    assert data.val.images.shape == (1, 6, 125, 185) and data.val.labels.shape == (1, 500, 741)
    assert int(data.train.labels.abs().sum()) == 0  # no ground truth in training
    with pytest.raises(UserError, match="--scale"):
        stereo_bundle(pairs, scale=0)


def test_folder_layout_and_its_errors(tmp_path):
    root = _write_folder(tmp_path / "pairs")
    pairs = stereo_folder(root)
    assert pairs.names == ["a", "b"] and pairs.left.shape == (2, 3, 48, 96)
    assert bool(torch.isinf(pairs.disparity[:, 0, 0]).all()) and float(pairs.disparity[0, 1, 1]) == 6.0
    data = stereo_bundle(pairs, scale=2, crops_per_epoch=10, min_samples=4)
    assert data.train.images.shape == (10, 6, 24, 48)

    Image.fromarray(np.zeros((40, 96, 3), np.uint8)).save(root / "right" / "b.png")
    with pytest.raises(UserError, match="differ in size"):
        stereo_folder(root)
    (root / "right" / "b.png").unlink()
    with pytest.raises(UserError, match="no right view"):
        stereo_folder(root)
    with pytest.raises(UserError, match="not found"):
        stereo_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="neither"):
        stereo_folder(tmp_path / "empty")


def test_middlebury_scene_with_pfm(tmp_path):
    scene = tmp_path / "scene"
    scene.mkdir()
    left, right = _textured_pair()
    Image.fromarray(left).save(scene / "im0.png")
    Image.fromarray(right).save(scene / "im1.png")
    disp = np.arange(48 * 96, dtype=np.float32).reshape(48, 96) / 100
    disp[3, 4] = np.inf
    with open(scene / "disp0.pfm", "wb") as f:  # PFM stores the bottom row first, little-endian when scale < 0
        f.write(b"Pf\n96 48\n-1.0\n" + disp[::-1].astype("<f4").tobytes())
    np.testing.assert_array_equal(read_pfm(scene / "disp0.pfm"), disp)
    pairs = stereo_folder(scene)
    assert pairs.names == ["scene"] and torch.isinf(pairs.disparity[0, 3, 4])
    assert float(pairs.disparity[0, 0, 1]) == pytest.approx(0.01)


def test_disparity_files(tmp_path):
    kitti = np.zeros((4, 5), np.uint16)
    kitti[1, 2] = 256 * 7 + 128
    Image.fromarray(kitti).save(tmp_path / "d.png")
    d = read_disparity(tmp_path / "d.png")
    assert d[1, 2] == pytest.approx(7.5) and np.isinf(d[0, 0])
    (tmp_path / "bad.pfm").write_bytes(b"P6\n1 1\n")
    with pytest.raises(UserError, match="cannot read disparity"):
        read_disparity(tmp_path / "bad.pfm")
    with pytest.raises(UserError, match="not found"):
        read_disparity(tmp_path / "none.npy")


def test_load_pair_errors(tmp_path):
    left, right = _textured_pair()
    Image.fromarray(left).save(tmp_path / "l.png")
    Image.fromarray(right[:, :90]).save(tmp_path / "r.png")
    with pytest.raises(UserError, match="differ in size"):
        load_pair(tmp_path / "l.png", tmp_path / "r.png")
    with pytest.raises(UserError, match="not found"):
        load_pair(tmp_path / "l.png", tmp_path / "nothing.png")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(UserError, match="corrupt.png"):
        load_pair(tmp_path / "l.png", tmp_path / "corrupt.png")


def test_crops_share_one_window_in_both_views():
    task = Depth()
    task.crop = (8, 16)
    x = torch.arange(2 * 6 * 20 * 30, dtype=torch.float32).reshape(2, 6, 20, 30)
    crops, _ = task.augment_batch(None, x, torch.zeros(2), torch.Generator().manual_seed(0))
    assert crops.shape == (2, 6, 8, 16)
    for i in range(2):
        # locate the window from the left view, then the right view must come from the same place
        flat = int(crops[i, 0, 0, 0]) - i * 6 * 600
        y0, x0 = divmod(flat, 30)
        torch.testing.assert_close(crops[i], x[i, :, y0:y0 + 8, x0:x0 + 16])


def test_errors_fill_and_upsampling():
    truth = np.array([[1.0, 2.0, np.inf], [4.0, 5.0, 6.0]])
    pred = np.array([[1.5, 6.0, 0.0], [4.0, 1.0, 6.0]])
    e = disparity_errors(pred, truth)
    assert e["pixels"] == 5 and e["mae"] == pytest.approx((0.5 + 4 + 0 + 4 + 0) / 5) and e["bad3"] == pytest.approx(0.4)
    filled = fill_invalid(np.array([[np.nan, 3.0, np.nan, np.nan, 5.0, np.nan], [np.nan] * 6]))
    np.testing.assert_array_equal(filled, [[3, 3, 3, 3, 5, 5], [0] * 6])  # the smaller (farther) neighbour
    assert num_disparities_for(59.9) == 64 and num_disparities_for(64) == 80
    d = torch.full((1, 1, 5, 10), 2.0)
    up = upsample_disparity(d, (10, 20))
    assert up.shape == (1, 10, 20) and torch.allclose(up, torch.full_like(up, 4.0))


def test_sgbm_recovers_a_constant_shift():
    left, right = _textured_pair(64, 128, d=9)
    d = sgbm_disparity(left, right, 32)
    inside = d[8:-8, 40:-8]
    assert np.nanmedian(inside) == pytest.approx(9.0, abs=0.1) and np.isfinite(inside).mean() > 0.9


def test_summarize_weights_by_pixels():
    task = Depth()
    out = task.summarize(dict(loss=0.5, abs_error_px=20.0, bad3_px=2.0, truth_px=10.0))
    assert out == dict(loss=0.5, mae=2.0, bad3=0.2)
    assert task.summarize(dict(loss=0.5, abs_error_px=0.0, bad3_px=0.0, truth_px=0.0)) == dict(loss=0.5)
