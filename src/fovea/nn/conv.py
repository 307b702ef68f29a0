"""Convolutions: any dimension, "valid" / "same" / explicit padding with zero, reflect
(mirror), replicate or circular modes, stride, dilation, groups, depthwise-separable,
transposed, and deformable convolution."""

from __future__ import annotations

from typing import Sequence, Union

import torch
from torch import nn

Size = Union[int, Sequence[int]]
_PAD_MODES = {"zeros": "zeros", "zero": "zeros", "reflect": "reflect", "mirror": "reflect",
              "replicate": "replicate", "circular": "circular"}
_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_CONVT = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}


def _tuple(v: Size, dim: int) -> tuple[int, ...]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * dim


def resolve_padding(padding: str | Size, kernel_size: Size, stride: Size = 1, dilation: Size = 1,
                    dim: int = 2) -> str | tuple[int, ...]:
    """Turn ``"valid"`` / ``"same"`` / ints into what ``nn.ConvNd`` accepts.

    "same" keeps the size at stride 1 (PyTorch pads asymmetrically for even kernels); with
    stride s > 1 it pads d(k-1)/2 on each side, so the output is ceil(n / s), which needs an
    odd effective kernel.
    """
    if not isinstance(padding, str):
        return _tuple(padding, dim)
    if padding == "valid":
        return (0,) * dim
    if padding != "same":
        raise ValueError(f"padding must be 'valid', 'same' or integers, got {padding!r}")
    k, s, d = _tuple(kernel_size, dim), _tuple(stride, dim), _tuple(dilation, dim)
    if all(si == 1 for si in s):
        return "same"
    eff = [di * (ki - 1) for ki, di in zip(k, d)]
    if any(e % 2 for e in eff):
        raise ValueError(f"padding='same' with stride {s} needs an odd effective kernel, got kernel {k} dilation {d}")
    return tuple(e // 2 for e in eff)


def conv(in_channels: int, out_channels: int, kernel_size: Size, stride: Size = 1,
         padding: str | Size = "same", dilation: Size = 1, groups: int = 1, bias: bool = True,
         padding_mode: str = "zeros", dim: int = 2) -> nn.Module:
    """A 1D, 2D or 3D convolution; ``padding_mode`` is zeros, reflect (alias mirror), replicate or circular."""
    if dim not in _CONV:
        raise ValueError(f"dim must be 1, 2 or 3, got {dim}")
    if padding_mode not in _PAD_MODES:
        raise ValueError(f"padding_mode must be one of {', '.join(_PAD_MODES)}, got {padding_mode!r}")
    pad = resolve_padding(padding, kernel_size, stride, dilation, dim)
    return _CONV[dim](in_channels, out_channels, kernel_size, stride=stride, padding=pad,
                      dilation=dilation, groups=groups, bias=bias, padding_mode=_PAD_MODES[padding_mode])


def conv_transpose(in_channels: int, out_channels: int, kernel_size: Size, stride: Size = 1,
                   padding: Size = 0, output_padding: Size = 0, dilation: Size = 1, groups: int = 1,
                   bias: bool = True, dim: int = 2) -> nn.Module:
    """A transposed ("fractionally strided") convolution: o = (n-1)s - 2p + d(k-1) + output_padding + 1."""
    return _CONVT[dim](in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                       output_padding=output_padding, dilation=dilation, groups=groups, bias=bias)


class SeparableConv(nn.Module):
    """Depthwise-separable convolution: a k x k depthwise convolution (groups = in_channels,
    ``multiplier`` filters per channel) followed by a 1x1 pointwise convolution."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Size = 3, stride: Size = 1,
                 padding: str | Size = "same", dilation: Size = 1, bias: bool = True,
                 padding_mode: str = "zeros", multiplier: int = 1, dim: int = 2):
        super().__init__()
        mid = in_channels * multiplier
        self.depthwise = conv(in_channels, mid, kernel_size, stride, padding, dilation,
                              groups=in_channels, bias=False, padding_mode=padding_mode, dim=dim)
        self.pointwise = conv(mid, out_channels, 1, bias=bias, dim=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class DeformConv2d(nn.Module):
    """Deformable convolution (Dai et al. 2017): a plain convolution predicts 2·k·k sampling
    offsets per output position (initialised to zero, so it starts as an ordinary convolution),
    and ``torchvision.ops.deform_conv2d`` samples the input there."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: int | str = "same", dilation: int = 1, groups: int = 1, bias: bool = True):
        super().__init__()
        from torchvision.ops import DeformConv2d as _TVDeform

        if padding == "same":
            padding = dilation * (kernel_size - 1) // 2
        elif padding == "valid":
            padding = 0
        self.conv = _TVDeform(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias)
        self.offset = nn.Conv2d(in_channels, 2 * kernel_size * kernel_size, kernel_size, stride, padding, dilation)
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x, self.offset(x))
