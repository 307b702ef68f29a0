"""Inception modules: GoogLeNet's (Szegedy et al. 2014, "Going Deeper with Convolutions") and
Inception v3's (Szegedy et al. 2015, "Rethinking the Inception Architecture for Computer
Vision"), with the convolution factorizations the second paper introduces.

Every module runs parallel branches on the same input and concatenates their outputs along
channels; ``out_channels`` is the sum of the branch widths. Convolutions are
:class:`~fovea.nn.layers.ConvNormAct` (submodules ``conv``/``bn``/``act``), and the v3 modules
name their branches as torchvision does (``branch1x1``, ``branch5x5_1`` ...), so torchvision's
state dicts load without renaming. Batch norm uses eps = 1e-3, TensorFlow's value, which
torchvision's ``BasicConv2d`` (and its ImageNet weights) keep.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from fovea.nn.layers import ConvNormAct

BN_EPS = 1e-3  # TensorFlow's batch-norm epsilon, kept by torchvision's Inception weights


def _conv_block(norm: str | None, act: str | None):
    return partial(ConvNormAct, norm=norm, act=act, norm_eps=BN_EPS)


# ----------------------------------------------------------------------------- factorizations

class StackedConv3x3(nn.Sequential):
    """A k x k convolution replaced by (k - 1) / 2 stacked 3x3 convolutions with the same
    receptive field (Inception v3, Sec. 3.1, Fig. 1): a 5x5 becomes two 3x3, a 7x7 three.

    With C channels in and out, a 5x5 costs 25 C^2 weights and two 3x3 cost 18 C^2, 28% fewer,
    with one more non-linearity between them. Intermediate layers have ``mid_channels``
    (default ``out_channels``). At stride 1 the spatial size is kept.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 5,
                 mid_channels: int | None = None, norm: str | None = "bn", act: str | None = "relu"):
        if kernel_size < 3 or kernel_size % 2 == 0:
            raise ValueError(f"StackedConv3x3 replaces an odd kernel of size >= 3, got {kernel_size}")
        cba = _conv_block(norm, act)
        depth = (kernel_size - 1) // 2
        mid = mid_channels or out_channels
        widths = [in_channels] + [mid] * (depth - 1) + [out_channels]
        super().__init__(*[cba(widths[i], widths[i + 1], 3) for i in range(depth)])
        self.out_channels = out_channels


class AsymmetricConv(nn.Sequential):
    """An n x n convolution replaced by a 1 x n followed by an n x 1 (Inception v3, Sec. 3.2,
    Fig. 3): the same receptive field for 2n instead of n^2 weights per channel pair (n = 3:
    33% cheaper; n = 7: 71% cheaper). At stride 1 the spatial size is kept."""

    def __init__(self, in_channels: int, out_channels: int, n: int = 7, mid_channels: int | None = None,
                 norm: str | None = "bn", act: str | None = "relu"):
        cba = _conv_block(norm, act)
        mid = mid_channels or out_channels
        super().__init__(cba(in_channels, mid, (1, n)), cba(mid, out_channels, (n, 1)))
        self.out_channels = out_channels


# ----------------------------------------------------------------------------- Inception v1

class InceptionNaive(nn.Module):
    """The naive Inception module (GoogLeNet paper, Fig. 2a): 1x1, 3x3 and 5x5 convolutions and
    a 3x3 max pool (stride 1) side by side on the same input, concatenated.

    The pooling branch passes all ``in_channels`` through, so the output always grows by the
    input width: ``out_channels = ch1x1 + ch3x3 + ch5x5 + in_channels``. That growth, and the
    cost of 5x5 filters on a wide input, are why GoogLeNet uses :class:`InceptionV1` instead.
    """

    def __init__(self, in_channels: int, ch1x1: int, ch3x3: int, ch5x5: int,
                 norm: str | None = "bn", act: str | None = "relu"):
        super().__init__()
        cba = _conv_block(norm, act)
        self.branch1 = cba(in_channels, ch1x1, 1)
        self.branch2 = cba(in_channels, ch3x3, 3)
        self.branch3 = cba(in_channels, ch5x5, 5)
        self.branch4 = nn.MaxPool2d(3, stride=1, padding=1)
        self.out_channels = ch1x1 + ch3x3 + ch5x5 + in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class InceptionV1(nn.Module):
    """GoogLeNet's Inception module with dimension reductions (Fig. 2b): a 1x1 branch; 1x1
    reduction then 3x3; 1x1 reduction then "5x5"; 3x3 max pool then 1x1 projection.

    ``out_channels = ch1x1 + ch3x3 + ch5x5 + pool_proj``. The arguments are the columns of the
    paper's Table 1 ("#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj").

    ``branch3_kernel`` is the kernel of the "5x5" branch: 5 as in the paper; torchvision builds
    it with 3 (a known slip, pytorch/vision#906, kept for its ImageNet weights), so pass 3 to
    load those weights. Submodule names are torchvision's (``branch1``, ``branch2.0`` ...).
    """

    def __init__(self, in_channels: int, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int,
                 ch5x5: int, pool_proj: int, branch3_kernel: int = 5, norm: str | None = "bn",
                 act: str | None = "relu"):
        super().__init__()
        cba = _conv_block(norm, act)
        self.branch1 = cba(in_channels, ch1x1, 1)
        self.branch2 = nn.Sequential(cba(in_channels, ch3x3red, 1), cba(ch3x3red, ch3x3, 3))
        self.branch3 = nn.Sequential(cba(in_channels, ch5x5red, 1), cba(ch5x5red, ch5x5, branch3_kernel))
        # ceil_mode is a no-op at stride 1; torchvision sets it, and so do we to print the same.
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True),
                                     cba(in_channels, pool_proj, 1))
        self.out_channels = ch1x1 + ch3x3 + ch5x5 + pool_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


# ----------------------------------------------------------------------------- Inception v3

class InceptionA(nn.Module):
    """Inception v3's 35x35 module (Mixed_5b-d): 1x1 (64); 1x1 (48) -> 5x5 (64); 1x1 (64) ->
    3x3 (96) -> 3x3 (96); 3x3 average pool -> 1x1 (``pool_features``).
    ``out_channels = 224 + pool_features``.

    The paper's Fig. 5 has only 3x3 convolutions here, every 5x5 factorized into two 3x3 (the
    "3x3dbl" branch is that factorization). The released TensorFlow model, and torchvision
    after it, kept one 5x5 branch; that is the default, for their weights.
    ``factorize_5x5=True`` replaces it with two 3x3 convolutions (:class:`StackedConv3x3`,
    48 -> 64 -> 64), giving the paper's all-3x3 module with the same output widths.
    """

    def __init__(self, in_channels: int, pool_features: int, factorize_5x5: bool = False,
                 norm: str | None = "bn", act: str | None = "relu"):
        super().__init__()
        cba = _conv_block(norm, act)
        self.branch1x1 = cba(in_channels, 64, 1)
        self.branch5x5_1 = cba(in_channels, 48, 1)
        self.branch5x5_2 = (StackedConv3x3(48, 64, 5, norm=norm, act=act) if factorize_5x5
                            else cba(48, 64, 5))
        self.branch3x3dbl_1 = cba(in_channels, 64, 1)
        self.branch3x3dbl_2 = cba(64, 96, 3)
        self.branch3x3dbl_3 = cba(96, 96, 3)
        self.branch_pool = cba(in_channels, pool_features, 1)
        self.out_channels = 64 + 64 + 96 + pool_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1))
        return torch.cat([b1, b5, b3, bp], 1)


class InceptionB(nn.Module):
    """Grid reduction 35x35 -> 17x17 (Mixed_6a; paper Sec. 5, Fig. 10): a stride-2 3x3 (384),
    a 1x1 -> 3x3 -> stride-2 3x3 (96) and a stride-2 3x3 max pool run in parallel, so the grid
    shrinks while the width grows, without the representational bottleneck of pooling first.
    ``out_channels = 480 + in_channels``."""

    def __init__(self, in_channels: int, norm: str | None = "bn", act: str | None = "relu"):
        super().__init__()
        cba = _conv_block(norm, act)
        self.branch3x3 = cba(in_channels, 384, 3, stride=2, padding=0)
        self.branch3x3dbl_1 = cba(in_channels, 64, 1)
        self.branch3x3dbl_2 = cba(64, 96, 3)
        self.branch3x3dbl_3 = cba(96, 96, 3, stride=2, padding=0)
        self.out_channels = 384 + 96 + in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3(x)
        b3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([b3, b3dbl, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionC(nn.Module):
    """Inception v3's 17x17 module (Mixed_6b-e; paper Fig. 6): n x n convolutions factorized
    into 1 x n and n x 1 (n = 7). Branches: 1x1 (192); 1x1 (c7) -> 1 x n -> n x 1 (192);
    1x1 (c7) -> n x 1 -> 1 x n -> n x 1 -> 1 x n (192); 3x3 average pool -> 1x1 (192).
    ``out_channels = 768``; ``channels_7x7`` (c7) is the width inside the factorized branches.
    Layer names are torchvision's (``branch7x7_2`` is the 1 x n ...), whatever n is."""

    def __init__(self, in_channels: int, channels_7x7: int, n: int = 7, norm: str | None = "bn",
                 act: str | None = "relu"):
        super().__init__()
        cba = _conv_block(norm, act)
        c7, row, col = channels_7x7, (1, n), (n, 1)
        self.branch1x1 = cba(in_channels, 192, 1)
        self.branch7x7_1 = cba(in_channels, c7, 1)
        self.branch7x7_2 = cba(c7, c7, row)
        self.branch7x7_3 = cba(c7, 192, col)
        self.branch7x7dbl_1 = cba(in_channels, c7, 1)
        self.branch7x7dbl_2 = cba(c7, c7, col)
        self.branch7x7dbl_3 = cba(c7, c7, row)
        self.branch7x7dbl_4 = cba(c7, c7, col)
        self.branch7x7dbl_5 = cba(c7, 192, row)
        self.branch_pool = cba(in_channels, 192, 1)
        self.out_channels = 4 * 192

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        b7dbl = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            b7dbl = layer(b7dbl)
        bp = self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1))
        return torch.cat([b1, b7, b7dbl, bp], 1)


class InceptionD(nn.Module):
    """Grid reduction 17x17 -> 8x8 (Mixed_7a): 1x1 (192) -> stride-2 3x3 (320);
    1x1 (192) -> 1x7 -> 7x1 -> stride-2 3x3 (192); stride-2 3x3 max pool.
    ``out_channels = 512 + in_channels``."""

    def __init__(self, in_channels: int, norm: str | None = "bn", act: str | None = "relu"):
        super().__init__()
        cba = _conv_block(norm, act)
        self.branch3x3_1 = cba(in_channels, 192, 1)
        self.branch3x3_2 = cba(192, 320, 3, stride=2, padding=0)
        self.branch7x7x3_1 = cba(in_channels, 192, 1)
        self.branch7x7x3_2 = cba(192, 192, (1, 7))
        self.branch7x7x3_3 = cba(192, 192, (7, 1))
        self.branch7x7x3_4 = cba(192, 192, 3, stride=2, padding=0)
        self.out_channels = 320 + 192 + in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_1(x)
        for layer in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b7 = layer(b7)
        return torch.cat([b3, b7, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionE(nn.Module):
    """Inception v3's 8x8 module with expanded filter banks (Mixed_7b-c; paper Fig. 7): the
    1 x 3 and 3 x 1 convolutions run side by side instead of in sequence, widening the output
    on the coarsest grid, where high-dimensional representations are cheap. Branches: 1x1 (320);
    1x1 (384) -> [1x3 | 3x1] (2 x 384); 1x1 (448) -> 3x3 (384) -> [1x3 | 3x1] (2 x 384);
    3x3 average pool -> 1x1 (192). ``out_channels = 2048``."""

    def __init__(self, in_channels: int, norm: str | None = "bn", act: str | None = "relu"):
        super().__init__()
        cba = _conv_block(norm, act)
        self.branch1x1 = cba(in_channels, 320, 1)
        self.branch3x3_1 = cba(in_channels, 384, 1)
        self.branch3x3_2a = cba(384, 384, (1, 3))
        self.branch3x3_2b = cba(384, 384, (3, 1))
        self.branch3x3dbl_1 = cba(in_channels, 448, 1)
        self.branch3x3dbl_2 = cba(448, 384, 3)
        self.branch3x3dbl_3a = cba(384, 384, (1, 3))
        self.branch3x3dbl_3b = cba(384, 384, (3, 1))
        self.branch_pool = cba(in_channels, 192, 1)
        self.out_channels = 320 + 2 * 384 + 2 * 384 + 192

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        b3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        b3dbl = torch.cat([self.branch3x3dbl_3a(b3dbl), self.branch3x3dbl_3b(b3dbl)], 1)
        bp = self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1))
        return torch.cat([b1, b3, b3dbl, bp], 1)


__all__ = ["BN_EPS", "StackedConv3x3", "AsymmetricConv",
           "InceptionNaive", "InceptionV1", "InceptionA", "InceptionB", "InceptionC", "InceptionD", "InceptionE"]
