"""Bilinear upsampling as a transposed convolution (Long, Shelhamer & Darrell 2015).

Upsampling by an integer factor f is a convolution with fractional input stride 1/f, i.e. a
transposed convolution with stride f. With the kernel

    w[u, v] = (1 - |u - c| / f) * (1 - |v - c| / f),   u, v = 0 .. k-1,
    k = 2f - f mod 2,   c = (k - 1) / 2,

each output pixel is computed from its nearest four inputs by a linear map that depends only
on the relative position of the input and output cells: the bilinear interpolation
y[i, j] = sum_{a, b in {0, 1}} |1 - a - {i/f}| |1 - b - {j/f}| x[floor(i/f) + a, floor(j/f) + b]
of the survey (with half-pixel centres). FCN initializes its upsampling layers with this
kernel and lets the 2x ones learn.

With padding ``f // 2`` the transposed convolution maps an n-pixel side to exactly n*f pixels
on the grid of ``F.interpolate(mode="bilinear", align_corners=False)``: output pixel o samples
the input at s = (o + 0.5) / f - 0.5. Both agree wherever 0 <= s <= n - 1. They differ only in
the outer ``f // 2`` rows and columns on each side, where s falls outside [0, n - 1]:
``F.interpolate`` clamps s to the edge and returns the edge pixel, while the transposed
convolution sees zeros beyond the edge and returns (1 - |s - edge|) times the edge pixel.
Equivalently, the transposed convolution equals ``F.interpolate`` of the input padded with one
ring of zeros, cropped by f on each side, everywhere.
"""

from __future__ import annotations

import torch
from torch import nn

from fovea.errors import UserError

__all__ = ["BilinearUpsample", "bilinear_kernel", "bilinear_kernel_size", "bilinear_padding"]


def _check(channels: int, factor: int) -> None:
    if not isinstance(factor, int) or factor < 1:
        raise UserError(f"Received factor={factor!r}; expected an integer upsampling factor >= 1.")
    if not isinstance(channels, int) or channels < 1:
        raise UserError(f"Received channels={channels!r}; expected an integer >= 1.")


def bilinear_kernel_size(factor: int) -> int:
    """k = 2f - f mod 2: the smallest kernel that reaches the two nearest inputs of every output."""
    return 2 * factor - factor % 2


def bilinear_padding(factor: int) -> int:
    """The padding (f // 2) that makes the bilinear transposed convolution map n pixels to n*f
    pixels on ``F.interpolate``'s half-pixel grid (``align_corners=False``)."""
    return factor // 2


def bilinear_kernel(channels: int, factor: int, depthwise: bool = False) -> torch.Tensor:
    """The weight of a ``ConvTranspose2d(channels, channels, 2f - f % 2, stride=f)`` that upsamples
    each channel bilinearly by ``factor`` and does not mix channels.

    Shape (channels, channels, k, k) with the 2-D kernel on the diagonal (zeros elsewhere, so
    a learned layer may come to mix channels, as FCN's), or (channels, 1, k, k) with
    ``depthwise=True`` for a layer built with ``groups=channels``.
    """
    _check(channels, factor)
    k = bilinear_kernel_size(factor)
    center = (k - 1) / 2
    taps = 1 - (torch.arange(k, dtype=torch.float64) - center).abs() / factor
    kernel = (taps[:, None] * taps[None, :]).float()
    if depthwise:
        return kernel.expand(channels, 1, k, k).clone()
    weight = torch.zeros(channels, channels, k, k)
    idx = torch.arange(channels)
    weight[idx, idx] = kernel
    return weight


class BilinearUpsample(nn.Module):
    """Upsample by an integer ``factor`` with a transposed convolution initialized to bilinear
    interpolation; ``learnable=True`` lets the kernel train (FCN's 2x layers), otherwise it
    stays fixed (FCN's final upsampling).

    ``padding=None`` uses ``f // 2``: an n-pixel side becomes exactly n*f, aligned with
    ``F.interpolate(mode="bilinear", align_corners=False)`` (see the module docstring for where
    they differ at the borders). ``padding=0`` is FCN's layer, whose (n - 1)*f + k outputs are
    cropped by the network. ``depthwise=True`` keeps one kernel per channel (groups=channels),
    so a learned layer cannot mix channels.
    """

    def __init__(self, channels: int, factor: int, learnable: bool = False, padding: int | None = None,
                 depthwise: bool = False):
        super().__init__()
        _check(channels, factor)
        padding = bilinear_padding(factor) if padding is None else padding
        if not isinstance(padding, int) or padding < 0:
            raise UserError(f"Received padding={padding!r}; expected None or an integer >= 0.")
        self.factor, self.learnable = factor, learnable
        self.deconv = nn.ConvTranspose2d(channels, channels, bilinear_kernel_size(factor), stride=factor,
                                         padding=padding, groups=channels if depthwise else 1, bias=False)
        with torch.no_grad():
            self.deconv.weight.copy_(bilinear_kernel(channels, factor, depthwise=depthwise))
        self.deconv.weight.requires_grad_(learnable)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.deconv(x)

    def extra_repr(self) -> str:
        return f"factor={self.factor}, learnable={self.learnable}"
