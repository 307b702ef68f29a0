"""Optical-flow data: ``chairs``, a synthetic generator in the spirit of Flying Chairs
(Dosovitskiy et al. 2015), and folders of frame pairs with Middlebury ``.flo`` ground truth.

``chairs``: each sample is a background and a few foreground objects (random ellipses and
star-shaped polygons), every one a *layer* textured with a piece of one of scikit-image's
sample photographs (``skimage.data``, shipped with the package: no network). Each layer has
its own random affine motion between frame 1 and frame 2: as in Flying Chairs, the background
moves (like a camera) and every object moves relative to the background.

A layer is a textured shape in its own coordinates p. It is placed in frame 1 by an affine
map A (pixel x = A p) and in frame 2 by M A, M being the layer's motion (a 2x3 affine of image
coordinates). Frame t is rendered by *backward* sampling: for every pixel x and every layer,
bottom to top, p = A^-1 x (frame 1) or p = A^-1 M^-1 x (frame 2); where p is inside the shape
the layer's texture at p covers what is below. So a surface point keeps its colour exactly,
and the ground truth is exact: the flow of pixel x of frame 1 is M_k x - x for the topmost
layer k at x in frame 1 (z-order decides occlusion). A pixel is *occluded* when its point
M_k x leaves the image or lies under another layer in frame 2; its flow is still the true
motion of the surface (as in Flying Chairs), and :attr:`ChairsData.valid` marks the others.

Conventions: pixel centres at integer coordinates (x = column, y = row), flow (u, v) in pixels,
u to the right, v downwards, so frame2(x + flow(x)) = frame1(x) on non-occluded pixels.
Everything is drawn for a chunk of samples at once with tensor arithmetic; the same arguments
give the same pairs. Images are uint8 (N, 6, H, W) (frame 1 then frame 2, RGB each), flows
float32 (N, 2, H, W).

Pair folders (the layout of the Flying Chairs release)::

    DIR/NAME_img1.png  DIR/NAME_img2.png  DIR/NAME_flow.flo     one pair; any image extension

optionally inside ``train/``, ``val/`` and ``test/`` subfolders. Every pair must be complete
and consistent: two frames of one size, a readable ``.flo`` of that size. Anything else ends
with one line naming the file (:class:`fovea.errors.UserError`).
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from fovea.errors import UserError

__all__ = [
    "CHAIRS_PHOTOS", "ChairsData", "chairs_bundle", "chairs_splits", "load_flow_data", "load_pair_folder",
    "make_chairs", "parse_chairs_spec",
]

# (skimage.data name, colour): grey photos get a random tint per layer
# The sample photos with detail almost everywhere: at most about a third of their 16 x 16 windows
# (at 256 x 256) nearly flat. Flat regions (rocket's sky, moon, colorwheel) hide the motion of
# whatever they cover from any method (the aperture problem), so they are left out.
CHAIRS_PHOTOS = (("astronaut", True), ("chelsea", True), ("coffee", True), ("immunohistochemistry", True),
                 ("brick", False), ("grass", False), ("gravel", False), ("coins", False), ("page", False))
TILE = 256  # side of each photo's square tile in the texture atlas
_MAX_VERTICES = 8
_CHUNK = 128  # samples rendered at once (memory ~ chunk * H * W * layers * vertices)
_SPLIT_INDEX = {"train": 0, "val": 1, "test": 2}


@dataclass
class ChairsData:
    """A batch of ``chairs`` pairs: ``images`` (N, 6, H, W) uint8 (frame 1 RGB, frame 2 RGB),
    ``flows`` (N, 2, H, W) float32 (u, v in pixels), ``valid`` (N, H, W) bool (not occluded)."""

    images: Tensor
    flows: Tensor
    valid: Tensor

    def __len__(self) -> int:
        return self.images.shape[0]


# ---------------------------------------------------------------------------------------------
# Textures


@functools.lru_cache(maxsize=1)
def texture_atlas() -> tuple[Tensor, bool]:
    """The photos as (1, 3, TILE, TILE * P) float32 tiles side by side (centre square crops,
    antialiased), and which tiles are grey."""
    import numpy as np
    import skimage.data

    tiles, grey = [], []
    for name, colour in CHAIRS_PHOTOS:
        img = np.asarray(getattr(skimage.data, name)())
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        t = torch.from_numpy(np.ascontiguousarray(img[..., :3])).permute(2, 0, 1).float().div(255)
        h, w = t.shape[1:]
        s = min(h, w)
        t = t[:, (h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
        t = F.interpolate(t[None], size=(TILE, TILE), mode="bilinear", antialias=True, align_corners=False)
        tiles.append(t[0].clamp(0, 1))
        grey.append(not colour)
    return torch.cat(tiles, 2)[None].contiguous(), torch.tensor(grey)


def _reflect(q: Tensor, size: int) -> Tensor:
    """Fold coordinates into [0, size - 1] by mirroring (a triangle wave, continuous)."""
    period = 2 * (size - 1)
    r = torch.remainder(q, period)
    return (size - 1) - (r - (size - 1)).abs()


# ---------------------------------------------------------------------------------------------
# Scene parameters


def _rotation(theta: Tensor) -> Tensor:
    c, s = theta.cos(), theta.sin()
    return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)


def _affine(linear: Tensor, translation: Tensor) -> Tensor:
    """(..., 3, 3) homogeneous matrices from (..., 2, 2) and (..., 2)."""
    m = torch.zeros(*linear.shape[:-2], 3, 3, dtype=linear.dtype)
    m[..., :2, :2] = linear
    m[..., :2, 2] = translation
    m[..., 2, 2] = 1
    return m


def _uniform(gen: torch.Generator, shape, lo: float, hi: float) -> Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=gen, dtype=torch.float64)


def _scene(n: int, height: int, width: int, gen: torch.Generator, min_objects: int, max_objects: int,
           motion: float) -> dict[str, Tensor]:
    """Random parameters of ``n`` scenes of 1 + max_objects layers (layer 0 the background).

    Returned maps (float64, homogeneous 3x3): ``to_layer1`` (frame-1 pixel -> layer coordinates,
    A^-1), ``to_layer2`` (frame-2 pixel -> layer coordinates, A^-1 M^-1) and ``motion`` (M).
    """
    L, V = 1 + max_objects, _MAX_VERTICES
    side = min(height, width)
    n_tiles = len(CHAIRS_PHOTOS)
    centre = torch.tensor([(width - 1) / 2, (height - 1) / 2], dtype=torch.float64)

    # placement in frame 1 (A): objects anywhere, rotated; the background centred, unrotated
    pos = torch.stack([_uniform(gen, (n, L), 0.1, 0.9) * (width - 1),
                       _uniform(gen, (n, L), 0.1, 0.9) * (height - 1)], -1)
    pos[:, 0] = centre
    angle = _uniform(gen, (n, L), -math.pi, math.pi)
    angle[:, 0] = 0
    place = _affine(_rotation(angle), pos)

    # motion (M), as in Flying Chairs: the background's, and each object's relative to it
    # (M_k = M_0 R_k), all with rotation, anisotropic scale and translation about the layer's centre
    rot = _uniform(gen, (n, L), -1, 1) * math.radians(10)
    scale = torch.exp(_uniform(gen, (n, L, 2), -1, 1) * math.log(1.12))
    shift = _uniform(gen, (n, L, 2), -1, 1) * (motion * side)
    linear = _rotation(rot) @ torch.diag_embed(scale)
    move = _affine(linear, pos + shift - (linear @ pos[..., None])[..., 0])
    move = torch.cat([move[:, :1], move[:, :1] @ move[:, 1:]], 1)

    # shapes, in layer coordinates: an ellipse (semi-axes a, b) or a star-shaped polygon
    count = torch.randint(min_objects, max_objects + 1, (n,), generator=gen)
    present = torch.arange(L)[None] <= count[:, None]
    radius = _uniform(gen, (n, L), 0.12, 0.3) * side
    is_ellipse = torch.rand(n, L, generator=gen) < 0.5
    axes = torch.stack([radius, radius * _uniform(gen, (n, L), 0.45, 1.0)], -1)
    n_vert = torch.randint(3, V + 1, (n, L), generator=gen)
    j = torch.arange(V, dtype=torch.float64)
    vert_angle = (j + _uniform(gen, (n, L, V), -0.35, 0.35)) * (2 * math.pi) / n_vert[..., None]
    vert_radius = radius[..., None] * _uniform(gen, (n, L, V), 0.55, 1.0)
    verts = torch.stack([vert_radius * vert_angle.cos(), vert_radius * vert_angle.sin()], -1)
    # sector boundaries: the used vertices' angles, then the first + 2 pi (for the searches)
    unused = j[None, None] >= n_vert[..., None]
    wrap = vert_angle[..., :1] + 2 * math.pi
    vert_angle = torch.cat([torch.where(unused, wrap, vert_angle), wrap], -1)

    # textures: a tile, a rotation, a scale (atlas pixels per layer unit), an offset, a tint
    tile = torch.randint(n_tiles, (n, L), generator=gen)
    tex_scale = torch.exp(_uniform(gen, (n, L), math.log(0.8), math.log(2.0)))
    tex_linear = _rotation(_uniform(gen, (n, L), -math.pi, math.pi)) * tex_scale[..., None, None]
    tex_offset = _uniform(gen, (n, L, 2), 0, TILE - 1)
    _, grey = texture_atlas()
    tint = _uniform(gen, (n, L, 3), 0.75, 1.15)
    grey_tint = _uniform(gen, (n, L, 3), 0.35, 1.15)
    tint = torch.where(grey[tile][..., None], grey_tint, tint)

    to_layer1 = torch.linalg.inv(place)
    return dict(to_layer1=to_layer1, to_layer2=to_layer1 @ torch.linalg.inv(move), motion=move,
                present=present, is_ellipse=is_ellipse, radius=radius, axes=axes, verts=verts, vert_angle=vert_angle,
                n_vert=n_vert, tile=tile,
                tex_linear=tex_linear, tex_offset=tex_offset, tint=tint)


def _select(scene: dict[str, Tensor], idx: slice) -> dict[str, Tensor]:
    return {k: v[idx] for k, v in scene.items()}


# ---------------------------------------------------------------------------------------------
# Rendering
#
# Points are handled flat: ``b`` (M,) the sample each point belongs to, ``p`` (M, 2) its layer
# coordinates. Every shape lies inside the disc of radius ``radius`` about its layer's origin,
# so only the points in that disc are tested and textured (a fifth of them, on average).


def _apply(m: Tensor, pts: Tensor) -> Tensor:
    """Apply affine maps (..., 3, 3) to points (..., 2) (broadcast), in the points' precision."""
    m = m.to(pts.dtype)
    x, y = pts[..., 0], pts[..., 1]
    return torch.stack([m[..., 0, 0] * x + m[..., 0, 1] * y + m[..., 0, 2],
                        m[..., 1, 0] * x + m[..., 1, 1] * y + m[..., 1, 2]], -1)


def _inside(scene: dict[str, Tensor], layer: int, b: Tensor, p: Tensor) -> Tensor:
    """(M,) bool: layer coordinates ``p`` (M, 2) of samples ``b`` inside the layer's shape.

    The polygons are star-shaped about the origin, their vertices in increasing angle, so a point
    is inside when it lies on the origin's side of the edge of the angular sector it falls in.
    """
    axes = scene["axes"][b, layer].to(p.dtype)
    ellipse = ((p / axes) ** 2).sum(-1) <= 1
    angles = scene["vert_angle"][b, layer].to(p.dtype)  # (M, V + 1), the first again + 2 pi at the end
    verts = scene["verts"][b, layer].to(p.dtype)  # (M, V, 2)
    n_vert = scene["n_vert"][b, layer]
    theta = torch.atan2(p[:, 1], p[:, 0])
    theta = angles[:, 0] + torch.remainder(theta - angles[:, 0], 2 * math.pi)
    j = (torch.searchsorted(angles.contiguous(), theta[:, None].contiguous(), right=True)[:, 0] - 1).clamp_(min=0)
    j = torch.minimum(j, n_vert - 1)
    k = torch.where(j + 1 >= n_vert, torch.zeros_like(j), j + 1)
    rows = torch.arange(len(p))
    e, d = verts[rows, k] - verts[rows, j], p - verts[rows, j]
    polygon = e[:, 0] * d[:, 1] - e[:, 1] * d[:, 0] >= 0  # counter-clockwise: the origin's side
    return torch.where(scene["is_ellipse"][b, layer], ellipse, polygon)


def _texture(scene: dict[str, Tensor], layer: int, b: Tensor, p: Tensor) -> Tensor:
    """(M, 3) colours of layer coordinates ``p`` (M, 2) of samples ``b``: the layer's photo tile,
    sampled bilinearly at a rotated, scaled, offset and mirrored copy of p, times its tint."""
    atlas, _ = texture_atlas()
    tex = torch.cat([scene["tex_linear"][b, layer], scene["tex_offset"][b, layer, :, None]], -1)
    q = _reflect(_apply(tex, p), TILE)
    qx = q[:, 0] + scene["tile"][b, layer] * TILE
    wa, ha = atlas.shape[-1], atlas.shape[-2]
    grid = torch.stack([qx * (2 / (wa - 1)) - 1, q[:, 1] * (2 / (ha - 1)) - 1], -1).float()
    colour = F.grid_sample(atlas, grid[None, None], mode="bilinear", align_corners=True)[0, :, 0]  # (3, M)
    return colour.T * scene["tint"][b, layer].float()


def _layer_points(scene: dict[str, Tensor], to_layer: Tensor, layer: int, points: Tensor):
    """Flat indices into (n, P), sample ids and layer coordinates of the points that may be
    inside ``layer`` (all of them for the background)."""
    p = _apply(to_layer[:, layer, None], points)  # (n, P, 2)
    if layer == 0:
        flat = torch.arange(p.shape[0] * p.shape[1])
    else:
        radius = scene["radius"][:, layer, None].to(p.dtype)
        near = (p.square().sum(-1) <= radius.square()) & scene["present"][:, layer, None]
        flat = near.flatten().nonzero()[:, 0]
    return flat, flat // p.shape[1], p.reshape(-1, 2)[flat]


def render(scene: dict[str, Tensor], frame: int, points: Tensor) -> tuple[Tensor, Tensor]:
    """Colours (n, 3, P) float in [0, 1] and topmost layer ids (n, P) of frame 1 or 2 at any
    points (n, P, 2) (x, y in pixels): the exact scene, not an interpolation of pixels. Computed
    in float32 (a few 1e-5 pixels of rounding in where a point falls)."""
    points = points.float()
    to_layer = scene["to_layer1" if frame == 1 else "to_layer2"]
    n, count = points.shape[:2]
    colour = torch.zeros(n * count, 3)
    top = torch.zeros(n * count, dtype=torch.long)
    for layer in range(to_layer.shape[1]):
        flat, b, p = _layer_points(scene, to_layer, layer, points)
        if layer:
            keep = _inside(scene, layer, b, p)
            flat, b, p = flat[keep], b[keep], p[keep]
        colour[flat] = _texture(scene, layer, b, p)
        top[flat] = layer
    return colour.view(n, count, 3).permute(0, 2, 1).clamp_(0, 1), top.view(n, count)


def top_layer(scene: dict[str, Tensor], frame: int, points: Tensor) -> Tensor:
    """(n, P) the topmost layer at points (n, P, 2) of frame 1 or 2 (:func:`render` without colours)."""
    points = points.float()
    to_layer = scene["to_layer1" if frame == 1 else "to_layer2"]
    top = torch.zeros(points.shape[0] * points.shape[1], dtype=torch.long)
    for layer in range(1, to_layer.shape[1]):
        flat, b, p = _layer_points(scene, to_layer, layer, points)
        top[flat[_inside(scene, layer, b, p)]] = layer
    return top.view(points.shape[:2])


def ground_truth(scene: dict[str, Tensor], points: Tensor, top: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Flow (n, 2, P) of frame-1 points whose topmost layer is ``top``, and whether each is
    visible in frame 2 (inside the image and topmost there too). In float64."""
    m = scene["motion"][torch.arange(len(top))[:, None], top]  # (n, P, 3, 3)
    points = points.double()
    moved = _apply(m, points)
    h, w = size
    inside = (moved[..., 0] >= 0) & (moved[..., 0] <= w - 1) & (moved[..., 1] >= 0) & (moved[..., 1] <= h - 1)
    top2 = top_layer(scene, 2, moved)
    return (moved - points).permute(0, 2, 1), inside & (top2 == top)


def pixel_grid(n: int, height: int, width: int) -> Tensor:
    """(n, H * W, 2) float32 pixel centres (x, y), row by row."""
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                            indexing="ij")
    return torch.stack([xs, ys], -1).reshape(1, -1, 2).expand(n, -1, -1)


def make_scene(n: int, size: tuple[int, int] = (64, 64), seed: int = 0, min_objects: int = 2,
               max_objects: int = 5, motion: float = 0.1) -> dict[str, Tensor]:
    """The random parameters behind :func:`make_chairs` (same arguments, same scenes)."""
    height, width = _check_size(size)
    for name, value, low in (("n", n, 1), ("min_objects", min_objects, 0), ("max_objects", max_objects, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise UserError(f"Received {name}={value!r}; expected an integer >= {low}.")
    if min_objects > max_objects:
        raise UserError(f"Received min_objects={min_objects} > max_objects={max_objects}; expected min <= max.")
    if not 0 <= motion <= 0.5:
        raise UserError(f"Received motion={motion!r}; expected a fraction of the image side in [0, 0.5].")
    gen = torch.Generator().manual_seed(int(seed))
    return _scene(n, height, width, gen, min_objects, max_objects, motion)


def make_chairs(n: int, size: tuple[int, int] = (64, 64), seed: int = 0, min_objects: int = 2,
                max_objects: int = 5, motion: float = 0.1) -> ChairsData:
    """``n`` frame pairs of ``size`` = (H, W) with their exact flow, the same for the same arguments.

    Each pair has a background and between ``min_objects`` and ``max_objects`` objects. The
    background moves by a random affine map M_0 about the image centre: a rotation of up to 10
    degrees, a scale of up to 12 % per axis and a translation of up to ``motion`` times the
    shorter side in x and in y. Each object moves by M_0 R_k, R_k drawn the same way about the
    object's centre: its motion relative to the background.
    """
    scene = make_scene(n, size, seed, min_objects, max_objects, motion)
    height, width = size
    images = torch.empty(n, 6, height, width, dtype=torch.uint8)
    flows = torch.empty(n, 2, height, width)
    valid = torch.empty(n, height, width, dtype=torch.bool)
    for start in range(0, n, _CHUNK):
        part = _select(scene, slice(start, start + _CHUNK))
        k = len(part["tile"])
        grid = pixel_grid(k, height, width)
        img1, top1 = render(part, 1, grid)
        img2, _ = render(part, 2, grid)
        flow, vis = ground_truth(part, grid, top1, (height, width))
        frames = torch.cat([img1, img2], 1).mul_(255).round_().to(torch.uint8)
        images[start:start + k] = frames.view(k, 6, height, width)
        flows[start:start + k] = flow.float().view(k, 2, height, width)
        valid[start:start + k] = vis.view(k, height, width)
    return ChairsData(images, flows, valid)


def chairs_splits(train: int = 4000, val: int = 200, test: int = 200, size: tuple[int, int] = (64, 64),
                  seed: int = 0, **kwargs) -> dict[str, ChairsData]:
    """Train, val and test sets from distinct seeds (3 * seed + 0, 1, 2). The test set depends
    only on ``seed``, ``test``, ``size`` and ``kwargs``, so runs of any training size compare on
    the same pairs. Splits of size 0 are left out."""
    counts = dict(train=train, val=val, test=test)
    return {name: make_chairs(c, size, 3 * seed + _SPLIT_INDEX[name], **kwargs) for name, c in counts.items() if c}


def _check_size(size) -> tuple[int, int]:
    try:
        h, w = (int(s) for s in size)
    except (TypeError, ValueError):
        raise UserError(f"Received size={size!r}; expected (height, width).") from None
    if h < 8 or w < 8:
        raise UserError(f"Received size={size!r}; expected both sides at least 8 pixels.")
    return h, w


# ---------------------------------------------------------------------------------------------
# ``--data chairs:...``

CHAIRS_DEFAULTS = dict(n=4000, val=200, test=200, size=(64, 64), seed=0, objects=(2, 5), motion=0.1)


def parse_chairs_spec(spec: str, image_size: int | None = None) -> dict:
    """``chairs`` or ``chairs:KEY=VALUE,...`` with keys n (training pairs), val, test, size
    (HxW or S), seed, objects (MIN-MAX) and motion (fraction of the side). ``image_size`` (the
    ``--image-size`` flag) sets a square size when the spec gives none."""
    name, _, rest = spec.partition(":")
    if name != "chairs":
        raise UserError(f"Received data {spec!r}; expected chairs[:KEY=VALUE,...].")
    opts = dict(CHAIRS_DEFAULTS)
    if image_size:
        opts["size"] = (image_size, image_size)
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or key not in CHAIRS_DEFAULTS:
            raise UserError(f"--data {spec!r}: {item!r} is not KEY=VALUE with KEY one of "
                            f"{', '.join(CHAIRS_DEFAULTS)}; e.g. chairs:n=2000,size=96x128")
        try:
            if key == "size":
                m = re.fullmatch(r"(\d+)(?:x(\d+))?", value)
                if not m:
                    raise ValueError
                opts[key] = (int(m[1]), int(m[2] or m[1]))
            elif key == "objects":
                m = re.fullmatch(r"(\d+)-(\d+)", value)
                if not m:
                    raise ValueError
                opts[key] = (int(m[1]), int(m[2]))
            elif key == "motion":
                opts[key] = float(value)
            else:
                opts[key] = int(value)
        except ValueError:
            expected = dict(size="HxW or S, e.g. 96x128", objects="MIN-MAX, e.g. 2-5", motion="a number, e.g. 0.1")
            raise UserError(f"--data {spec!r}: {key}={value!r}, expected {expected.get(key, 'an integer')}") from None
    for key in ("n", "val", "test", "seed"):
        low = 1 if key == "n" else 0
        if opts[key] < low:
            raise UserError(f"--data {spec!r}: {key}={opts[key]}, expected an integer >= {low}")
    _check_size(opts["size"])
    return opts


def chairs_bundle(spec: str = "chairs", image_size: int | None = None):
    """The ``chairs`` data as a :class:`~fovea.data.sources.DataBundle`: ``images`` (N, 6, H, W)
    uint8 frame pairs and ``labels`` (N, 2, H, W) float32 flows."""
    from fovea.data.sources import DataBundle, Split

    o = parse_chairs_spec(spec, image_size)
    lo, hi = o["objects"]
    splits = chairs_splits(o["n"], o["val"], o["test"], o["size"], o["seed"], min_objects=lo, max_objects=hi,
                           motion=o["motion"])
    as_split = lambda d: Split(images=d.images, labels=d.flows) if d is not None else None  # noqa: E731
    return DataBundle(name=spec, train=as_split(splits["train"]), val=as_split(splits.get("val")),
                      test=as_split(splits.get("test")), classes=["flow"], in_channels=6, image_size=o["size"])


# ---------------------------------------------------------------------------------------------
# Pair folders with .flo ground truth

_PAIR_RE = re.compile(r"^(?P<name>.+)_img1\.(?P<ext>[A-Za-z0-9]+)$")
_FRAME_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff", ".webp")


def find_pairs(folder: Path) -> list[tuple[Path, Path, Path]]:
    """(frame 1, frame 2, flow) for every ``NAME_img1.EXT`` in ``folder``, sorted by name; a
    frame 1 without its ``NAME_img2.*`` or ``NAME_flow.flo`` is an error."""
    pairs = []
    for f in sorted(folder.iterdir()):
        m = _PAIR_RE.match(f.name)
        if not m or f.suffix.lower() not in _FRAME_EXTENSIONS or not f.is_file():
            continue
        name = m["name"]
        second = [folder / f"{name}_img2{ext}" for ext in (f.suffix, *_FRAME_EXTENSIONS)]
        img2 = next((p for p in second if p.is_file()), None)
        if img2 is None:
            expected = folder / f"{name}_img2{f.suffix}"
            raise UserError(f"frame {str(f)!r} has no second frame; expected {str(expected)!r}")
        flo = folder / f"{name}_flow.flo"
        if not flo.is_file():
            raise UserError(f"frame pair {str(f)!r} has no ground truth; expected {str(flo)!r}")
        pairs.append((f, img2, flo))
    return pairs


def _resize_flow_field(flow: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize a (2, H, W) flow to ``size`` and scale its vectors; unknown pixels (NaN or beyond
    1e9, Middlebury's marker) are left out of the averages, and cells with none stay unknown (NaN)."""
    from fovea.losses.flow import resize_flow

    known = (torch.isfinite(flow) & (flow.abs() < 1e9)).all(0, keepdim=True)
    if tuple(flow.shape[-2:]) == tuple(size):
        return flow
    shrink = size[0] < flow.shape[1] or size[1] < flow.shape[2]
    mode = "area" if shrink else "bilinear"
    m = known.float()[None]
    f = torch.where(known, flow, torch.zeros(()))[None]
    num = resize_flow(f, size, mode)
    cover = F.adaptive_avg_pool2d(m, size) if shrink else F.interpolate(m, size=size, mode="bilinear",
                                                                         align_corners=False)
    out = num / cover.clamp_min(1e-12)
    return torch.where(cover > 0, out, torch.full_like(out, float("nan")))[0]


def load_pair_folder(folder: str | Path, size: tuple[int, int] | None = None) -> tuple[Tensor, Tensor, list[str]]:
    """Frame pairs (N, 6, H, W) uint8, flows (N, 2, H, W) float32 and the frame-1 paths of one
    folder. With ``size`` every pair is resized to it (flow vectors scaled); without, every pair
    must have the size of the first."""
    from fovea.data.decode import load_image, probe_image
    from fovea.data.flo import read_flo

    folder = Path(folder)
    pairs = find_pairs(folder)
    if not pairs:
        raise UserError(f"no frame pairs found in {str(folder)!r}: expected NAME_img1.png, NAME_img2.png and "
                        "NAME_flow.flo files (the Flying Chairs layout)")
    images, flows, paths = [], [], []
    first = None
    for f1, f2, flo in pairs:
        (h1, w1), _ = probe_image(f1)
        (h2, w2), _ = probe_image(f2)
        if (h1, w1) != (h2, w2):
            raise UserError(f"frames {str(f1)!r} ({h1}x{w1}) and {str(f2)!r} ({h2}x{w2}) differ in size; "
                            "expected two frames of the same size")
        flow = read_flo(flo)
        if tuple(flow.shape[1:]) != (h1, w1):
            raise UserError(f"flow file {str(flo)!r} is {flow.shape[1]}x{flow.shape[2]} but its frames are "
                            f"{h1}x{w1}; expected the frames' size")
        first = first or (h1, w1)
        if size is None and (h1, w1) != first:
            raise UserError(f"frame {str(f1)!r} is {h1}x{w1} but {str(pairs[0][0])!r} is {first[0]}x{first[1]}; "
                            "pairs of several sizes need --image-size S to resize them")
        target = tuple(size or (h1, w1))
        pair = torch.cat([load_image(f1, channels=3, size=target), load_image(f2, channels=3, size=target)])
        images.append(pair)
        flows.append(_resize_flow_field(flow, target))
        paths.append(str(f1))
    return torch.stack(images), torch.stack(flows), paths


def load_flow_data(spec: str, root: str | None = None, image_size: int | None = None, val_fraction: float = 0.1,
                   seed: int = 0):
    """``chairs[:...]`` or a pair folder (with optional ``train/``, ``val/``, ``test/`` subfolders;
    without them ``val_fraction`` of the pairs, drawn with ``seed``, are the validation split)."""
    from fovea.data.sources import DataBundle, Split

    if spec == "chairs" or spec.startswith("chairs:"):
        return chairs_bundle(spec, image_size)
    folder = Path(spec)
    if not folder.exists() and root:
        folder = Path(root) / spec
    if not folder.is_dir():
        raise UserError(f"--data {spec!r}: not chairs[:KEY=VALUE,...] and not a folder of frame pairs "
                        "(NAME_img1.png, NAME_img2.png, NAME_flow.flo)")
    size = (image_size, image_size) if image_size else None
    subdirs = {name: folder / name for name in _SPLIT_INDEX if (folder / name).is_dir()}
    if "train" in subdirs:
        loaded = {name: load_pair_folder(path, size) for name, path in subdirs.items()}
    else:
        loaded = {"train": load_pair_folder(folder, size)}
    sizes = {name: tuple(v[0].shape[-2:]) for name, v in loaded.items()}
    if len(set(sizes.values())) > 1:
        raise UserError(f"--data {spec!r}: splits of different sizes {sizes}; pass --image-size S to resize them")
    splits = {name: Split(images=imgs, labels=flows, paths=paths) for name, (imgs, flows, paths) in loaded.items()}
    if "val" not in splits and val_fraction > 0 and len(splits["train"]) > 1:
        n = len(splits["train"])
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        k = min(n - 1, max(1, math.ceil(val_fraction * n)))
        take, keep = perm[:k].sort().values, perm[k:].sort().values
        tr = splits["train"]
        splits["val"] = Split(tr.images[take], tr.labels[take], [tr.paths[i] for i in take])
        splits["train"] = Split(tr.images[keep], tr.labels[keep], [tr.paths[i] for i in keep])
    return DataBundle(name=str(folder), train=splits["train"], val=splits.get("val"), test=splits.get("test"),
                      classes=["flow"], in_channels=6, image_size=next(iter(sizes.values())))
