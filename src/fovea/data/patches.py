"""Images for restoration tasks (super-resolution, denoising): training tiles cut from whole
images, and whole held-out images for validation and test.

Sources (``--data``):

- ``skimage``: photographs bundled with scikit-image (offline), in fixed, disjoint lists:
  training :data:`SKIMAGE_TRAIN`, validation :data:`SKIMAGE_VAL`, test :data:`SKIMAGE_TEST`.
- an image folder: ``train/``, ``val/`` and ``test/`` subfolders when it has a ``train/`` one,
  otherwise every image under it, sorted by path and split by a seeded permutation
  (``ceil(val_fraction * N)`` validation and ``ceil(0.2 * N)`` test images, at least one each).

Images are converted to one of three channel modes: ``y`` (BT.601 luminance on MATLAB's scale,
:func:`fovea.data.color.rgb_to_y`, rounded to 8 bits as MATLAB's ``rgb2ycbcr`` does for uint8
images), ``grey`` (ITU-R 601-2 luma, PIL's ``L``) or ``rgb``. Grey images are repeated to
three channels before a colour conversion.

Training images are cut into tiles of side ``2 * patch`` at a stride of ``patch`` (each pixel
lies in up to four tiles); a task then draws one random ``patch`` x ``patch`` crop from every
tile of a batch (:func:`random_crops`) and a random flip or rotation by a multiple of 90
degrees (:func:`random_dihedral`), so every epoch sees other crops. Held-out images keep their
whole size: they are zero-padded to the largest of their split and served one per item with
``(height, width, index)`` as label (:class:`PaddedImages`), so the task crops each back.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from fovea.errors import UserError

__all__ = ["CHANNEL_MODES", "MIN_EVAL_SIDE", "SKIMAGE_TEST", "SKIMAGE_TRAIN", "SKIMAGE_VAL", "PaddedImages",
           "RestoreImages", "convert_channels", "load_restore_images", "random_crops", "random_dihedral",
           "skimage_image", "tile_grid"]

# scikit-image's bundled photographs (no download needed); `cat` is `chelsea`, so it is left out
SKIMAGE_TRAIN = ("astronaut", "clock", "brick", "grass", "gravel", "moon", "page", "text",
                 "immunohistochemistry", "cell")
# the validation photographs pick the filter baselines' settings: detailed ones like the test
# photographs (the smooth clock or moon would pick a blur twice as wide)
SKIMAGE_VAL = ("coffee", "rocket")
SKIMAGE_TEST = ("camera", "coins", "chelsea")
CHANNEL_MODES = ("y", "grey", "rgb")
MIN_EVAL_SIDE = 32  # held-out images smaller than this are left out (SSIM needs 11 px after the border crop)
TEST_FRACTION = 0.2


def skimage_image(name: str) -> torch.Tensor:
    """A scikit-image sample photograph as a uint8 (C, H, W) tensor (C = 1 or 3)."""
    import skimage.data

    array = np.asarray(getattr(skimage.data, name)())
    if array.dtype != np.uint8:
        raise UserError(f"skimage.data.{name} is {array.dtype}; expected a uint8 photograph")
    array = array[None] if array.ndim == 2 else array[..., :3].transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(array))


def convert_channels(image: torch.Tensor, mode: str) -> torch.Tensor:
    """A uint8 (1 or 3, H, W) image in channel mode ``y``, ``grey`` or ``rgb`` (see the module
    docstring), still uint8."""
    from fovea.data.color import rgb_to_y

    if mode not in CHANNEL_MODES:
        raise UserError(f"Received channel mode {mode!r}; expected one of {', '.join(CHANNEL_MODES)}.")
    if mode == "grey" and image.shape[0] == 1:
        return image
    rgb = image.expand(3, -1, -1) if image.shape[0] == 1 else image
    if mode == "rgb":
        return rgb.contiguous()
    x = rgb.double() / 255
    if mode == "y":
        return (rgb_to_y(x) * 255).round().clamp(0, 255).to(torch.uint8)
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64)[:, None, None]  # PIL's "L"
    return (x * weights).sum(0, keepdim=True).mul(255).round().clamp(0, 255).to(torch.uint8)


class RestoreImages:
    """Whole images by split: ``train``, ``val``, ``test`` lists of (name, uint8 (C, H, W))."""

    def __init__(self, name: str, train, val, test, skipped):
        self.name, self.train, self.val, self.test, self.skipped = name, train, val, test, skipped


def _image_files(folder: Path) -> list[Path]:
    from fovea.data.decode import IMAGE_EXTENSIONS

    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _decode(files: list[Path], on_bad_image: str, skipped: list) -> list[tuple[str, torch.Tensor]]:
    from fovea.data.decode import BadImageError, load_image

    out = []
    for f in files:
        try:
            out.append((str(f), load_image(f)))
        except BadImageError as e:
            if on_bad_image == "fail":
                raise
            skipped.append((str(f), e.reason))
    return out


def _folder_splits(folder: Path, val_fraction: float, seed: int) -> dict[str, list[Path]]:
    if (folder / "train").is_dir():
        splits = {"train": _image_files(folder / "train")}
        for name, aliases in (("val", ("val", "valid", "validation")), ("test", ("test",))):
            sub = next((folder / a for a in aliases if (folder / a).is_dir()), None)
            splits[name] = _image_files(sub) if sub else []
        return splits
    files = _image_files(folder)
    n = len(files)
    n_test = max(1, math.ceil(TEST_FRACTION * n - 1e-9))
    n_val = max(1, math.ceil(val_fraction * n - 1e-9)) if val_fraction > 0 else 0
    if n - n_test - n_val < 1:
        raise UserError(f"image folder {str(folder)!r} holds {n} image(s); expected at least {n_test + n_val + 1} "
                        f"(training, {n_val} validation and {n_test} test), or train/, val/, test/ subfolders")
    order = np.random.default_rng(seed).permutation(n)
    test, val = order[:n_test], order[n_test:n_test + n_val]
    return {"train": [files[i] for i in sorted(order[n_test + n_val:])], "val": [files[i] for i in sorted(val)],
            "test": [files[i] for i in sorted(test)]}


def load_restore_images(spec: str, mode: str, *, root: str | None = None, val_fraction: float = 0.1,
                        seed: int = 0, on_bad_image: str = "skip") -> RestoreImages:
    """The whole images of ``spec`` (``skimage`` or an image folder), converted to ``mode``."""
    skipped: list[tuple[str, str]] = []
    if spec == "skimage":
        splits = {k: [(n, skimage_image(n)) for n in names]
                  for k, names in (("train", SKIMAGE_TRAIN), ("val", SKIMAGE_VAL), ("test", SKIMAGE_TEST))}
        name = "skimage"
    else:
        folder = Path(spec).expanduser()
        if not folder.is_dir() and root:
            folder = Path(root).expanduser() / spec
        if not folder.is_dir():
            raise UserError(f"--data {spec!r}: expected 'skimage' or a folder of images (not found)")
        files = _folder_splits(folder, val_fraction, seed)
        splits = {k: _decode(v, on_bad_image, skipped) for k, v in files.items()}
        name = folder.name or str(folder)
    if not splits["train"]:
        raise UserError(f"--data {spec!r} has no readable training images")
    converted = {}
    for split, items in splits.items():
        keep = []
        for n, img in items:
            if split != "train" and min(img.shape[-2:]) < MIN_EVAL_SIDE:
                skipped.append((n, f"{split} image of {img.shape[-2]}x{img.shape[-1]} is below {MIN_EVAL_SIDE} px"))
                continue
            keep.append((n, convert_channels(img, mode)))
        converted[split] = keep
    if not converted["test"]:
        raise UserError(f"--data {spec!r} has no usable test image (at least {MIN_EVAL_SIDE}x{MIN_EVAL_SIDE})")
    return RestoreImages(name, converted["train"], converted["val"], converted["test"], skipped)


def tile_grid(images: list[torch.Tensor], tile: int, stride: int) -> torch.Tensor:
    """Every ``tile`` x ``tile`` window at a ``stride`` over each (C, H, W) image, as one uint8
    (N, C, tile, tile) tensor; an image smaller than a tile gives none."""
    tiles = []
    for img in images:
        h, w = img.shape[-2:]
        if h < tile or w < tile:
            continue
        t = img.unfold(1, tile, stride).unfold(2, tile, stride)  # (C, nh, nw, tile, tile)
        tiles.append(t.permute(1, 2, 0, 3, 4).reshape(-1, img.shape[0], tile, tile))
    if not tiles:
        return torch.zeros(0, images[0].shape[0] if images else 1, tile, tile, dtype=torch.uint8)
    return torch.cat(tiles).contiguous()


class PaddedImages(torch.utils.data.Dataset):
    """Whole images of different sizes as one batchable dataset: item ``i`` is the image
    zero-padded (bottom, right) to the largest height and width, with the label
    ``tensor([height, width, first_index + i])``."""

    def __init__(self, images: list[torch.Tensor], first_index: int = 0):
        self.images = images
        self.size = (max(im.shape[-2] for im in images), max(im.shape[-1] for im in images))
        self.labels = torch.tensor([[im.shape[-2], im.shape[-1], first_index + i] for i, im in enumerate(images)],
                                   dtype=torch.long)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        im = self.images[i]
        out = torch.zeros(im.shape[0], *self.size, dtype=im.dtype)
        out[:, :im.shape[-2], :im.shape[-1]] = im
        return out, self.labels[i]


def random_crops(x: torch.Tensor, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """One ``size`` x ``size`` crop at a random position from each image of an (N, C, H, W) batch."""
    n, _, h, w = x.shape
    if size > min(h, w):
        raise UserError(f"Received crops of {size} px from {h}x{w} tiles; expected at most the tile side.")
    dev = generator.device if generator is not None else x.device
    top = (torch.rand(n, generator=generator, device=dev) * (h - size + 1)).long().clamp_(max=h - size).to(x.device)
    left = (torch.rand(n, generator=generator, device=dev) * (w - size + 1)).long().clamp_(max=w - size).to(x.device)
    ar = torch.arange(size, device=x.device)
    rows = (top[:, None] + ar)[:, :, None]  # (N, size, 1)
    cols = (left[:, None] + ar)[:, None, :]  # (N, 1, size)
    batch = torch.arange(n, device=x.device)[:, None, None]
    return x.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2).contiguous()


def random_dihedral(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each square image of an (N, C, S, S) batch under one of the 8 symmetries of the square
    (flips and rotations by multiples of 90 degrees), drawn uniformly: DnCNN's augmentation."""
    dev = generator.device if generator is not None else x.device
    draw = (torch.rand(3, x.shape[0], generator=generator, device=dev) < 0.5).to(x.device)[:, :, None, None, None]
    x = torch.where(draw[0], x.transpose(-1, -2), x)
    x = torch.where(draw[1], x.flip(-1), x)
    return torch.where(draw[2], x.flip(-2), x)
