"""SqueezeNet's Fire module (Iandola et al. 2016)."""

from __future__ import annotations

import torch
from torch import nn

from fovea.nn.act import get_act
from fovea.nn.norm import get_norm


class Fire(nn.Module):
    """Squeeze, then expand: a 1x1 "squeeze" convolution down to ``squeeze_channels``, then a
    1x1 and a 3x3 "expand" convolution side by side, concatenated along channels, so the output
    has ``expand1x1_channels + expand3x3_channels`` maps at the input's spatial size.

    The squeeze layer is SqueezeNet's strategy 2: it cuts the input channels the 3x3 filters
    see, so a 3x3 filter costs ``9 * squeeze_channels`` weights instead of ``9 * in_channels``.

    ``residual=True`` adds the input to the output (the paper's "simple bypass", Sec. 6), which
    needs ``in_channels == out_channels``. ``norm`` puts a normalization layer after each
    convolution (the paper has none); its convolutions then have no bias.

    Submodule names are torchvision's (``squeeze``, ``expand1x1``, ``expand3x3`` and their
    ``*_activation``), so with ``norm=None`` the state dict matches ``torchvision``'s ``Fire``.
    """

    def __init__(self, in_channels: int, squeeze_channels: int, expand1x1_channels: int,
                 expand3x3_channels: int, act: str | None = "relu", norm: str | None = None,
                 residual: bool = False):
        super().__init__()
        self.out_channels = expand1x1_channels + expand3x3_channels
        if residual and in_channels != self.out_channels:
            raise ValueError(f"a Fire bypass needs in_channels == out_channels, got {in_channels} "
                             f"in and {expand1x1_channels} + {expand3x3_channels} = {self.out_channels} out")
        self.residual = residual
        bias = norm in (None, "none")
        self.squeeze = nn.Conv2d(in_channels, squeeze_channels, 1, bias=bias)
        self.squeeze_norm = get_norm(norm, squeeze_channels)
        self.squeeze_activation = get_act(act, inplace=True)
        self.expand1x1 = nn.Conv2d(squeeze_channels, expand1x1_channels, 1, bias=bias)
        self.expand1x1_norm = get_norm(norm, expand1x1_channels)
        self.expand1x1_activation = get_act(act, inplace=True)
        self.expand3x3 = nn.Conv2d(squeeze_channels, expand3x3_channels, 3, padding=1, bias=bias)
        self.expand3x3_norm = get_norm(norm, expand3x3_channels)
        self.expand3x3_activation = get_act(act, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.squeeze_activation(self.squeeze_norm(self.squeeze(x)))
        out = torch.cat([self.expand1x1_activation(self.expand1x1_norm(self.expand1x1(s))),
                         self.expand3x3_activation(self.expand3x3_norm(self.expand3x3(s)))], 1)
        return out + x if self.residual else out


__all__ = ["Fire"]
