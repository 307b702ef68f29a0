import numpy as np
import pytest
import torch
from PIL import Image

from fovea.data.masks import joint_augment, load_segmentation, read_mask, voc_palette
from fovea.errors import UserError


def test_voc_palette_known_colours():
    pal = voc_palette(256)
    assert pal.shape == (256, 3) and pal.dtype == np.uint8
    assert tuple(pal[0]) == (0, 0, 0)
    assert tuple(pal[1]) == (128, 0, 0)  # aeroplane
    assert tuple(pal[2]) == (0, 128, 0)  # bicycle
    assert tuple(pal[15]) == (192, 128, 128)  # person
    assert tuple(pal[255]) == (224, 224, 192)  # VOC's "void" border colour
    assert len({tuple(c) for c in pal}) == 256


def _image(rng, h=12, w=10):
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _ids(rng, h=12, w=10, k=3):
    ids = rng.integers(0, k, (h, w)).astype(np.uint8)
    ids[0, 0] = 255
    return ids


def _palette_png(ids, path):
    img = Image.fromarray(ids, mode="P")
    img.putpalette(voc_palette(256).flatten().tolist())
    img.save(path)


def test_voc_layout_palette_masks(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "JPEGImages").mkdir()
    (tmp_path / "SegmentationClass").mkdir()
    (tmp_path / "ImageSets" / "Segmentation").mkdir(parents=True)
    truth = {}
    for stem in ("2007_000001", "2007_000002", "2007_000003", "extra_detection_only"):
        Image.fromarray(_image(rng)).save(tmp_path / "JPEGImages" / f"{stem}.jpg")
        if stem != "extra_detection_only":
            truth[stem] = _ids(rng)
            _palette_png(truth[stem], tmp_path / "SegmentationClass" / f"{stem}.png")
    (tmp_path / "ImageSets" / "Segmentation" / "train.txt").write_text("2007_000001\n2007_000003\n")
    (tmp_path / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000002\n")
    data = load_segmentation(tmp_path, num_classes=3)
    assert sorted(data) == ["train", "val"]
    assert [p.split("/")[-1] for p in data["train"].image_paths] == ["2007_000001.jpg", "2007_000003.jpg"]
    images, masks = data["train"].stacked()
    assert images.shape == (2, 3, 12, 10) and images.dtype == torch.uint8
    assert masks.dtype == torch.int64
    assert np.array_equal(masks[1].numpy(), truth["2007_000003"])  # palette indices are the class ids
    assert masks[1, 0, 0] == 255


def test_plain_layout_l_and_rgb_masks(tmp_path):
    rng = np.random.default_rng(1)
    for split in ("train", "val"):
        (tmp_path / split / "images").mkdir(parents=True)
        (tmp_path / split / "masks").mkdir()
    images, ids = {}, {}
    for split, stems in (("train", ("a", "b")), ("val", ("c",))):
        for stem in stems:
            images[stem], ids[stem] = _image(rng), _ids(rng, k=4)
            Image.fromarray(images[stem]).save(tmp_path / split / "images" / f"{stem}.png")
    Image.fromarray(ids["a"], mode="L").save(tmp_path / "train" / "masks" / "a.png")
    Image.fromarray(ids["c"], mode="L").save(tmp_path / "val" / "masks" / "c.png")
    palette = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]] + [[0, 0, 0]] * 251 + [[255, 255, 255]],
                       dtype=np.uint8)
    Image.fromarray(palette[ids["b"]]).save(tmp_path / "train" / "masks" / "b.png")
    data = load_segmentation(tmp_path, num_classes=4, palette=palette)
    assert sorted(data) == ["train", "val"]
    x, y = data["train"].stacked()
    assert np.array_equal(x[0].permute(1, 2, 0).numpy(), images["a"])
    assert np.array_equal(y[0].numpy(), ids["a"])
    assert np.array_equal(y[1].numpy(), ids["b"])  # RGB mapped back through the palette
    assert np.array_equal(data["val"].masks[0].numpy(), ids["c"])
    resized = load_segmentation(tmp_path, num_classes=4, palette=palette, size=(6, 5))
    assert resized["train"].stacked()[1].shape == (2, 6, 5)
    assert np.array_equal(resized["train"].masks[0].numpy(), ids["a"][::2, ::2])  # nearest at exact halving


def _plain(tmp_path, rng, n=2):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for i in range(n):
        Image.fromarray(_image(rng)).save(tmp_path / "images" / f"img{i}.png")
        Image.fromarray(_ids(rng), mode="L").save(tmp_path / "masks" / f"img{i}.png")


def _bad_class(tmp_path):
    ids = _ids(np.random.default_rng(2))
    ids[3, 4] = 7
    Image.fromarray(ids, mode="L").save(tmp_path / "masks" / "img1.png")
    return "img1.png", "class id 7"


def _size_mismatch(tmp_path):
    Image.fromarray(_ids(np.random.default_rng(2), h=11), mode="L").save(tmp_path / "masks" / "img0.png")
    return "img0.png", "same size"


def _missing_mask(tmp_path):
    (tmp_path / "masks" / "img1.png").unlink()
    return "img1.png", "no mask"


def _corrupt_image(tmp_path):
    (tmp_path / "images" / "img0.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    return "img0.png", "image"


def _colour_not_in_palette(tmp_path):
    rgb = np.zeros((12, 10, 3), np.uint8)
    rgb[5, 5] = (1, 2, 3)
    Image.fromarray(rgb).save(tmp_path / "masks" / "img0.png")
    return "img0.png", "palette"


@pytest.mark.parametrize("corrupt", [_bad_class, _size_mismatch, _missing_mask, _corrupt_image, _colour_not_in_palette])
def test_bad_input_is_one_line_user_error(tmp_path, corrupt):
    _plain(tmp_path, np.random.default_rng(3))
    name, words = corrupt(tmp_path)
    with pytest.raises(UserError) as err:
        load_segmentation(tmp_path, num_classes=3)
    message = str(err.value)
    assert "\n" not in message
    assert name in message and words in message, message


def test_read_mask_keeps_ignore_index(tmp_path):
    ids = np.full((4, 4), 255, np.uint8)
    ids[1:3, 1:3] = 1
    Image.fromarray(ids, mode="L").save(tmp_path / "m.png")
    mask = read_mask(tmp_path / "m.png", num_classes=2)
    assert mask.dtype == torch.int64 and mask.sum().item() == 12 * 255 + 4


def _batch(seed=0, n=16, h=20, w=24):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, h, w), generator=g, dtype=torch.uint8)
    return images, (images[:, 0] > 127).long()


def test_joint_flip_and_crop_keep_alignment():
    images, masks = _batch()
    gen = torch.Generator().manual_seed(1)
    out_x, out_y = joint_augment(images, masks, gen, crop=(12, 15), hflip=True)
    assert out_x.shape == (16, 3, 12, 15) and out_y.shape == (16, 12, 15)
    assert out_x.dtype == torch.uint8 and out_y.dtype == torch.int64
    assert torch.equal(out_y, (out_x[:, 0] > 127).long())
    flipped = 0
    for i in range(16):  # each output is a window of the original, flipped or not
        hits = [(dy, dx, f) for dy in range(9) for dx in range(10) for f in (0, 1)
                if torch.equal(out_x[i], (images[i].flip(-1) if f else images[i])[:, dy:dy + 12, dx:dx + 15])]
        assert hits
        flipped += hits[0][2]
    assert 2 <= flipped <= 14
    again = joint_augment(images, masks, torch.Generator().manual_seed(1), crop=(12, 15), hflip=True)
    assert torch.equal(again[0], out_x) and torch.equal(again[1], out_y)


def test_joint_rotation_nearest_mask_bilinear_image():
    g = torch.Generator().manual_seed(4)
    blocks = torch.randint(0, 5, (8, 4, 4), generator=g)
    masks = blocks.repeat_interleave(8, 1).repeat_interleave(8, 2)  # 32x32 of 8x8 blocks
    images = torch.stack([torch.full_like(masks, 255), masks * 40, masks * 40], 1).to(torch.uint8)
    out_x, out_y = joint_augment(images, masks, torch.Generator().manual_seed(5), hflip=False, rotate=30)
    assert not torch.equal(out_y, masks)  # something rotated
    assert set(out_y.unique().tolist()) <= {0, 1, 2, 3, 4, 255}  # nearest: no blended ids
    # the fill region is the ignore index: fully outside (bilinear 0) is ignored, fully inside (255) is not
    assert (out_y[out_x[:, 0] == 0] == 255).all()
    assert (out_y[out_x[:, 0] == 255] != 255).all()
    assert (out_y == 255).any() and (out_x[:, 0] == 255).float().mean() > 0.5
    valid = out_y != 255
    agree = (out_x[:, 1].long() == out_y * 40) & valid
    assert agree.sum() > 0.75 * valid.sum()  # image and mask agree away from block edges
    # a mask rotated by other angles does not agree with this image: the check can tell
    _, other_y = joint_augment(images, masks, torch.Generator().manual_seed(6), hflip=False, rotate=30)
    other_valid = (other_y != 255) & valid
    other_agree = (out_x[:, 1].long() == other_y * 40) & other_valid
    assert other_agree.sum() < 0.6 * other_valid.sum()
    # the bilinear image channel differs from the nearest mask by at most one block step of ids
    assert ((out_x[:, 1].long() - out_y * 40).abs()[valid] <= 160).all()


def test_joint_augment_bad_arguments():
    images, masks = _batch()
    with pytest.raises(UserError):
        joint_augment(images, masks[:, :10], None)
    with pytest.raises(UserError):
        joint_augment(images, masks, None, crop=40)
