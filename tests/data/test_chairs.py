"""The synthetic ``chairs`` generator (exact ground truth, occlusion, determinism) and the
loader of frame-pair folders with .flo ground truth."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from fovea.data.chairs import (chairs_splits, load_flow_data, load_pair_folder, make_chairs, make_scene,
                               parse_chairs_spec, pixel_grid, render)
from fovea.data.flo import FloError, write_flo
from fovea.errors import UserError


@pytest.fixture(scope="module")
def pairs():
    return make_chairs(12, (48, 64), seed=3)


def _warp_back(frame2: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """frame2 sampled at x + flow(x) (bilinear, pixel centres at integers)."""
    n, _, h, w = frame2.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                            indexing="ij")
    gx = (xs + flow[:, 0]) / (w - 1) * 2 - 1
    gy = (ys + flow[:, 1]) / (h - 1) * 2 - 1
    return F.grid_sample(frame2, torch.stack([gx, gy], -1), mode="bilinear", align_corners=True)


def test_shapes_dtypes_and_determinism(pairs):
    assert pairs.images.shape == (12, 6, 48, 64) and pairs.images.dtype == torch.uint8
    assert pairs.flows.shape == (12, 2, 48, 64) and pairs.flows.dtype == torch.float32
    assert pairs.valid.shape == (12, 48, 64) and pairs.valid.dtype == torch.bool
    again = make_chairs(12, (48, 64), seed=3)
    assert torch.equal(again.images, pairs.images) and torch.equal(again.flows, pairs.flows)
    other = make_chairs(12, (48, 64), seed=4)
    assert not torch.equal(other.images, pairs.images)
    # real motion, and some of it occluded
    assert pairs.flows.abs().mean() > 0.5
    assert 0.5 < pairs.valid.float().mean() < 1.0


def test_ground_truth_is_exact_on_the_scene():
    """Frame 2 rendered at x + flow(x) is frame 1 at x wherever x is not occluded."""
    scene = make_scene(6, (40, 56), seed=11)
    data = make_chairs(6, (40, 56), seed=11)
    grid = pixel_grid(6, 40, 56)
    img1, _ = render(scene, 1, grid)
    moved = grid.double() + data.flows.flatten(2).permute(0, 2, 1).double()
    at_moved, _ = render(scene, 2, moved)
    valid = data.valid.flatten(1)
    diff = (at_moved - img1).abs().amax(1)[valid]
    assert diff.max() < 2e-3
    # the stored frame 1 is the rendered one, rounded to uint8
    assert (data.images[:, :3].flatten(2).float() / 255 - img1).abs().max() <= 0.5 / 255 + 1e-6


def test_warping_frame2_by_the_flow_reproduces_frame1(pairs):
    f1 = pairs.images[:, :3].float() / 255
    f2 = pairs.images[:, 3:].float() / 255
    warped = _warp_back(f2, pairs.flows)
    # away from motion boundaries, where bilinear interpolation mixes surfaces
    interior = (-F.max_pool2d(-pairs.valid[:, None].float(), 3, 1, 1))[:, 0] > 0
    err = (warped - f1).abs().mean(1)[interior].mean()
    shifted = _warp_back(f2, pairs.flows + torch.tensor([1.5, 0.0]).view(1, 2, 1, 1))
    err_shifted = (shifted - f1).abs().mean(1)[interior].mean()
    assert err < 0.02, err
    assert err < 0.3 * err_shifted
    assert err < 0.3 * (f2 - f1).abs().mean(1)[interior].mean()


def test_splits_come_from_distinct_seeds_and_test_is_fixed():
    a = chairs_splits(4, 2, 3, (32, 32), seed=0)
    b = chairs_splits(6, 0, 3, (32, 32), seed=0)
    assert set(a) == {"train", "val", "test"} and set(b) == {"train", "test"}
    assert torch.equal(a["test"].images, b["test"].images)
    assert not torch.equal(a["train"].images[:3], a["test"].images)


def test_chairs_spec():
    o = parse_chairs_spec("chairs:n=20,size=32x48,objects=1-2,motion=0.05,seed=2,val=3,test=4")
    assert (o["n"], o["size"], o["objects"], o["motion"], o["seed"], o["val"], o["test"]) == \
        (20, (32, 48), (1, 2), 0.05, 2, 3, 4)
    assert parse_chairs_spec("chairs", image_size=40)["size"] == (40, 40)
    for bad in ("chairs:n=0", "chairs:size=big", "chairs:speed=2", "chairs:n", "chairs:size=4"):
        with pytest.raises(UserError):
            parse_chairs_spec(bad)
    data = load_flow_data("chairs:n=5,val=2,test=2,size=32")
    assert data.train.images.shape == (5, 6, 32, 32) and data.train.labels.shape == (5, 2, 32, 32)
    assert data.image_size == (32, 32) and len(data.val) == 2 and len(data.test) == 2


# ------------------------------------------------------------------------- pair folders


def _save(path, hw3: np.ndarray) -> None:
    Image.fromarray(hw3).save(path)


def _write_pair(folder, name, h=20, w=30, flow_hw=None, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    _save(folder / f"{name}_img1.png", rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    _save(folder / f"{name}_img2.png", rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    fh, fw = flow_hw or (h, w)
    flow = torch.from_numpy(rng.normal(size=(2, fh, fw)).astype(np.float32))
    write_flo(folder / f"{name}_flow.flo", flow)
    return flow


def test_pair_folder_loads_in_name_order(tmp_path):
    flows = [_write_pair(tmp_path, f"{i:05d}", seed=i) for i in range(4)]
    images, labels, paths = load_pair_folder(tmp_path)
    assert images.shape == (4, 6, 20, 30) and images.dtype == torch.uint8
    assert torch.equal(labels, torch.stack(flows))
    assert [p.rsplit("/", 1)[-1] for p in paths] == [f"{i:05d}_img1.png" for i in range(4)]
    frame = np.array(Image.open(tmp_path / "00002_img2.png"))
    assert torch.equal(images[2, 3:], torch.from_numpy(frame).permute(2, 0, 1))


def test_pair_folder_resizes_flow_with_the_frames(tmp_path):
    _write_pair(tmp_path, "a", h=20, w=30)
    flow = torch.ones(2, 20, 30) * torch.tensor([3.0, -2.0]).view(2, 1, 1)
    write_flo(tmp_path / "a_flow.flo", flow)
    images, labels, _ = load_pair_folder(tmp_path, size=(10, 60))
    assert images.shape == (1, 6, 10, 60)
    assert torch.allclose(labels[0, 0], torch.full((10, 60), 6.0))  # u x 60 / 30
    assert torch.allclose(labels[0, 1], torch.full((10, 60), -1.0))  # v x 10 / 20


def test_pair_folder_splits(tmp_path):
    for split, k in (("train", 3), ("val", 1), ("test", 2)):
        for i in range(k):
            _write_pair(tmp_path / split, f"{split}{i}", seed=i)
    data = load_flow_data(str(tmp_path))
    assert (len(data.train), len(data.val), len(data.test)) == (3, 1, 2)
    flat = tmp_path / "flat"
    for i in range(10):
        _write_pair(flat, f"p{i}", seed=i)
    data = load_flow_data(str(flat), val_fraction=0.2)
    assert (len(data.train), len(data.val), data.test) == (8, 2, None)


def test_pair_folder_errors(tmp_path):
    bad = tmp_path / "sizes"
    _write_pair(bad, "x")
    _save(bad / "x_img2.png", np.zeros((21, 30, 3), np.uint8))
    with pytest.raises(UserError, match="differ in size"):
        load_pair_folder(bad)

    mismatch = tmp_path / "mismatch"
    _write_pair(mismatch, "x", flow_hw=(20, 31))
    with pytest.raises(UserError, match="20x31 but its frames are 20x30"):
        load_pair_folder(mismatch)

    malformed = tmp_path / "malformed"
    _write_pair(malformed, "x")
    (malformed / "x_flow.flo").write_bytes(b"PIEH\x05\x00\x00\x00")
    with pytest.raises(FloError):
        load_pair_folder(malformed)

    missing = tmp_path / "missing"
    _write_pair(missing, "x")
    (missing / "x_flow.flo").unlink()
    with pytest.raises(UserError, match="no ground truth"):
        load_pair_folder(missing)

    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no frame pairs"):
        load_pair_folder(tmp_path / "empty")
