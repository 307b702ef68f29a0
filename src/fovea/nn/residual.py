"""Residual blocks (He et al. 2015, "Deep Residual Learning for Image Recognition"; He et al.
2016, "Identity Mappings in Deep Residual Networks"): y = F(x) + shortcut(x).

Shortcut options, as in section 3.3 of the 2015 paper:

- ``"A"``: parameter-free. The identity when the shape is kept; when it changes, the input is
  subsampled with the block's stride and the extra channels are filled with zeros.
- ``"B"``: a projection (1x1 convolution + norm) only where the shape changes, the identity
  elsewhere.
- ``"C"``: a projection on every block.

Submodules carry torchvision's names (``conv1``, ``bn1``, ..., ``downsample.0``/``.1``), so
state dicts line up with ``torchvision.models.resnet``; activation modules are called
``act1``, ``act2``... and hold no parameters (PReLU aside), so they add no state-dict keys.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fovea.nn.act import get_act
from fovea.nn.norm import get_norm, has_norm

SHORTCUTS = ("A", "B", "C")


def conv3x3(in_channels: int, out_channels: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=bias)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=bias)


class ZeroPadShortcut(nn.Module):
    """Shortcut option A: ``x[:, :, ::s, ::s]`` followed by zero channels up to ``out_channels``.

    Subsampling by the stride gives ceil(n / s) positions, the same size as a 3x3 convolution
    with padding 1 and stride s, so the sum with the residual branch always lines up."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(f"shortcut 'A' can only add channels; received in_channels={in_channels}, "
                             f"out_channels={out_channels}")
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, ::self.stride, ::self.stride]
        extra = self.out_channels - self.in_channels
        return F.pad(x, (0, 0, 0, 0, 0, extra)) if extra else x

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


def make_shortcut(in_channels: int, out_channels: int, stride: int = 1, shortcut: str = "B",
                  norm: str | None = "bn") -> nn.Module | None:
    """The shortcut branch of a residual block, or ``None`` where it is the identity.

    A projection is ``Sequential(conv1x1(stride), norm)`` (torchvision's ``downsample``)."""
    if shortcut not in SHORTCUTS:
        raise ValueError(f"shortcut must be one of {', '.join(SHORTCUTS)}, got {shortcut!r}")
    same_shape = in_channels == out_channels and stride == 1
    if shortcut == "A":
        return None if same_shape else ZeroPadShortcut(in_channels, out_channels, stride)
    if shortcut == "B" and same_shape:
        return None
    return nn.Sequential(conv1x1(in_channels, out_channels, stride, bias=not has_norm(norm)),
                         get_norm(norm, out_channels))


def _zero_last(norm: nn.Module, conv: nn.Conv2d) -> None:
    """Zero the last norm's scale (Goyal et al. 2017) so the block starts as its shortcut;
    without an affine norm, zero the last convolution instead."""
    weight = getattr(norm, "weight", None)
    nn.init.zeros_(weight if isinstance(weight, torch.Tensor) else conv.weight)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions: conv-norm-act, conv-norm, add the shortcut, act.

    ``planes`` is the output width (``expansion = 1``); the first convolution strides."""

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1, shortcut: str = "B",
                 norm: str | None = "bn", act: str = "relu"):
        super().__init__()
        bias = not has_norm(norm)
        self.conv1 = conv3x3(in_channels, planes, stride, bias)
        self.bn1 = get_norm(norm, planes)
        self.act1 = get_act(act, inplace=True)
        self.conv2 = conv3x3(planes, planes, 1, bias)
        self.bn2 = get_norm(norm, planes)
        self.act2 = get_act(act, inplace=True)
        self.downsample = make_shortcut(in_channels, planes, stride, shortcut, norm)
        self.out_channels = planes

    def zero_init_last(self) -> None:
        _zero_last(self.bn2, self.conv2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (to ``planes * 4`` channels), add the shortcut, act.

    ``stride_at`` says which convolution strides: ``"3x3"`` (torchvision's and most modern
    code, often called ResNet v1.5, slightly more accurate) or ``"1x1"`` (the 2015 paper's
    first 1x1 convolution). Both have the same parameters and state-dict keys."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1, shortcut: str = "B",
                 norm: str | None = "bn", act: str = "relu", stride_at: str = "3x3"):
        super().__init__()
        if stride_at not in ("3x3", "1x1"):
            raise ValueError(f"stride_at must be '3x3' or '1x1', got {stride_at!r}")
        out = planes * self.expansion
        bias = not has_norm(norm)
        s1, s3 = (stride, 1) if stride_at == "1x1" else (1, stride)
        self.conv1 = conv1x1(in_channels, planes, s1, bias)
        self.bn1 = get_norm(norm, planes)
        self.act1 = get_act(act, inplace=True)
        self.conv2 = conv3x3(planes, planes, s3, bias)
        self.bn2 = get_norm(norm, planes)
        self.act2 = get_act(act, inplace=True)
        self.conv3 = conv1x1(planes, out, 1, bias)
        self.bn3 = get_norm(norm, out)
        self.act3 = get_act(act, inplace=True)
        self.downsample = make_shortcut(in_channels, out, stride, shortcut, norm)
        self.out_channels = out

    def zero_init_last(self) -> None:
        _zero_last(self.bn3, self.conv3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.act3(out + identity)


class PreActBasicBlock(nn.Module):
    """The pre-activation basic block of He et al. 2016 (their Fig. 1b / 4e):
    norm-act-conv, norm-act-conv, plus the shortcut, with nothing after the addition, so the
    identity path runs unchanged from block to block.

    A projection shortcut (B, C) takes the pre-activated input, shared with the residual branch
    (the paper's code does this where a stage starts); an identity or zero-pad (A) shortcut
    carries ``x`` itself. A network of these blocks needs a final norm-act before pooling."""

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1, shortcut: str = "B",
                 norm: str | None = "bn", act: str = "relu"):
        super().__init__()
        bias = not has_norm(norm)
        self.bn1 = get_norm(norm, in_channels)
        self.act1 = get_act(act, inplace=not bias)  # without a norm, in place would overwrite x
        self.conv1 = conv3x3(in_channels, planes, stride, bias)
        self.bn2 = get_norm(norm, planes)
        self.act2 = get_act(act, inplace=True)
        self.conv2 = conv3x3(planes, planes, 1, bias)
        self.downsample = make_shortcut(in_channels, planes, stride, shortcut, norm)
        self.out_channels = planes

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv2.weight)  # no norm closes the branch; the last conv does the job

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.act1(self.bn1(x))
        if self.downsample is None:
            identity = x
        elif isinstance(self.downsample, ZeroPadShortcut):
            identity = self.downsample(x)
        else:
            identity = self.downsample(pre)
        out = self.conv1(pre)
        out = self.conv2(self.act2(self.bn2(out)))
        return out + identity


__all__ = ["SHORTCUTS", "ZeroPadShortcut", "make_shortcut", "conv1x1", "conv3x3", "BasicBlock", "Bottleneck",
           "PreActBasicBlock"]
