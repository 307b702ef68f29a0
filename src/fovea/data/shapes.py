"""``shapes``: a synthetic semantic-segmentation dataset, generated from a seed.

Each image holds a few ellipses, rectangles and triangles (class ids
:data:`SHAPE_CLASSES`: 0 background, 1 ellipse, 2 rectangle, 3 triangle), rotated and
sized at random, drawn one after another over a textured background: smooth value noise,
stripes or a linear gradient between random colours. Objects are filled with textures of
their own and random colours, so colour alone does not tell the class; only shape does.
Some objects are placed against the previous one so that they touch or overlap (the
later one is drawn on top), which is what U-Net's border weights
(:func:`fovea.models.unet.unet_weight_map`) are for; the instance-id maps returned next
to the class masks feed it.

Everything is drawn for the whole batch at once with broadcast tensor arithmetic: each
object is an inside test on pixel centres (``(u/a)^2 + (v/b)^2 <= 1`` for an ellipse,
``|u| <= a, |v| <= b`` for a rectangle, three edge half-planes for a triangle, with
``(u, v)`` the pixel's coordinates in the object's rotated frame), so masks are exact and
hard-edged and 1,000 images of 64x64 take a fraction of a second on one core.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from fovea.errors import UserError

__all__ = ["SHAPE_CLASSES", "ShapesData", "make_shapes", "shapes_splits"]

SHAPE_CLASSES = ("background", "ellipse", "rectangle", "triangle")
OBJECT_FIELDS = ("class", "cy", "cx", "a", "b", "angle", "drawn")  # columns of ShapesData.objects
_MIN_CONTRAST = 90.0  # L1 distance (summed over RGB) between an object's colour and the background's mean
_FILL_AMPLITUDE = 0.25  # share of an object's colour range given to its texture


@dataclass
class ShapesData:
    """A batch of ``shapes`` images.

    ``images`` (N, 3, H, W) uint8; ``masks`` (N, H, W) int64 class ids; ``instances``
    (N, H, W) int64, 0 for background and k + 1 for the pixels where object slot k is
    visible; ``objects`` (N, K, 7) float32 with the columns :data:`OBJECT_FIELDS` (centre
    and half-sizes in pixels, angle in radians, ``drawn`` 1 when the slot holds an object).
    """

    images: Tensor
    masks: Tensor
    instances: Tensor
    objects: Tensor

    def __len__(self) -> int:
        return self.images.shape[0]


def _texture(n: int, size: int, gen: torch.Generator, yy: Tensor, xx: Tensor) -> Tensor:
    """(n, 3, size, size) float textures in [0, 1]: noise, stripes or gradient, two random colours."""
    kind = torch.randint(3, (n,), generator=gen)
    c0 = torch.rand(n, 3, 1, 1, generator=gen)
    c1 = torch.rand(n, 3, 1, 1, generator=gen)
    cells = int(torch.randint(3, 7, (1,), generator=gen))
    noise = torch.rand(n, 1, cells, cells, generator=gen)
    theta = torch.rand(n, 1, 1, 1, generator=gen) * math.pi
    period = 4.0 + torch.rand(n, 1, 1, 1, generator=gen) * (size / 4)
    phase = torch.rand(n, 1, 1, 1, generator=gen) * 2 * math.pi
    t = torch.empty(n, 1, size, size)
    # each kind is computed only for the images that use it
    idx = torch.nonzero(kind == 0).flatten()
    if len(idx):
        t[idx] = F.interpolate(noise[idx], size=(size, size), mode="bicubic", align_corners=False).clamp_(0, 1)
    for which in (1, 2):
        idx = torch.nonzero(kind == which).flatten()
        if len(idx):
            along = xx * theta[idx].cos() + yy * theta[idx].sin()  # coordinate along a random direction
            if which == 1:
                t[idx] = 0.5 + 0.5 * torch.sin(along * (2 * math.pi) / period[idx] + phase[idx])
            else:
                t[idx] = (along - along.amin((2, 3), keepdim=True)) / (size * 1.5)
    return torch.lerp(c0, c1, t)


def _inside(cls: Tensor, cy: Tensor, cx: Tensor, a: Tensor, b: Tensor, angle: Tensor,
            yy: Tensor, xx: Tensor) -> Tensor:
    """(n, H, W) bool: pixel centres inside each image's object (ellipse, rectangle or triangle)."""
    v4 = lambda t: t.view(-1, 1, 1)  # noqa: E731
    dy, dx = yy[0] - v4(cy), xx[0] - v4(cx)
    cos, sin = v4(angle.cos()), v4(angle.sin())
    u, v = dx * cos + dy * sin, -dx * sin + dy * cos
    ellipse = (u / v4(a)) ** 2 + (v / v4(b)) ** 2 <= 1.0
    rectangle = (u.abs() <= v4(a)) & (v.abs() <= v4(b))
    # an isosceles triangle in the rotated frame: apex (a, 0), base corners (-a, +-b)
    ua, ub = v4(a), v4(b)
    upper = v * (2 * ua) <= (ua - u) * ub  # below the edge apex -> (-a, +b)
    lower = -v * (2 * ua) <= (ua - u) * ub  # above the edge apex -> (-a, -b)
    triangle = upper & lower & (u >= -ua)
    c = v4(cls)
    return torch.where(c == 1, ellipse, torch.where(c == 2, rectangle, triangle))


def make_shapes(n: int, size: int = 64, seed: int = 0, max_objects: int = 4, min_objects: int = 1,
                touch_prob: float = 0.5) -> ShapesData:
    """``n`` images of ``size`` x ``size`` pixels, the same for the same arguments.

    Each image gets between ``min_objects`` and ``max_objects`` objects of random class
    (:data:`SHAPE_CLASSES`). With probability ``touch_prob`` an object after the first is
    placed against the previous one, its centre at 0.6 to 1.0 times the sum of their
    radii, so the two touch or overlap; later objects are drawn on top.
    """
    for name, value, low in (("n", n, 1), ("size", size, 16), ("max_objects", max_objects, 1),
                             ("min_objects", min_objects, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise UserError(f"Received {name}={value!r}; expected an integer >= {low}.")
    if min_objects > max_objects:
        raise UserError(f"Received min_objects={min_objects} > max_objects={max_objects}; expected min <= max.")
    if not 0.0 <= touch_prob <= 1.0:
        raise UserError(f"Received touch_prob={touch_prob!r}; expected a probability in [0, 1].")
    gen = torch.Generator().manual_seed(int(seed))
    coords = torch.arange(size, dtype=torch.float32) + 0.5  # pixel centres
    yy, xx = coords.view(1, 1, size, 1), coords.view(1, 1, 1, size)

    background = _texture(n, size, gen, yy, xx)
    image = background.clone()
    bg_mean = background.mean((2, 3))  # (n, 3), for the contrast of object colours
    masks = torch.zeros(n, size, size, dtype=torch.int64)
    instances = torch.zeros(n, size, size, dtype=torch.int64)
    count = torch.randint(min_objects, max_objects + 1, (n,), generator=gen)
    objects = torch.zeros(n, max_objects, len(OBJECT_FIELDS))
    prev_cy = prev_cx = prev_r = None
    lo, hi = size * 0.08, size * 0.22  # half-sizes, in pixels
    for k in range(max_objects):
        cls = torch.randint(1, 4, (n,), generator=gen)
        a = lo + torch.rand(n, generator=gen) * (hi - lo)
        b = a * (0.55 + 0.45 * torch.rand(n, generator=gen))
        angle = torch.rand(n, generator=gen) * math.pi
        margin = a * 0.5
        cy = margin + torch.rand(n, generator=gen) * (size - 2 * margin)
        cx = margin + torch.rand(n, generator=gen) * (size - 2 * margin)
        if prev_cy is not None:
            near = torch.rand(n, generator=gen) < touch_prob
            direction = torch.rand(n, generator=gen) * (2 * math.pi)
            dist = (prev_r + a) * (0.6 + 0.4 * torch.rand(n, generator=gen))
            ny = (prev_cy + dist * direction.sin()).clamp(margin, size - margin)
            nx = (prev_cx + dist * direction.cos()).clamp(margin, size - margin)
            cy, cx = torch.where(near, ny, cy), torch.where(near, nx, cx)
        drawn = k < count
        fill = _texture(n, size, gen, yy, xx)
        colour = torch.rand(n, 3, generator=gen)
        # keep objects visible: a colour too close to the background's mean is mirrored
        close = (colour - bg_mean).abs().sum(1) * 255 < _MIN_CONTRAST
        colour = torch.where(close[:, None], 1.0 - colour, colour)
        fill = colour.view(n, 3, 1, 1) + (fill - 0.5) * _FILL_AMPLITUDE
        inside = _inside(cls, cy, cx, a, b, angle, yy, xx) & drawn.view(n, 1, 1)
        image = torch.where(inside[:, None], fill, image)
        masks = torch.where(inside, cls.view(n, 1, 1), masks)
        instances = torch.where(inside, torch.full_like(instances, k + 1), instances)
        objects[:, k] = torch.stack([cls.float(), cy, cx, a, b, angle, drawn.float()], 1)
        # the next object may lean on this one, or on the previous one when this slot is empty
        r = torch.maximum(a, b)
        if prev_cy is None:
            prev_cy, prev_cx, prev_r = cy, cx, r
        else:
            prev_cy, prev_cx, prev_r = (torch.where(drawn, cy, prev_cy), torch.where(drawn, cx, prev_cx),
                                        torch.where(drawn, r, prev_r))
    images = (image * 255).round_().clamp_(0, 255).to(torch.uint8)
    return ShapesData(images=images.contiguous(), masks=masks, instances=instances, objects=objects)


def shapes_splits(train: int = 2000, val: int = 200, test: int = 200, size: int = 64, seed: int = 0,
                  **kwargs) -> dict[str, ShapesData]:
    """Train, val and test sets from fixed, distinct seeds (``seed``, ``seed + 1``, ``seed + 2``).

    The test set depends only on ``seed``, ``test``, ``size`` and ``kwargs``, never on the
    train and val sizes, so runs with different training sets compare on the same images.
    Splits of size 0 are left out.
    """
    sizes = {"train": train, "val": val, "test": test}
    return {name: make_shapes(count, size=size, seed=seed + i, **kwargs)
            for i, (name, count) in enumerate(sizes.items()) if count}
