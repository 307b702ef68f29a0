"""The segment task: metrics from per-batch sums against SegmentationMetrics, joint augmentation
of images and targets, full-size scores of every segmenter, the weighted loss, and bad mask folders."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from fovea.apps.segmentation_metrics import SegmentationMetrics
from fovea.cli.main import main
from fovea.data.masks import IGNORE_INDEX
from fovea.models.unet import overlap_tile_predict, unet, unet_same, unet_weight_map
from fovea.tasks.base import get_task
from fovea.tasks.segment import (full_size_scores, parse_augment, parse_shapes_spec, pixel_sums, summarize_sums,
                                 valid_unet_plan)
from fovea.errors import UserError


def _task(augment=None, patch=None, loss="ce", num_classes=4):
    task = get_task("segment")
    task.joint, photometric = parse_augment(augment)
    task.photometric, task.patch, task.weighted, task.num_classes = None, patch, loss == "unet-weighted", num_classes
    return task


def test_miou_from_batch_sums_equals_segmentation_metrics():
    g = torch.Generator().manual_seed(1)
    k = 5
    metrics = SegmentationMetrics(k, boundary=False)
    sums: dict = {}
    n = 0
    for _ in range(3):  # three batches, one class never predicted nor present, ignored pixels
        target = torch.randint(0, k - 1, (4, 9, 11), generator=g)
        target[:, 0, :3] = IGNORE_INDEX
        scores = torch.randn(4, k, 9, 11, generator=g)
        scores[:, k - 1] = -10  # class 4 occurs nowhere: left out of the means, as NaN is by SegmentationMetrics
        scores[:, 1] += 2 * (target == 1)  # some agreement
        metrics.update(scores, target)
        for key, v in pixel_sums(scores, target, k).items():
            sums[key] = sums.get(key, 0) + v
        n += 4
    got = summarize_sums({key: float(v) / n for key, v in sums.items()})
    ref = metrics.compute()
    assert got["miou"] == pytest.approx(ref["miou"], abs=1e-12)
    assert got["dice"] == pytest.approx(ref["mdice"], abs=1e-12)
    assert got["acc"] == pytest.approx(ref["pixel_accuracy"], abs=1e-12)
    assert not any(key.startswith(("inter_", "union_")) for key in got)


def _onehot_batch(g, n=6, h=20, w=24, classes=3):
    """Images whose pixels spell their mask: channel c is 1 where the class is c."""
    masks = torch.randint(0, classes, (n, h // 4, w // 4), generator=g).repeat_interleave(4, 1).repeat_interleave(4, 2)
    images = F.one_hot(masks, classes).permute(0, 3, 1, 2).float()
    return images, masks


def test_joint_augmentation_keeps_images_and_masks_aligned():
    g = torch.Generator().manual_seed(0)
    images, masks = _onehot_batch(g)
    instances = masks * 7 + 1  # any id map moved with them, packed with the classes
    task = _task("hflip,vflip", patch=12)
    seen_flip = set()
    for step in range(6):
        x, y = task.augment_batch(None, images, torch.stack([masks, instances], 1), torch.Generator().manual_seed(step))
        assert x.shape == (6, 3, 12, 12) and y.shape == (6, 2, 12, 12)
        assert torch.equal(x.argmax(1), y[:, 0])  # exact: crops and flips move whole pixels
        assert torch.equal(y[:, 1], y[:, 0] * 7 + 1)
        seen_flip.add(bool((x != images[..., :12, :12]).any()))
    assert True in seen_flip
    # rotation: bilinear image, nearest mask; off the class edges they agree, and outside is ignored
    task = _task("rotate:25")
    x, y = task.augment_batch(None, images, masks, torch.Generator().manual_seed(3))
    inside = y != IGNORE_INDEX
    assert (~inside).any() and (x.sum(1)[~inside] < 0.5).all()  # corners brought in: zero image, ignore mask
    crisp = inside & (x.amax(1) > 0.99)
    assert crisp.float().mean() > 0.5
    assert torch.equal(x.argmax(1)[crisp], y[crisp])


def test_augment_spec_refuses_image_only_geometry():
    assert parse_augment("hflip,rotate:5,jitter:0.2") == (dict(hflip=True, vflip=False, rotate=5.0), "jitter:0.2")
    assert parse_augment(None) == (dict(hflip=False, vflip=False, rotate=0.0), None)
    with pytest.raises(UserError, match="'translate:0.1' does not move the mask"):
        parse_augment("hflip,translate:0.1")


def test_every_family_scores_every_pixel_of_any_size():
    from fovea.models.segmenters import build_segmenter

    for name, kw in [("fcn8s", dict(width=1 / 64, fc_width=4)), ("unet-same", dict(base=2, depth=3)),
                     ("unet", dict(base=2, depth=2))]:
        net = build_segmenter(name, num_classes=4, in_channels=3, **kw).eval()
        for size in [(37, 23), (64, 64), (5, 70)]:
            with torch.no_grad():
                assert full_size_scores(net, torch.rand(1, 3, *size)).shape == (1, 4, *size), (name, size)


def test_valid_unet_training_scores_equal_overlap_tile_inference():
    torch.manual_seed(0)
    net = unet(base=4, depth=3, in_channels=3, num_classes=4).eval()
    x = torch.rand(1, 3, 21, 30)
    (top, bottom, left, right), shift = valid_unet_plan(net, 21, 30)
    assert top == left == net.margin + shift and top % 8 == 0  # the input's origin on the pooling grid
    with torch.no_grad():
        whole = full_size_scores(net, x)
        tiled = overlap_tile_predict(net, x, 100)  # 12x12 output tiles: several of them
    torch.testing.assert_close(whole, tiled, atol=1e-5, rtol=1e-5)
    # same padding: mirror-padded to a multiple of 2^depth and cropped back; an aligned size is untouched
    same = unet_same(base=4, depth=3, in_channels=3, num_classes=4).eval()
    x = torch.rand(1, 3, 16, 24)
    with torch.no_grad():
        torch.testing.assert_close(full_size_scores(same, x), same(x))
        x13 = x[..., :13, :]
        padded = same(torch.cat([x13, x13.flip(-2)[..., 1:4, :]], -2))[..., :13, :]  # rows 11, 10, 9 below
        torch.testing.assert_close(full_size_scores(same, x13), padded)


def test_weighted_loss_is_the_papers_weighted_cross_entropy():
    g = torch.Generator().manual_seed(0)
    inst = torch.zeros(2, 24, 24, dtype=torch.int64)
    inst[:, 4:12, 3:11] = 1
    inst[:, 4:12, 12:20] = 2  # one background column between two objects
    cls = torch.where(inst > 0, inst, 0)
    cls[1, 0, 0] = IGNORE_INDEX
    scores = torch.randn(2, 3, 24, 24, generator=g)
    task = _task(loss="unet-weighted", num_classes=3)
    got = task.loss(scores, torch.stack([cls, inst], 1))
    w = torch.stack([torch.from_numpy(unet_weight_map(m.numpy(), w0=10, sigma=5)) for m in inst])
    per_pixel = F.cross_entropy(scores, cls, ignore_index=IGNORE_INDEX, reduction="none")
    expected = (w * per_pixel).sum() / (cls != IGNORE_INDEX).sum()
    torch.testing.assert_close(got, expected)
    assert w[0, 8, 11] > 5 * w[0, 8, 22]  # the border between the objects weighs most


def test_shapes_spec():
    assert parse_shapes_spec("shapes") == (2000, 200, 200)
    assert parse_shapes_spec("shapes:40:8") == (40, 8, 200)
    assert parse_shapes_spec("voc") is None
    with pytest.raises(UserError, match="shapes:TRAIN"):
        parse_shapes_spec("shapes:0")


def _folder(root, n=4, size=(16, 16), bad_id=None, mask_size=None):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(root / "images" / f"{i}.png")
        ids = rng.integers(0, 3, mask_size if (mask_size and i == 2) else size).astype(np.uint8)
        if bad_id is not None and i == 1:
            ids[3, 5] = bad_id
        Image.fromarray(ids, mode="L").save(root / "masks" / f"{i}.png")
    return root


TINY = ["--model", "unet-same", "--model-kwargs", '{"base": 2, "depth": 2}', "--epochs", "1", "--batch-size", "2"]


@pytest.mark.parametrize("case,needle", [
    ("bad_id", "holds class id 7 at row 3, column 5; expected ids in 0..2"),
    ("size", "is 12x16 (HxW) but image"),
    ("no_classes", "give --num-classes"),
])
def test_bad_mask_folders_are_one_line_and_exit_2(tmp_path, capsys, case, needle):
    root = _folder(tmp_path / "data", bad_id=7 if case == "bad_id" else None,
                   mask_size=(12, 16) if case == "size" else None)
    extra = [] if case == "no_classes" else ["--num-classes", "3"]
    code = main(["train", "segment", "--data", str(root), *extra, *TINY, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "run").exists()


def test_folder_trains_with_weighted_loss_from_components(tmp_path, capsys):
    root = _folder(tmp_path / "data", n=6)
    code = main(["train", "segment", "--data", str(root), "--num-classes", "3", "--loss", "unet-weighted",
                 "--augment", "hflip,rotate:5", *TINY, "--out", str(tmp_path / "run")])
    assert code == 0, capsys.readouterr().err
    import json

    info = json.loads((tmp_path / "run" / "model.json").read_text())
    assert info["classes"] == ["0", "1", "2"] and info["loss"] == "unet-weighted"
