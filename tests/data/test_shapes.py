import math

import numpy as np
import pytest
import torch

from fovea.data.shapes import SHAPE_CLASSES, make_shapes, shapes_splits
from fovea.errors import UserError


@pytest.fixture(scope="module")
def data():
    return make_shapes(200, size=64, seed=0)


def test_deterministic_by_seed():
    a, b, c = make_shapes(16, seed=5), make_shapes(16, seed=5), make_shapes(16, seed=6)
    for field in ("images", "masks", "instances", "objects"):
        assert torch.equal(getattr(a, field), getattr(b, field))
    assert not torch.equal(a.images, c.images)
    assert not torch.equal(a.masks, c.masks)


def test_shapes_dtypes_and_class_ids(data):
    assert data.images.shape == (200, 3, 64, 64) and data.images.dtype == torch.uint8
    assert data.masks.shape == (200, 64, 64) and data.masks.dtype == torch.int64
    assert data.instances.shape == (200, 64, 64)
    assert set(data.masks.unique().tolist()) == set(range(len(SHAPE_CLASSES)))
    # every class appears in a good share of images, not just once
    for c in range(1, 4):
        assert (data.masks == c).flatten(1).any(1).float().mean() > 0.3


def _analytic_inside(cls, cy, cx, a, b, angle, size):
    """Membership of pixel centres, written independently of the generator: ellipse / rectangle by
    their equations, triangle by the signs of cross products with its three vertices."""
    y, x = np.mgrid[0:size, 0:size] + 0.5
    dx, dy = x - cx, y - cy
    u = dx * math.cos(angle) + dy * math.sin(angle)
    v = -dx * math.sin(angle) + dy * math.cos(angle)
    if cls == 1:
        return (u / a) ** 2 + (v / b) ** 2 <= 1 + 1e-6
    if cls == 2:
        return (np.abs(u) <= a + 1e-6) & (np.abs(v) <= b + 1e-6)
    p = [(a, 0.0), (-a, b), (-a, -b)]
    signs = []
    for (x0, y0), (x1, y1) in zip(p, p[1:] + p[:1]):
        signs.append((x1 - x0) * (v - y0) - (y1 - y0) * (u - x0))
    s = np.stack(signs)
    return (s >= -1e-6).all(0) | (s <= 1e-6).all(0)


def test_masks_align_with_drawn_shapes(data):
    checked = {1: 0, 2: 0, 3: 0}
    for i in range(60):
        obj = data.objects[i].numpy()
        drawn = np.flatnonzero(obj[:, 6] > 0)
        top = drawn[-1]  # drawn last, so nothing covers it
        cls, cy, cx, a, b, angle, _ = obj[top]
        inside = _analytic_inside(int(cls), cy, cx, a, b, angle, 64)
        visible = (data.instances[i] == top + 1).numpy()
        mismatch = (inside != visible).sum()
        assert mismatch <= 2, (i, int(cls), mismatch)  # float rounding on exact edges only
        assert (data.masks[i].numpy()[visible] == int(cls)).all()
        checked[int(cls)] += 1
        # every visible instance pixel carries the instance's class; background has instance 0
        for k in drawn:
            region = (data.instances[i] == k + 1).numpy()
            assert (data.masks[i].numpy()[region] == int(obj[k, 0])).all()
        assert ((data.masks[i] == 0) == (data.instances[i] == 0)).all()
    assert min(checked.values()) >= 5


def _touching(instances):
    inst = instances
    a, b = inst[:, 1:, :], inst[:, :-1, :]
    vert = ((a != b) & (a > 0) & (b > 0)).flatten(1).any(1)
    a, b = inst[:, :, 1:], inst[:, :, :-1]
    horiz = ((a != b) & (a > 0) & (b > 0)).flatten(1).any(1)
    return (vert | horiz).float().mean().item()


def test_touching_instances_really_touch():
    often = _touching(make_shapes(150, seed=1, min_objects=2, max_objects=3, touch_prob=1.0).instances)
    never = _touching(make_shapes(150, seed=1, min_objects=2, max_objects=3, touch_prob=0.0).instances)
    assert often > 0.85  # two distinct objects share a 4-connected edge
    assert often > never + 0.3


def test_textures_and_colours_do_not_give_the_class(data):
    img = data.images.float()
    bg = (data.masks == 0)[:, None].expand_as(img)
    stds = torch.stack([img[i][bg[i]].view(3, -1).std(1).mean() for i in range(50)])
    assert (stds > 3).float().mean() > 0.9  # backgrounds are textured, not flat
    # the kinds of texture differ: the spread of background stds is wide
    assert stds.max() > 4 * stds.min()
    # object colours per class span the colour space, so colour alone does not give the class
    means = {c: [] for c in (1, 2, 3)}
    for i in range(200):
        for c in (1, 2, 3):
            m = data.masks[i] == c
            if m.sum() > 20:
                means[c].append(img[i][:, m].mean(1))
    for c, values in means.items():
        values = torch.stack(values)
        assert (values.std(0) > 45).all(), (c, values.std(0))
        assert (values.amax(0) - values.amin(0) > 180).all()


def test_splits_fixed_and_distinct():
    s = shapes_splits(train=30, val=10, test=10, size=32, seed=2)
    assert [len(s[k]) for k in ("train", "val", "test")] == [30, 10, 10]
    t = shapes_splits(train=5, val=3, test=10, size=32, seed=2)
    assert torch.equal(s["test"].images, t["test"].images)
    assert not torch.equal(s["train"].images[:10], s["test"].images)
    assert "val" not in shapes_splits(train=4, val=0, test=2, size=32)


@pytest.mark.parametrize("kwargs", [dict(n=0), dict(n=4, size=8), dict(n=4, min_objects=3, max_objects=2),
                                    dict(n=4, touch_prob=1.5)])
def test_bad_arguments(kwargs):
    with pytest.raises(UserError):
        make_shapes(**kwargs)
