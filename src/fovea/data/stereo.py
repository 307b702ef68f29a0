"""Rectified stereo pairs for unsupervised depth: the motorcycle pair and folders of pairs.

``--data motorcycle``: scikit-image's ``stereo_motorcycle()`` (Middlebury 2014, 500 x 741), the
left and right views and the left view's ground-truth disparity in pixels, with ``inf`` where it
is unknown (7.3% of the pixels). Offline: the files ship with scikit-image.

``--data FOLDER`` holds pairs in one of two layouts:

- ``FOLDER/left/NAME.png`` and ``FOLDER/right/NAME.png`` (any image format, the same stem in
  both folders), and optionally ``FOLDER/disp/NAME.{npy,pfm,png}``: the left view's disparity;
- Middlebury's: ``FOLDER/im0.png``, ``FOLDER/im1.png`` and optionally ``disp0.pfm`` (or
  ``disp0GT.pfm``), in FOLDER itself or in each of its subfolders (one scene each).

Disparity files: ``.npy`` (float, pixels), ``.pfm`` (Middlebury's portable float map), or a
16-bit ``.png`` in KITTI's convention (value / 256 pixels). Non-finite values, and values <= 0
in ``.npy`` and ``.png`` files, mean unknown and become ``inf``; ``.pfm`` follows Middlebury
(``inf`` unknown, 0 a valid disparity).

All pairs of a folder must share one size (they are stacked into one tensor for random crops),
and the two views of a pair must have the same size: other input is refused in one line. The
ground truth is only ever used for evaluation.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fovea.errors import UserError

__all__ = ["StereoPairs", "downscale_pairs", "load_pair", "load_stereo", "read_disparity", "read_pfm",
           "stereo_bundle", "stereo_folder", "stereo_motorcycle"]

DISP_EXTENSIONS = (".npy", ".pfm", ".png")


@dataclass
class StereoPairs:
    """Pairs at their full resolution: ``left``/``right`` uint8 (N, 3, H, W), ``disparity``
    float32 (N, H, W) in pixels with ``inf`` where unknown (all ``inf`` without ground truth)."""

    name: str
    names: list[str]
    left: torch.Tensor
    right: torch.Tensor
    disparity: torch.Tensor

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.left.shape[-2:])

    @property
    def has_truth(self) -> bool:
        return bool(torch.isfinite(self.disparity).any())


def stereo_motorcycle() -> StereoPairs:
    """scikit-image's motorcycle pair with its ground truth (``inf`` where unknown)."""
    from skimage.data import stereo_motorcycle as pair

    left, right, disp = pair()
    as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None]  # noqa: E731
    return StereoPairs("motorcycle", ["motorcycle"], as_t(left), as_t(right),
                       torch.from_numpy(np.asarray(disp, np.float32))[None])


# ---------------------------------------------------------------------------- files


def read_pfm(path: str | Path) -> np.ndarray:
    """A portable float map (Middlebury's disparity format) as a float32 (H, W) array, top row
    first (PFM stores the bottom row first). Colour PFMs give their first channel."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            header = f.readline().strip()
            if header not in (b"PF", b"Pf"):
                raise ValueError(f"header {header[:8]!r}, expected PF or Pf")
            dims = f.readline()
            while dims.startswith(b"#"):
                dims = f.readline()
            m = re.match(rb"^\s*(\d+)\s+(\d+)\s*$", dims)
            if not m:
                raise ValueError(f"bad size line {dims[:40]!r}")
            w, h = int(m.group(1)), int(m.group(2))
            scale = float(f.readline().strip())
            channels = 3 if header == b"PF" else 1
            data = np.frombuffer(f.read(), dtype="<f4" if scale < 0 else ">f4")
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read disparity {str(p)!r}: {e}") from None
    if data.size < w * h * channels:
        raise UserError(f"cannot read disparity {str(p)!r}: {data.size} values for a {w}x{h}x{channels} map")
    arr = data[: w * h * channels].reshape(h, w, channels)[::-1, :, 0]
    return np.ascontiguousarray(arr, dtype=np.float32)


def read_disparity(path: str | Path) -> np.ndarray:
    """A disparity map in pixels (float32 (H, W), ``inf`` where unknown) from ``.npy``, ``.pfm``
    or a KITTI 16-bit ``.png`` (value / 256, 0 unknown)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"disparity file {str(p)!r} not found")
    ext = p.suffix.lower()
    if ext == ".pfm":
        d = read_pfm(p)
        return np.where(np.isfinite(d), d, np.inf).astype(np.float32)
    if ext == ".npy":
        try:
            d = np.load(p, allow_pickle=False)
        except Exception as e:  # noqa: BLE001 - numpy raises several types on bad files
            raise UserError(f"cannot read disparity {str(p)!r}: {str(e).splitlines()[0]}") from None
        d = np.squeeze(np.asarray(d, dtype=np.float32))
    elif ext == ".png":
        from PIL import Image

        try:
            with Image.open(p) as im:
                d = np.asarray(im, dtype=np.float32) / 256.0
        except Exception as e:  # noqa: BLE001
            raise UserError(f"cannot read disparity {str(p)!r}: {str(e).splitlines()[0]}") from None
    else:
        raise UserError(f"disparity file {str(p)!r}: expected .npy, .pfm or a 16-bit .png")
    if d.ndim != 2:
        raise UserError(f"disparity {str(p)!r} has shape {d.shape}, expected (H, W)")
    return np.where(np.isfinite(d) & (d > 0), d, np.inf).astype(np.float32)


def load_pair(left: str | Path, right: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The two views of a rectified pair as uint8 (3, H, W) tensors; a missing or undecodable
    file, or views of different sizes, is a :class:`UserError`."""
    from fovea.data.decode import load_image

    for p in (left, right):
        if not Path(p).is_file():
            raise UserError(f"image {str(p)!r} not found")
    a, b = load_image(left, channels=3), load_image(right, channels=3)
    if a.shape != b.shape:
        raise UserError(f"the views differ in size: {str(left)!r} is {a.shape[1]}x{a.shape[2]}, {str(right)!r} is "
                        f"{b.shape[1]}x{b.shape[2]} (H x W); a rectified pair has one size")
    return a, b


def _find(folder: Path, stem: str, extensions) -> Path | None:
    for ext in extensions:
        for cand in (folder / f"{stem}{ext}", folder / f"{stem}{ext.upper()}"):
            if cand.is_file():
                return cand
    return None


def _pair_files(root: Path) -> list[tuple[str, Path, Path, Path | None]]:
    from fovea.data.decode import IMAGE_EXTENSIONS

    if (root / "left").is_dir() or (root / "right").is_dir():
        if not ((root / "left").is_dir() and (root / "right").is_dir()):
            raise UserError(f"stereo folder {str(root)!r} needs both left/ and right/ subfolders")
        lefts = sorted(p for p in (root / "left").iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not lefts:
            raise UserError(f"stereo folder {str(root / 'left')!r} holds no images")
        out = []
        for lp in lefts:
            rp = _find(root / "right", lp.stem, IMAGE_EXTENSIONS)
            if rp is None:
                raise UserError(f"no right view for {str(lp)!r}: expected {str(root / 'right' / lp.name)!r}")
            dp = _find(root / "disp", lp.stem, DISP_EXTENSIONS) if (root / "disp").is_dir() else None
            out.append((lp.stem, lp, rp, dp))
        return out
    scenes = [root] if (root / "im0.png").is_file() else sorted(p for p in root.iterdir() if (p / "im0.png").is_file())
    if not scenes:
        raise UserError(f"stereo folder {str(root)!r} has neither left/ and right/ subfolders nor Middlebury "
                        "scenes (im0.png, im1.png); see docs/depth.md")
    out = []
    for s in scenes:
        if not (s / "im1.png").is_file():
            raise UserError(f"Middlebury scene {str(s)!r} has im0.png but no im1.png")
        dp = next((s / n for n in ("disp0.pfm", "disp0GT.pfm") if (s / n).is_file()), None)
        out.append((s.name, s / "im0.png", s / "im1.png", dp))
    return out


def stereo_folder(root: str | Path) -> StereoPairs:
    """Every pair of a stereo folder (layouts in the module docstring), at one shared size."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"stereo data {str(root)!r} not found: expected 'motorcycle' or a folder (docs/depth.md)")
    lefts, rights, disps, names = [], [], [], []
    size = None
    for name, lp, rp, dp in _pair_files(root):
        a, b = load_pair(lp, rp)
        if size is None:
            size = tuple(a.shape[1:])
        elif tuple(a.shape[1:]) != size:
            raise UserError(f"pair {str(lp)!r} is {a.shape[1]}x{a.shape[2]}, the first pair {size[0]}x{size[1]}; "
                            "the pairs of a folder must share one size")
        if dp is not None:
            d = read_disparity(dp)
            if d.shape != size:
                raise UserError(f"disparity {str(dp)!r} is {d.shape[0]}x{d.shape[1]}, its images {size[0]}x{size[1]}")
        else:
            d = np.full(size, np.inf, np.float32)
        lefts.append(a)
        rights.append(b)
        disps.append(torch.from_numpy(d))
        names.append(name)
    return StereoPairs(str(root), names, torch.stack(lefts), torch.stack(rights), torch.stack(disps))


def load_stereo(data: str) -> StereoPairs:
    """``motorcycle`` or a folder of pairs."""
    if data == "motorcycle":
        return stereo_motorcycle()
    return stereo_folder(data)


# ---------------------------------------------------------------------------- scale and batches


def scaled_size(size: tuple[int, int], scale: int) -> tuple[int, int]:
    """The size a pair is trained at: ``round(side / scale)``."""
    return max(1, round(size[0] / scale)), max(1, round(size[1] / scale))


def downscale_pairs(images: torch.Tensor, scale: int) -> torch.Tensor:
    """uint8 (N, C, H, W) shrunk by ``scale`` (bilinear, antialiased), as the task trains on it."""
    from fovea.train.data import resize_uint8

    return resize_uint8(images, scaled_size(tuple(images.shape[-2:]), scale))


def stereo_bundle(pairs: StereoPairs, scale: int = 1, crops_per_epoch: int = 256, min_samples: int = 1,
                  max_bytes: int = 1 << 30):
    """A :class:`~fovea.data.sources.DataBundle` for the depth task. ``train``: the pairs shrunk
    by ``scale``, left and right stacked (N, 6, h, w), each repeated so that an epoch holds about
    ``crops_per_epoch`` samples (the task cuts a random crop from each); its labels are zeros,
    the ground truth is never used for training. ``val``: the same pairs once each, labelled
    with their full-resolution ground truth (N, H, W), on which the task measures the error.

    One pair is repeated as a view (no copy); several are copied, at most ``max_bytes`` of them
    (fewer repeats, a shorter epoch, if need be), and at least ``min_samples`` (one batch)."""
    from fovea.data.sources import DataBundle, Split

    if not isinstance(scale, int) or isinstance(scale, bool) or scale < 1:
        raise UserError(f"--scale {scale!r}: expected a whole downscaling factor >= 1 for depth")
    stacked = downscale_pairs(torch.cat([pairs.left, pairs.right], 1), scale)
    n = len(stacked)
    repeats = max(1, math.ceil(crops_per_epoch / n))
    if n == 1:
        train_images = stacked.expand(max(repeats, min_samples), -1, -1, -1)
    else:
        fit = max(1, max_bytes // max(stacked.numel(), 1))
        repeats = max(min(repeats, fit), math.ceil(min_samples / n))
        train_images = stacked.repeat(repeats, 1, 1, 1) if repeats > 1 else stacked
    train = Split(train_images, torch.zeros(len(train_images), dtype=torch.long))
    val = Split(stacked, pairs.disparity.float(), paths=list(pairs.names))
    return DataBundle(name=pairs.name, train=train, val=val, test=None, classes=["disparity"], in_channels=3,
                      image_size=tuple(stacked.shape[-2:]))
