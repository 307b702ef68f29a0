"""Uploaded images in, pictures out: decoding with limits, and PNG data URLs.

An upload is decoded from memory, never written to disk. Only the raster formats fovea reads
elsewhere are accepted (PNG, JPEG, GIF, BMP, TIFF, WebP); anything PIL cannot identify, or
identifies as another format, is refused before its pixels are decoded, and so is an image whose
header announces more than the pixel limit (a decompression bomb stays a header)."""

from __future__ import annotations

import base64
import io
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

ACCEPTED_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")


class UploadError(Exception):
    """An upload the server refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def decode_upload(data: bytes, *, max_pixels: int, channels: int | None = None) -> torch.Tensor:
    """The uploaded bytes as a uint8 ``(C, H, W)`` tensor (C = 1 or 3, or ``channels``).

    415 for bytes that are not an image of an accepted format, 413 for an image above
    ``max_pixels`` pixels, 400 for an image that is truncated or corrupt."""
    from fovea.data.decode import upright

    if not data:
        raise UploadError(400, "the upload is empty; expected an image file")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise UploadError(413, f"the image is above the pixel limit of {max_pixels} pixels") from None
        except Exception:  # PIL plugins raise many types on hostile bytes
            raise UploadError(415, "the upload is not an image; expected one of "
                                   + ", ".join(ACCEPTED_FORMATS)) from None
    w, h = img.size
    if w < 1 or h < 1:
        raise UploadError(400, f"the image is empty ({w}x{h})")
    if w * h > max_pixels:
        raise UploadError(413, f"the image has {w}x{h} = {w * h} pixels, above the limit of {max_pixels}")
    try:
        img.load()
        img = upright(img, channels)
        array = np.asarray(img)
    except Exception as exc:
        raise UploadError(400, f"the image cannot be decoded ({type(exc).__name__}: "
                               f"{str(exc).splitlines()[0] if str(exc) else 'corrupt'})") from None
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    if channels == 3 and array.shape[0] == 1:
        array = np.repeat(array, 3, axis=0)
    return torch.from_numpy(np.array(array, dtype=np.uint8, order="C"))  # a copy: PIL's buffer is read-only


def resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A uint8 ``(C, H, W)`` image resized (bilinear, antialiased when shrinking) to ``size``."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    shrink = size[0] < image.shape[-2] or size[1] < image.shape[-1]
    x = F.interpolate(image[None].float(), size=tuple(size), mode="bilinear", align_corners=False, antialias=shrink)
    return x[0].round().clamp(0, 255).to(torch.uint8)


def fit_longest(image: torch.Tensor, longest: int, multiple: int = 1) -> torch.Tensor:
    """Shrink a uint8 ``(C, H, W)`` image so its longer side is at most ``longest`` (never enlarged),
    each side rounded down to a multiple of ``multiple`` (at least ``multiple``)."""
    h, w = image.shape[-2:]
    s = min(1.0, longest / max(h, w))
    nh, nw = (max(multiple, int(h * s) // multiple * multiple), max(multiple, int(w * s) // multiple * multiple))
    return resize(image, (nh, nw))


def display_size(h: int, w: int, longest: int = 256) -> tuple[int, int]:
    """A size for showing an ``h x w`` picture: the longer side ``longest``, aspect kept."""
    s = longest / max(h, w)
    return max(1, round(h * s)), max(1, round(w * s))


def to_pixels(x: torch.Tensor) -> np.ndarray:
    """A ``(C, H, W)`` float tensor in [0, 1] or uint8 tensor as an ``(H, W, 3)`` uint8 array."""
    if x.dtype != torch.uint8:
        x = x.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
    a = x.cpu().numpy()
    a = np.repeat(a, 3, 0) if a.shape[0] == 1 else a
    return np.ascontiguousarray(a.transpose(1, 2, 0))


def enlarge(pixels: np.ndarray, at_least: int = 128) -> np.ndarray:
    """Nearest-neighbour magnification by a whole factor so the longer side reaches ``at_least``
    (tiny model inputs such as 32x32 stay readable in a browser)."""
    s = max(1, -(-at_least // max(pixels.shape[:2])))
    return pixels.repeat(s, 0).repeat(s, 1) if s > 1 else pixels


def png_data_url(pixels: np.ndarray) -> str:
    """An ``(H, W, 3)`` or ``(H, W)`` uint8 array as a ``data:image/png;base64,...`` URL."""
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def heat_overlay(image: torch.Tensor, heat: torch.Tensor, longest: int = 256, alpha: float = 0.5) -> np.ndarray:
    """A class-evidence map over an image: ``heat`` (h, w) bilinearly upsampled to the picture,
    scaled to its own range, coloured with the ``jet`` colormap and blended with weight ``alpha``
    over ``image`` (uint8 ``(C, H, W)``) shown with its longer side ``longest``."""
    from matplotlib import colormaps

    size = display_size(*image.shape[-2:], longest)
    base = to_pixels(resize(image, size)).astype(np.float32)
    up = F.interpolate(heat[None, None].float(), size=size, mode="bilinear", align_corners=False)[0, 0]
    lo, hi = float(up.min()), float(up.max())
    unit = (up - lo) / (hi - lo) if hi > lo else torch.zeros_like(up)
    colour = colormaps["jet"](unit.numpy())[..., :3] * 255.0
    return np.clip(np.round((1 - alpha) * base + alpha * colour), 0, 255).astype(np.uint8)
