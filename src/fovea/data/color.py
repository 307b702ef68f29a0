"""Colour conversions and the bicubic degradation used to train and evaluate super-resolution.

``rgb_to_ycbcr`` follows ITU-R BT.601 in the "studio swing" form of MATLAB's ``rgb2ycbcr``,
which SRCNN's code (Dong et al. 2014) uses to take the luminance channel. For R, G, B in [0, 1]:

    Y  = ( 16 +  65.481 R + 128.553 G +  24.966 B) / 255
    Cb = (128 -  37.797 R -  74.203 G + 112.000 B) / 255
    Cr = (128 + 112.000 R -  93.786 G -  18.214 B) / 255

so Y lies in [16, 235] / 255 and Cb, Cr in [16, 240] / 255: the output is on MATLAB's scale for
double images (8-bit code values divided by 255), not the full-range JPEG form.
``ycbcr_to_rgb`` is the exact inverse of this affine map (MATLAB's ``ycbcr2rgb``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fovea.errors import UserError

__all__ = ["BT601_MATRIX", "BT601_OFFSET", "bicubic_degrade", "modcrop", "rgb_to_y", "rgb_to_ycbcr", "ycbcr_to_rgb"]

# rows: Y, Cb, Cr; columns: R, G, B (8-bit code values per unit of R, G, B in [0, 1])
BT601_MATRIX = ((65.481, 128.553, 24.966),
                (-37.797, -74.203, 112.0),
                (112.0, -93.786, -18.214))
BT601_OFFSET = (16.0, 128.0, 128.0)


def _check_channels(image: torch.Tensor, what: str) -> None:
    if not isinstance(image, torch.Tensor) or image.dim() < 3 or image.shape[-3] != 3:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise UserError(f"Received an {what} image of shape {shape}; expected a tensor (..., 3, H, W).")


def _matrix(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    dtype = image.dtype if image.is_floating_point() else torch.float32
    m = torch.tensor(BT601_MATRIX, dtype=torch.float64) / 255
    b = torch.tensor(BT601_OFFSET, dtype=torch.float64) / 255
    return m.to(image.device, dtype), b.to(image.device, dtype)


def rgb_to_ycbcr(image: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1], shape (..., 3, H, W), to BT.601 YCbCr on MATLAB's scale (see the module
    docstring): Y in [16, 235]/255, Cb and Cr in [16, 240]/255."""
    _check_channels(image, "RGB")
    m, b = _matrix(image)
    return torch.einsum("ij,...jhw->...ihw", m, image.to(m.dtype)) + b[:, None, None]


def ycbcr_to_rgb(image: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`rgb_to_ycbcr`: BT.601 YCbCr on MATLAB's scale, shape (..., 3, H, W),
    to RGB (in [0, 1] for colours that came from [0, 1]; not clamped)."""
    _check_channels(image, "YCbCr")
    m, b = _matrix(image)
    inverse = torch.linalg.inv(m.double()).to(m.dtype)
    return torch.einsum("ij,...jhw->...ihw", inverse, image.to(m.dtype) - b[:, None, None])


def rgb_to_y(image: torch.Tensor) -> torch.Tensor:
    """The luminance channel of :func:`rgb_to_ycbcr`, shape (..., 1, H, W): SRCNN's input."""
    return rgb_to_ycbcr(image)[..., :1, :, :]


def _check_scale(scale) -> None:
    if not isinstance(scale, int) or isinstance(scale, bool) or scale < 2:
        raise UserError(f"Received scale={scale!r}; expected an integer upscaling factor >= 2 (SRCNN uses 2, 3, 4).")


def modcrop(image: torch.Tensor, scale: int) -> torch.Tensor:
    """Crop the bottom and right of an (..., H, W) image so both sides are multiples of
    ``scale`` (SRCNN's ``modcrop``)."""
    _check_scale(scale)
    h, w = image.shape[-2:]
    return image[..., :h - h % scale, :w - w % scale]


def bicubic_degrade(image: torch.Tensor, scale: int) -> torch.Tensor:
    """SRCNN's training and test input: downscale an (N, C, H, W), (C, H, W) or (H, W) image by
    ``scale`` with antialiased bicubic interpolation (like MATLAB's ``imresize``), then upscale
    it back to (H, W) with bicubic interpolation. Sides must be multiples of ``scale`` (see
    :func:`modcrop`). Bicubic overshoots at edges; the result is not clamped.
    """
    _check_scale(scale)
    if not isinstance(image, torch.Tensor) or image.dim() not in (2, 3, 4) or not image.is_floating_point():
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise UserError(f"Received an image of shape {shape}; expected a float tensor (N, C, H, W), (C, H, W) "
                        f"or (H, W).")
    h, w = image.shape[-2:]
    if h % scale or w % scale or h < scale or w < scale:
        raise UserError(f"Received an image of size {h}x{w} for scale {scale}; expected sides that are positive "
                        f"multiples of {scale} (crop with modcrop first).")
    dims = image.dim()
    x = image.reshape(1, 1, h, w) if dims == 2 else image[None] if dims == 3 else image
    low = F.interpolate(x, size=(h // scale, w // scale), mode="bicubic", align_corners=False, antialias=True)
    up = F.interpolate(low, size=(h, w), mode="bicubic", align_corners=False)
    return up.reshape(h, w) if dims == 2 else up[0] if dims == 3 else up
