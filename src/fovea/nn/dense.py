"""Dense connectivity (Huang et al. 2017, "Densely Connected Convolutional Networks"):
layer l sees the concatenation of every earlier feature map in its block,
x_l = H_l([x_0, x_1, ..., x_{l-1}]), and adds k ("growth rate") new channels.

Submodules carry torchvision's names (``norm1``, ``conv1``, ``norm2``, ``conv2``,
``denselayer<i>``, transition ``norm``/``conv``/``pool``), so state dicts line up with
``torchvision.models.densenet``; activation modules are called ``act*`` and hold no
parameters (PReLU aside).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from fovea.nn.act import get_act
from fovea.nn.norm import get_norm, has_norm


class DenseLayer(nn.Module):
    """H_l: norm-act-conv3x3 to ``growth_rate`` channels. With ``bottleneck=True`` (DenseNet-B)
    a norm-act-conv1x1 to ``bn_size * growth_rate`` channels comes first. ``drop_rate`` is
    dropout on the new features (the paper uses 0.2 on CIFAR without augmentation)."""

    def __init__(self, in_channels: int, growth_rate: int, bn_size: int = 4, drop_rate: float = 0.0,
                 bottleneck: bool = True, norm: str | None = "bn", act: str = "relu"):
        super().__init__()
        bias = not has_norm(norm)
        self.norm1 = get_norm(norm, in_channels)
        self.act1 = get_act(act, inplace=not bias)  # without a norm, in place would overwrite the input
        if bottleneck:
            mid = bn_size * growth_rate
            self.conv1 = nn.Conv2d(in_channels, mid, 1, bias=bias)
            self.norm2 = get_norm(norm, mid)
            self.act2 = get_act(act, inplace=True)
            self.conv2 = nn.Conv2d(mid, growth_rate, 3, padding=1, bias=bias)
        else:
            self.conv1 = nn.Conv2d(in_channels, growth_rate, 3, padding=1, bias=bias)
        self.bottleneck = bottleneck
        self.drop_rate = float(drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.act1(self.norm1(x)))
        if self.bottleneck:
            out = self.conv2(self.act2(self.norm2(out)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        return out


class DenseBlock(nn.Module):
    """``num_layers`` dense layers; the output concatenates the input and every layer's
    ``growth_rate`` new channels: ``in_channels + num_layers * growth_rate`` channels."""

    def __init__(self, num_layers: int, in_channels: int, growth_rate: int, bn_size: int = 4,
                 drop_rate: float = 0.0, bottleneck: bool = True, norm: str | None = "bn", act: str = "relu"):
        super().__init__()
        if num_layers < 1 or growth_rate < 1:
            raise ValueError(f"a dense block needs num_layers >= 1 and growth_rate >= 1, "
                             f"got num_layers={num_layers}, growth_rate={growth_rate}")
        for i in range(num_layers):
            self.add_module(f"denselayer{i + 1}", DenseLayer(in_channels + i * growth_rate, growth_rate, bn_size,
                                                             drop_rate, bottleneck, norm, act))
        self.out_channels = in_channels + num_layers * growth_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.children():
            # A fresh concatenation for every layer (as torchvision does), so the in-place
            # activation inside a layer never touches an earlier layer's output.
            features.append(layer(torch.cat(features, 1)))
        return torch.cat(features, 1)


class Transition(nn.Module):
    """Between dense blocks: norm-act-conv1x1 to floor(theta * C) channels (compression
    theta in (0, 1]; DenseNet-C when theta < 1), then 2x2 average pooling with stride 2."""

    def __init__(self, in_channels: int, compression: float = 0.5, norm: str | None = "bn", act: str = "relu"):
        super().__init__()
        if not 0.0 < compression <= 1.0:
            raise ValueError(f"compression (theta) must be in (0, 1], got {compression}")
        out = int(math.floor(compression * in_channels))
        self.norm = get_norm(norm, in_channels)
        self.act = get_act(act, inplace=has_norm(norm))  # without a norm, in place would overwrite the block's output
        self.conv = nn.Conv2d(in_channels, out, 1, bias=not has_norm(norm))
        self.pool = nn.AvgPool2d(2, stride=2)
        self.out_channels = out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.conv(self.act(self.norm(x))))


__all__ = ["DenseLayer", "DenseBlock", "Transition"]
