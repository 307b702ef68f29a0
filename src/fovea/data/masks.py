"""Segmentation data on disk: image folders with per-pixel class masks, and joint augmentation.

Two layouts are read by :func:`load_segmentation`:

- VOC-style (Everingham et al., PASCAL VOC): ``JPEGImages/``, ``SegmentationClass/`` and
  ``ImageSets/Segmentation/{train,val,test}.txt`` listing file stems; without the lists
  every mask in ``SegmentationClass/`` forms one ``train`` split;
- plain: ``images/`` and ``masks/`` with matching file stems, optionally inside
  ``train/``, ``val/`` and ``test/`` subfolders.

A mask is a PNG of class ids: mode ``L`` (the grey value is the id), ``P`` (the palette
index is the id, as VOC's files) or ``RGB``, mapped to ids through a palette (by default
:func:`voc_palette`). The id ``ignore_index`` (255, VOC's object borders) is kept as is;
any other id at or above ``num_classes`` is refused. Every bad input raises
:class:`fovea.errors.UserError` with one line naming the file.

:func:`joint_augment` applies the same random crop, flip and rotation to a batch of images
and their masks: bilinear for the images, nearest for the masks, pixels brought in from
outside the image set to the ignore index.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from fovea.data.decode import IMAGE_EXTENSIONS, BadImageError, load_image
from fovea.errors import UserError

__all__ = ["IGNORE_INDEX", "SegmentationSplit", "joint_augment", "load_segmentation", "overlay_mask", "read_mask",
           "voc_palette", "write_mask", "write_png"]

IGNORE_INDEX = 255
_SPLITS = ("train", "val", "test")


def voc_palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map: ``(n, 3)`` uint8, colour i spreading the bits of i over R, G, B
    (bit 3k of i goes to bit 7 - k of R, bit 3k + 1 to G, bit 3k + 2 to B)."""
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 256:
        raise UserError(f"Received n={n!r}; expected an integer in [1, 256].")
    ids = np.arange(n)
    palette = np.zeros((n, 3), dtype=np.uint8)
    for k in range(8):
        for channel in range(3):
            palette[:, channel] |= (((ids >> (3 * k + channel)) & 1) << (7 - k)).astype(np.uint8)
    return palette


# ---------------------------------------------------------------------------- reading


def _rgb_to_ids(rgb: np.ndarray, palette: np.ndarray, path: Path) -> np.ndarray:
    codes = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    pal = np.asarray(palette, dtype=np.int64).reshape(-1, 3)
    pal_codes = (pal[:, 0] << 16) | (pal[:, 1] << 8) | pal[:, 2]
    order = np.argsort(pal_codes, kind="stable")
    sorted_codes = pal_codes[order]
    pos = np.clip(np.searchsorted(sorted_codes, codes), 0, len(sorted_codes) - 1)
    found = sorted_codes[pos] == codes
    if not found.all():
        r, c = np.argwhere(~found)[0]
        raise UserError(f"mask {path}: colour {tuple(int(v) for v in rgb[r, c])} at row {r}, column {c} is not "
                        f"in the palette; expected one of its {len(pal)} colours")
    return order[pos].astype(np.int64)


def read_mask(path: str | Path, num_classes: int, palette: np.ndarray | None = None,
              ignore_index: int = IGNORE_INDEX) -> Tensor:
    """A mask file as an ``(H, W)`` int64 tensor of class ids, checked against ``num_classes``."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            if mode in ("L", "P", "I", "I;16", "I;16L", "I;16B"):
                ids = np.asarray(img).astype(np.int64)
            elif mode == "1":
                ids = np.asarray(img).astype(np.int64)
            elif mode in ("RGB", "RGBA"):
                rgb = np.asarray(img.convert("RGB"))
                ids = None
            else:
                raise UserError(f"mask {path} has PIL mode {mode}; expected L or P (class ids) or RGB (palette colours)")
    except UserError:
        raise
    except FileNotFoundError:
        raise UserError(f"mask {path} does not exist") from None
    except Exception as exc:  # PIL raises many types on hostile bytes
        raise BadImageError(path, f"not a readable mask ({type(exc).__name__})") from None
    if ids is None:
        ids = _rgb_to_ids(rgb, voc_palette(256) if palette is None else palette, path)
    bad = (ids >= num_classes) & (ids != ignore_index)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise UserError(f"mask {path} holds class id {int(ids[r, c])} at row {r}, column {c}; expected ids in "
                        f"0..{num_classes - 1} or the ignore index {ignore_index}")
    return torch.from_numpy(ids)


@dataclass
class SegmentationSplit:
    """Images (``(C, H, W)`` uint8 each) and masks (``(H, W)`` int64 each) of one split, in file order."""

    images: list[Tensor]
    masks: list[Tensor]
    image_paths: list[str]
    mask_paths: list[str]

    def __len__(self) -> int:
        return len(self.images)

    def stacked(self) -> tuple[Tensor, Tensor]:
        """``(N, C, H, W)`` images and ``(N, H, W)`` masks; every image must have the same size."""
        sizes = {tuple(m.shape) for m in self.masks}
        if len(sizes) > 1:
            raise UserError(f"Cannot stack images of {len(sizes)} different sizes ({sorted(sizes)[:3]}...); "
                            f"expected one size, or pass size= to load_segmentation to resize them.")
        return torch.stack(self.images), torch.stack(self.masks)


def _by_stem(folder: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS:
            files.setdefault(p.stem, p)
    return files


def _read_pair(image_path: Path, mask_path: Path, num_classes: int, palette, ignore_index: int,
               channels: int, size: tuple[int, int] | None) -> tuple[Tensor, Tensor]:
    image = load_image(image_path, channels=channels)
    mask = read_mask(mask_path, num_classes, palette, ignore_index)
    if tuple(image.shape[-2:]) != tuple(mask.shape):
        raise UserError(f"mask {mask_path} is {mask.shape[0]}x{mask.shape[1]} (HxW) but image {image_path} is "
                        f"{image.shape[1]}x{image.shape[2]}; expected the same size")
    if size is not None and tuple(mask.shape) != tuple(size):
        image = F.interpolate(image[None].float(), size=size, mode="bilinear", align_corners=False,
                              antialias=True)[0].round_().clamp_(0, 255).to(torch.uint8)
        mask = F.interpolate(mask[None, None].float(), size=size, mode="nearest")[0, 0].long()
    return image, mask


def _read_split(pairs: list[tuple[Path, Path]], **kwargs) -> SegmentationSplit:
    images, masks = zip(*(_read_pair(i, m, **kwargs) for i, m in pairs)) if pairs else ((), ())
    return SegmentationSplit(list(images), list(masks), [str(i) for i, _ in pairs], [str(m) for _, m in pairs])


def _voc_pairs(root: Path) -> dict[str, list[tuple[Path, Path]]]:
    image_dir, mask_dir = root / "JPEGImages", root / "SegmentationClass"
    if not mask_dir.is_dir():
        raise UserError(f"{root} has JPEGImages/ but no SegmentationClass/; expected a VOC-style layout")
    images, masks = _by_stem(image_dir), _by_stem(mask_dir)
    lists = root / "ImageSets" / "Segmentation"
    stems_by_split = {s: (lists / f"{s}.txt").read_text().split() for s in _SPLITS if (lists / f"{s}.txt").is_file()}
    if not stems_by_split:
        stems_by_split = {"train": sorted(masks)}
    pairs: dict[str, list[tuple[Path, Path]]] = {}
    for split, stems in stems_by_split.items():
        pairs[split] = []
        for stem in stems:
            if stem not in images:
                raise UserError(f"{lists / (split + '.txt')} lists {stem!r} but {image_dir} has no image "
                                f"{stem}.jpg; expected an image for every listed stem")
            if stem not in masks:
                raise UserError(f"no mask for image {images[stem]}: expected {mask_dir / (stem + '.png')}")
            pairs[split].append((images[stem], masks[stem]))
    return pairs


def _plain_pairs(folder: Path) -> list[tuple[Path, Path]]:
    images, masks = _by_stem(folder / "images"), _by_stem(folder / "masks")
    pairs = []
    for stem, image in images.items():
        if stem not in masks:
            raise UserError(f"no mask for image {image}: expected {folder / 'masks' / (stem + '.png')}")
        pairs.append((image, masks[stem]))
    for stem, mask in masks.items():
        if stem not in images:
            raise UserError(f"no image for mask {mask}: expected an image {stem}.* in {folder / 'images'}")
    return pairs


def load_segmentation(root: str | Path, num_classes: int, palette: np.ndarray | None = None,
                      ignore_index: int = IGNORE_INDEX, channels: int = 3,
                      size: tuple[int, int] | None = None) -> dict[str, SegmentationSplit]:
    """Read a VOC-style or plain ``images/`` + ``masks/`` folder (see the module docstring).

    Returns ``{split: SegmentationSplit}``; a plain folder without split subfolders gives one
    ``train`` split. ``size`` (H, W) resizes images bilinearly and masks by nearest neighbour.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"segmentation folder {root} does not exist; expected a folder with JPEGImages/ + "
                        f"SegmentationClass/ or images/ + masks/")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise UserError(f"Received num_classes={num_classes!r}; expected an integer >= 1.")
    if (root / "JPEGImages").is_dir():
        pairs = _voc_pairs(root)
    elif (root / "images").is_dir() and (root / "masks").is_dir():
        pairs = {"train": _plain_pairs(root)}
    elif any((root / s / "images").is_dir() for s in _SPLITS):
        pairs = {s: _plain_pairs(root / s) for s in _SPLITS if (root / s / "images").is_dir()}
    else:
        raise UserError(f"{root} holds neither JPEGImages/ + SegmentationClass/ nor images/ + masks/ "
                        f"(optionally inside train/, val/, test/)")
    kwargs = dict(num_classes=num_classes, palette=palette, ignore_index=ignore_index, channels=channels,
                  size=None if size is None else tuple(size))
    return {split: _read_split(p, **kwargs) for split, p in pairs.items()}


# ---------------------------------------------------------------------------- writing and showing


def write_mask(path: str | Path, mask: Tensor | np.ndarray) -> Path:
    """Save an ``(H, W)`` mask of class ids (0..255) as a palette PNG in VOC's colours: the pixel
    values are the ids (:func:`read_mask` reads them back), viewers show the colours. Written
    atomically: an existing file is replaced only by a complete one."""
    ids = mask.detach().cpu().numpy() if isinstance(mask, Tensor) else np.asarray(mask)
    if ids.ndim != 2 or (ids.size and (ids.min() < 0 or ids.max() > 255)):
        lo, hi = (ids.min(), ids.max()) if ids.size else (0, 0)
        raise UserError(f"Received a mask of shape {ids.shape} with ids in [{lo}, {hi}]; "
                        f"expected (H, W) ids in 0..255.")
    img = Image.fromarray(ids.astype(np.uint8), mode="P")
    img.putpalette(voc_palette(256).flatten().tolist())
    return write_png(path, img)


def write_png(path: str | Path, image: Image.Image) -> Path:
    """Save a PIL image as PNG atomically (temp file, then rename), with the permissions a plain
    ``open(path, "w")`` would give (the temp file is private until renamed)."""
    import os

    from fovea.train.checkpoint import atomic_write

    path = atomic_write(path, lambda f: image.save(f, format="PNG"))
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)
    return path


def overlay_mask(image: Tensor | np.ndarray, mask: Tensor | np.ndarray, alpha: float = 0.5,
                 palette: np.ndarray | None = None, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """An ``(H, W, 3)`` uint8 picture of ``mask`` over ``image`` (``(C, H, W)`` uint8, C = 1 or 3):
    every pixel of class k >= 1 blended as ``(1 - alpha) * image + alpha * palette[k]``, and the
    class boundaries (a pixel with a 4-neighbour of another class) drawn in the class colour.
    Background (0) and ``ignore_index`` pixels show the image alone."""
    img = image.detach().cpu().numpy() if isinstance(image, Tensor) else np.asarray(image)
    ids = mask.detach().cpu().numpy() if isinstance(mask, Tensor) else np.asarray(mask)
    if img.ndim != 3 or img.shape[0] not in (1, 3) or ids.shape != img.shape[1:]:
        raise UserError(f"Received an image of shape {img.shape} and a mask of shape {ids.shape}; expected "
                        f"(C, H, W) with C = 1 or 3 and an (H, W) mask of the same size.")
    rgb = np.repeat(img, 3, 0) if img.shape[0] == 1 else img
    rgb = rgb.transpose(1, 2, 0).astype(np.float32)
    pal = (voc_palette(256) if palette is None else np.asarray(palette)).astype(np.float32)
    ids = ids.astype(np.int64)
    shown = (ids > 0) & (ids != ignore_index) & (ids < len(pal))
    colour = pal[np.where(shown, ids, 0)]
    out = np.where(shown[..., None], (1 - alpha) * rgb + alpha * colour, rgb)
    edge = np.zeros_like(shown)
    edge[1:] |= ids[1:] != ids[:-1]
    edge[:-1] |= ids[:-1] != ids[1:]
    edge[:, 1:] |= ids[:, 1:] != ids[:, :-1]
    edge[:, :-1] |= ids[:, :-1] != ids[:, 1:]
    out = np.where((edge & shown)[..., None], colour, out)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------- joint augmentation


def _crop_offsets(n: int, high: int, gen: torch.Generator | None) -> Tensor:
    return torch.randint(high, (n,), generator=gen, device="cpu" if gen is None else gen.device)


def joint_augment(images: Tensor, masks: Tensor, generator: torch.Generator | None = None,
                  crop: int | tuple[int, int] | None = None, hflip: bool = True, rotate: float = 0.0,
                  ignore_index: int = IGNORE_INDEX) -> tuple[Tensor, Tensor]:
    """The same random geometry for a batch of images ``(N, C, H, W)`` and masks ``(N, H, W)``.

    In order: a random ``crop`` (side or (H, W), at most the image size) at the same offset
    in image and mask; a horizontal flip of each sample with probability 1/2 when ``hflip``;
    a rotation by an angle uniform in ``[-rotate, rotate]`` degrees about the centre,
    bilinear for the image (zero fill) and nearest for the mask (``ignore_index`` fill).
    Images keep their dtype (uint8 is rounded back); all draws come from ``generator``.
    """
    if images.dim() != 4 or masks.dim() != 3 or images.shape[0] != masks.shape[0] \
            or images.shape[-2:] != masks.shape[-2:]:
        raise UserError(f"Received images {tuple(images.shape)} and masks {tuple(masks.shape)}; expected "
                        f"(N, C, H, W) and (N, H, W) of the same N, H, W.")
    n, c, h, w = images.shape
    device = images.device
    if crop is not None:
        ch, cw = (crop, crop) if isinstance(crop, int) else tuple(crop)
        if not (1 <= ch <= h and 1 <= cw <= w):
            raise UserError(f"Received crop={crop!r} for images of {h}x{w}; expected a size within the image.")
        dy = _crop_offsets(n, h - ch + 1, generator).to(device)
        dx = _crop_offsets(n, w - cw + 1, generator).to(device)
        rows = (dy[:, None] + torch.arange(ch, device=device))[:, :, None]  # (n, ch, 1)
        cols = (dx[:, None] + torch.arange(cw, device=device))[:, None, :]  # (n, 1, cw)
        index = (rows * w + cols).view(n, 1, ch * cw)
        images = images.reshape(n, c, h * w).gather(2, index.expand(n, c, ch * cw)).view(n, c, ch, cw)
        masks = masks.reshape(n, h * w).gather(1, index[:, 0]).view(n, ch, cw)
        h, w = ch, cw
    if hflip:
        u = torch.rand(n, generator=generator, device="cpu" if generator is None else generator.device)
        flip = (u < 0.5).to(device)
        images = torch.where(flip.view(n, 1, 1, 1), images.flip(-1), images)
        masks = torch.where(flip.view(n, 1, 1), masks.flip(-1), masks)
    if rotate:
        u = torch.rand(n, generator=generator, device="cpu" if generator is None else generator.device)
        angle = torch.deg2rad((u * 2 - 1) * float(rotate)).to(device)
        cos, sin = angle.cos(), angle.sin()
        # inverse map output -> input in pixel units about the centre, then to affine_grid's [-1, 1]
        theta = torch.zeros(n, 2, 3, device=device)
        theta[:, 0, 0], theta[:, 0, 1] = cos, -sin * (h / w)
        theta[:, 1, 0], theta[:, 1, 1] = sin * (w / h), cos
        grid = F.affine_grid(theta, [n, 1, h, w], align_corners=False)
        warped = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if images.dtype == torch.uint8:
            warped = warped.round_().clamp_(0, 255)
        images = warped.to(images.dtype)
        shifted = (masks + 1).float()[:, None]  # 0 after sampling marks pixels from outside the image
        sampled = F.grid_sample(shifted, grid, mode="nearest", padding_mode="zeros", align_corners=False)[:, 0]
        sampled = sampled.round().long()
        masks = torch.where(sampled == 0, torch.full_like(sampled, ignore_index), sampled - 1).to(masks.dtype)
    return images.contiguous(), masks.contiguous()
