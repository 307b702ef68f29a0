"""Normalization layers: Local Response Normalization (AlexNet) and a factory by name."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LocalResponseNorm(nn.Module):
    """AlexNet's Local Response Normalization across channels.

    b_c = a_c / (k + alpha / n * sum_{c' in window(c)} a_{c'}^2) ** beta

    With AlexNet's constants (k=2, n=5, alpha=1e-4, beta=0.75). alpha is divided
    by the window size n, as in Caffe and ``torch.nn.LocalResponseNorm`` (the paper
    writes the sum without 1/n; pass ``alpha=n * 1e-4`` for that reading).
    """

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0):
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sq = (x * x).unsqueeze(1)  # (N, 1, C, ...) so the window slides over channels
        sq = F.pad(sq.flatten(3) if x.dim() > 3 else sq, (0, 0, self.size // 2, (self.size - 1) // 2))
        div = F.avg_pool2d(sq, (self.size, 1), stride=1).squeeze(1)
        div = div.view_as(x)
        return x / (self.k + self.alpha * div).pow(self.beta)

    def extra_repr(self) -> str:
        return f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"


def get_norm(name: str | None, channels: int, dim: int = 2) -> nn.Module:
    """Build a normalization layer: ``"bn"``, ``"lrn"``, ``"gn"``, ``"in"`` or ``None``."""
    if name is None or name == "none":
        return nn.Identity()
    if name == "bn":
        return {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[dim](channels)
    if name == "lrn":
        return LocalResponseNorm()
    if name == "gn":
        return nn.GroupNorm(min(32, channels), channels)
    if name == "in":
        return {1: nn.InstanceNorm1d, 2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}[dim](channels, affine=True)
    raise ValueError(f"unknown norm {name!r}; expected one of bn, lrn, gn, in, none")


def has_norm(name: str | None) -> bool:
    """Whether a norm name means a real normalization layer (a convolution before it needs no bias)."""
    return name not in (None, "none")
