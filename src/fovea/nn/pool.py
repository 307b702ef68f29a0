"""Pooling: max, average, min, global average; overlapping pooling is max(3, stride=2)."""

from __future__ import annotations

import torch
from torch import nn

_MAX = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}
_AVG = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}


class MinPool(nn.Module):
    """Min pooling, computed as -maxpool(-x); the gradient goes to the minimum unit only."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode: bool = False, dim: int = 2):
        super().__init__()
        self.pool = _MAX[dim](kernel_size, stride, padding, ceil_mode=ceil_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -self.pool(-x)


class GlobalAvgPool(nn.Module):
    """Mean over all spatial (and temporal) positions; ``flatten=True`` gives (N, C)."""

    def __init__(self, flatten: bool = True):
        super().__init__()
        self.flatten = flatten

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x.mean(dim=tuple(range(2, x.dim())), keepdim=not self.flatten)
        return out

    def extra_repr(self) -> str:
        return f"flatten={self.flatten}"


def pool(kind: str, kernel_size=2, stride=None, padding: int = 0, ceil_mode: bool = False,
         dim: int = 2) -> nn.Module:
    """``kind`` is max, avg, min or gap (global average). ``pool("max", 3, 2)`` is AlexNet's
    overlapping pooling."""
    if kind == "max":
        return _MAX[dim](kernel_size, stride, padding, ceil_mode=ceil_mode)
    if kind == "avg":
        return _AVG[dim](kernel_size, stride, padding, ceil_mode=ceil_mode)
    if kind == "min":
        return MinPool(kernel_size, stride, padding, ceil_mode, dim)
    if kind == "gap":
        return GlobalAvgPool()
    raise ValueError(f"unknown pooling {kind!r}; expected max, avg, min or gap")


def overlapping_max_pool(dim: int = 2) -> nn.Module:
    """AlexNet's overlapping pooling: 3x3 windows, stride 2."""
    return _MAX[dim](3, 2)


__all__ = ["MinPool", "GlobalAvgPool", "pool", "overlapping_max_pool"]
