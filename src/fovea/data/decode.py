"""Decoding image files into uint8 tensors, robust to the files found in real folders.

:func:`load_image` turns any file PIL can read into a ``uint8``
``C x H x W`` tensor with a chosen number of channels and size. Every file that
cannot be turned into one (not an image, corrupt, truncated, an unsupported mode,
a decompression bomb) raises :class:`BadImageError` naming the file and the reason,
never a bare PIL exception and never a crash. :func:`probe_images` and
:func:`decode_images` do the same for many files in a thread pool, and
:class:`ImageFileDataset` decodes one file per item for data that does not fit in memory.

Conversions, chosen so that the same file always gives the same pixels:

- Transparency (RGBA, LA, palette images with a transparent colour) is composited
  on black: ``value * alpha / 255``. Dropping alpha instead would expose whatever
  colour an editor left under fully transparent pixels, which differs between files
  that look the same.
- 16-bit images (``I;16``, ``I;16L``, ``I;16B``) are scaled by their bit depth,
  ``round(value * 255 / 65535)`` (the top 8 bits, rounded), not by their own range,
  so that the same brightness means the same value in every image. 32-bit integer
  images (``I``) whose values fit in 0..65535 are treated as 16-bit; others, and
  float images (``F``), have no fixed range and are scaled by their own min..max.
- Colour to grayscale uses ITU-R 601-2 luma (PIL's ``L``: 0.299 R + 0.587 G + 0.114 B);
  grayscale to colour repeats the channel.
- EXIF orientation is applied, so photographs come out upright.
- Resizing uses PIL's bilinear filter, which antialiases when shrinking (its support
  widens with the scale factor); images smaller than the target, down to 1x1, are
  scaled up.
"""

from __future__ import annotations

import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from fovea.errors import UserError

__all__ = [
    "BadImageError",
    "IMAGE_EXTENSIONS",
    "ImageFileDataset",
    "MAX_PIXELS",
    "decode_array",
    "decode_images",
    "load_image",
    "probe_image",
    "probe_images",
]

MAX_PIXELS = 89_478_485  # decompression-bomb limit (PIL's default): about 0.25 GiB of RGBA
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")

_COLOUR_MODES = {"RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "PA"}
_16BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N"}
# warnings.catch_warnings swaps process-wide state; the lock keeps decoder threads from
# restoring each other's filters. Only the header read is under it, not the decoding.
_OPEN_LOCK = threading.Lock()


class BadImageError(UserError):
    """A file that cannot be decoded into an image; the message names the file and why."""

    def __init__(self, path: str | Path, reason: str = "cannot be decoded") -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot use image {self.path}: {reason}")

    def __reduce__(self):  # DataLoader workers pickle exceptions; keep both fields
        return (type(self), (self.path, self.reason))


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    name = type(exc).__name__
    if isinstance(exc, Image.UnidentifiedImageError):
        return "not an image file (PIL cannot identify its format)"
    if "truncated" in text.lower():
        return f"truncated file ({text})"
    return f"corrupt or unsupported ({name}: {text})" if text else f"corrupt or unsupported ({name})"


def _too_large(width: int, height: int) -> str | None:
    if width * height > MAX_PIXELS:
        return (
            f"{width}x{height} = {width * height} pixels is above the decompression-bomb "
            f"limit of {MAX_PIXELS} pixels; refused"
        )
    if width < 1 or height < 1:
        return f"empty image ({width}x{height})"
    return None


def _open(fp, path: str | Path) -> Image.Image:
    """Open (read the header of) an image, refusing decompression bombs."""
    with _OPEN_LOCK, warnings.catch_warnings():
        # PIL warns between MAX_IMAGE_PIXELS and twice that, and raises above; refuse both.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(fp)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise BadImageError(path, f"above the decompression-bomb limit ({exc})") from None
        except Exception as exc:  # PIL plugins raise many types on hostile bytes
            raise BadImageError(path, _describe(exc)) from None
    reason = _too_large(*img.size)
    if reason:
        raise BadImageError(path, reason)
    return img


def _oriented_size(img: Image.Image) -> tuple[int, int]:
    """(width, height) after EXIF orientation, read without decoding the pixels."""
    w, h = img.size
    try:
        orientation = img.getexif().get(0x0112, 1)
    except Exception:  # a broken EXIF block is not worth refusing the image for
        orientation = 1
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def _is_colour(img: Image.Image) -> bool:
    if img.mode in _COLOUR_MODES:
        return True
    if img.mode == "P":
        palette = img.getpalette() or []
        rgb = np.asarray(palette[: len(palette) // 3 * 3]).reshape(-1, 3)
        return bool((rgb != rgb[:, :1]).any())
    return False


def probe_image(path: str | Path) -> tuple[tuple[int, int], bool]:
    """Read only the header: ``((height, width), is_colour)``, or raise BadImageError.

    Cheap (no pixel decoding); used to pick a default size and channel count and to
    refuse non-images and decompression bombs before any decoding.
    """
    try:
        with open(path, "rb") as fp:
            img = _open(fp, path)
            w, h = _oriented_size(img)
            return (h, w), _is_colour(img)
    except OSError as exc:  # unreadable file (permissions, vanished)
        raise BadImageError(path, f"cannot read file ({exc.strerror or exc})") from None


def _to_8bit(img: Image.Image) -> Image.Image:
    """High-bit-depth single-channel images to ``L`` (see the module docstring for the scaling)."""
    a = np.asarray(img)
    if img.mode in _16BIT_MODES or (img.mode == "I" and a.size and a.min() >= 0 and a.max() <= 65535):
        out = np.rint(a.astype(np.float32) * (255.0 / 65535.0))
    else:  # "I" beyond 16 bits, "F": scale by the image's own range
        a = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        out = np.rint((a - lo) * (255.0 / (hi - lo))) if hi > lo else np.zeros_like(a)
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8), mode="L")


def _composite_on_black(img: Image.Image) -> Image.Image:
    """RGBA / LA to RGB / L: premultiply by alpha, i.e. composite over a black background."""
    a = np.asarray(img).astype(np.uint16)
    colour, alpha = a[..., :-1], a[..., -1:]
    out = ((colour * alpha + 127) // 255).astype(np.uint8)
    return Image.fromarray(out[..., 0] if out.shape[-1] == 1 else out, mode="L" if out.shape[-1] == 1 else "RGB")


def _to_rgb_or_l(img: Image.Image) -> Image.Image:
    """Any PIL mode to ``L`` or ``RGB``, with transparency composited on black."""
    mode = img.mode
    if mode in ("L", "RGB"):
        return img
    if mode == "1":
        return img.convert("L")
    if mode in _16BIT_MODES or mode in ("I", "F"):
        return _to_8bit(img)
    if mode == "P" or mode == "PA":
        has_alpha = mode == "PA" or "transparency" in img.info
        img = img.convert("RGBA" if has_alpha else "RGB")
        mode = img.mode
    if mode in ("LA", "La"):
        return _composite_on_black(img.convert("LA"))
    if mode in ("RGBA", "RGBa"):
        return _composite_on_black(img.convert("RGBA"))
    if mode == "RGB":
        return img
    return img.convert("RGB")  # CMYK, YCbCr, LAB, HSV, RGBX


def upright(img: Image.Image, channels: int) -> Image.Image:
    """A loaded image turned by its EXIF orientation (a broken EXIF block is ignored), in RGB or
    L, and in L when ``channels`` is 1."""
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block is not worth refusing the image for
        pass
    img = _to_rgb_or_l(img)
    if channels == 1 and img.mode != "L":
        img = img.convert("L")
    return img


def decode_array(
    path: str | Path,
    channels: int | None = None,
    size: tuple[int, int] | None = None,
) -> np.ndarray:
    """:func:`load_image` as a ``uint8`` numpy array ``(C, H, W)``.

    Layout work stays in numpy: torch would spread each small copy over its intra-op
    threads, which costs more than the copy on a busy machine.
    """
    if channels not in (None, 1, 3):
        raise UserError(f"channels must be 1 or 3 (or None to keep the image's own); received {channels!r}")
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise UserError(f"size must be (height, width) with both at least 1; received {size!r}")
    try:
        with open(path, "rb") as fp:
            img = _open(fp, path)
            try:
                if size is not None and img.format == "JPEG":
                    # decode at a reduced DCT scale when shrinking a lot; draft never goes
                    # below the requested size, and max() covers a 90-degree EXIF rotation
                    side = max(size)
                    img.draft(img.mode, (side, side))
                img.load()
                img = upright(img, channels)
                if size is not None and (img.height, img.width) != tuple(size):
                    img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
                array = np.asarray(img)
            except BadImageError:
                raise
            except Exception as exc:  # PIL plugins raise many types on hostile bytes
                raise BadImageError(path, _describe(exc)) from None
    except OSError as exc:  # unreadable file (permissions, vanished)
        raise BadImageError(path, f"cannot read file ({exc.strerror or exc})") from None
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    if channels == 3 and array.shape[0] == 1:
        array = np.repeat(array, 3, axis=0)
    return np.ascontiguousarray(array, dtype=np.uint8)


def load_image(
    path: str | Path,
    channels: int | None = None,
    size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Decode an image file into a ``uint8`` tensor of shape ``(C, H, W)``.

    ``channels``: 1 or 3; ``None`` keeps the image's own (1 for grayscale, 3 for colour).
    ``size``: ``(H, W)`` to resize to (bilinear, antialiased when shrinking); ``None``
    keeps the image's size. Raises :class:`BadImageError` for anything that is not a
    usable image, including images above :data:`MAX_PIXELS` pixels.
    """
    array = decode_array(path, channels, size)
    if not array.flags.writeable:  # np.asarray of a PIL image can be read-only
        array = array.copy()
    return torch.from_numpy(array)


# ---------------------------------------------------------------------------- many files


def _workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


class ImageFileDataset(torch.utils.data.Dataset):
    """Streams ``(uint8 C x H x W tensor, int label)`` items, decoding one file per item.

    With ``on_bad_image="skip"``, a file that fails to decode here (a corrupt body that its
    header did not reveal) is replaced by the next decodable file, with a warning once per
    file; with ``"fail"`` it raises :class:`BadImageError`.
    """

    def __init__(self, paths, labels, channels: int, size: tuple[int, int], on_bad_image: str = "skip"):
        self.paths = list(paths)
        self.labels = [int(x) for x in labels]
        self.channels, self.size, self.on_bad_image = channels, tuple(size), on_bad_image
        self._warned: set[int] = set()

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        for step in range(len(self.paths)):
            j = (index + step) % len(self.paths)
            try:
                return load_image(self.paths[j], self.channels, self.size), self.labels[j]
            except BadImageError as exc:
                if self.on_bad_image == "fail":
                    raise
                if j not in self._warned:
                    self._warned.add(j)
                    warnings.warn(f"{exc}; serving the next image in its place", stacklevel=2)
        raise BadImageError(self.paths[index], "no file in this dataset can be decoded")


def probe_images(files: list[str], on_bad_image: str, skipped: list) -> dict[str, tuple[tuple[int, int], bool]]:
    """Header of every file: ``{path: ((H, W), is_colour)}``. Bad files are appended to
    ``skipped`` as ``(path, reason)``, or raise at the first in ``"fail"`` mode."""

    def probe(path):
        try:
            return probe_image(path)
        except BadImageError as exc:
            return exc

    good = {}
    with ThreadPoolExecutor(_workers()) as pool:
        for path, result in zip(files, pool.map(probe, files)):
            if isinstance(result, BadImageError):
                if on_bad_image == "fail":
                    raise result
                skipped.append((path, result.reason))
            else:
                good[path] = result
    return good


def decode_images(paths: list[str], channels: int, size: tuple[int, int], on_bad_image: str, skipped: list):
    """Decode files into one preallocated uint8 ``(N, C, H, W)`` tensor, in a thread pool.

    Returns ``(images, indices of the files that decoded)``; the others are appended to
    ``skipped``, or raise at the first (in file order) in ``"fail"`` mode.
    """
    out = torch.empty((len(paths), channels, *size), dtype=torch.uint8)
    out_np = out.numpy()  # written through numpy: no torch intra-op threads per small copy

    def decode(i):
        try:
            out_np[i] = decode_array(paths[i], channels, size)
            return None
        except BadImageError as exc:
            return exc

    ok = []
    with ThreadPoolExecutor(_workers()) as pool:  # PIL releases the GIL while decoding
        for i, error in enumerate(pool.map(decode, range(len(paths)))):
            if error is None:
                ok.append(i)
            elif on_bad_image == "fail":
                raise error
            else:
                skipped.append((paths[i], error.reason))
    if len(ok) < len(paths):
        out = out[torch.as_tensor(ok, dtype=torch.long)]
    return out, ok
