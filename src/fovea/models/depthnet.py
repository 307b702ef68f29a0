"""A fully convolutional disparity network for unsupervised depth from stereo.

Garg, Kumar, Carneiro & Reid 2016 ("Unsupervised CNN for single view depth estimation: geometry
to the rescue") train a convolutional encoder-decoder to predict the disparity of the left view
of a rectified pair, with no depth labels: the right view warped by that disparity must
reconstruct the left one (``fovea.losses.stereo``). What the network sees (``input``):

- ``left``: the left image only, as in Garg et al. (3 channels);
- ``stack``: the left and right images stacked (6 channels);
- ``corr``: both views go through the stem and the first encoder stage (shared weights, a
  siamese tower); at that half resolution a 1-D correlation layer compares each left feature
  vector with the right ones on the same row, ``c_k(x, y) = <f_L(x, y), f_R(x - k, y)> / C``
  for k = 0 .. ceil(max_disp / 2) - 1 (zero where x - k < 0), as DispNet-C does (Mayer et al.
  2016, the horizontal case of FlowNet-C's correlation); the encoder goes on from the left
  features and these costs, so that the network can match rather than guess depth from one view.

On the one motorcycle pair, fitted for a few minutes, the three reach about the same error
(docs/depth.md); ``left`` is the default.

The architecture here is a small U-Net-like encoder-decoder in the manner of Godard et al.'s
(2017) disparity network: a full-resolution stem, then ``len(widths) - 1`` encoder stages that
halve the size (3x3 stride-2 convolution, 3x3 convolution, each followed by ``act``: leaky ReLU
by default, ``act="elu"`` for Godard et al.'s ELU); the decoder doubles the size
(nearest-neighbour upsampling and a 3x3 convolution), concatenates the
encoder's features of that size (skip connections) and the coarser disparity upsampled, and
predicts a disparity at each of the ``scales`` finest sizes:

    d_k = max_disp / 2^k * sigmoid(conv3x3(features at 1/2^k)),   k = 0 .. scales - 1,

non-negative and at most ``max_disp`` input pixels (``max_disp / 2^k`` pixels of scale k). The
coarse predictions are for the multi-scale loss; ``forward`` returns the finest one.

Any input size: ``forward`` pads the input by edge replication to a multiple of
``2^(len(widths) - 1)`` and crops the disparity back, so an (H, W) input gives an (H, W)
disparity.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fovea.errors import UserError
from fovea.models.base import build_config
from fovea.models.registry import register_model
from fovea.nn.act import ACT_NAMES, get_act

__all__ = ["INPUTS", "DisparityNet", "DisparityNetConfig", "disparity", "horizontal_correlation"]


INPUTS = ("left", "stack", "corr")


@dataclass
class DisparityNetConfig:
    input: str = "left"  # left (Garg et al.) | stack (left and right, 6 channels) | corr (correlation)
    in_channels: int = 3  # channels of one view
    widths: tuple[int, ...] = (16, 32, 48, 64, 96, 128)  # stem, then one per halving of the size
    scales: int = 4  # disparities predicted at 1, 1/2, ..., 1/2^(scales-1)
    max_disp: float = 64.0  # the largest disparity, in input pixels
    act: str = "leaky_relu"  # any fovea activation name, or elu (Godard et al.'s)


def _act(name: str) -> nn.Module:
    return nn.ELU(inplace=True) if name == "elu" else get_act(name, inplace=True)


def _conv(cin: int, cout: int, stride: int = 1, act: str = "leaky_relu") -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), _act(act))


def horizontal_correlation(left: torch.Tensor, right: torch.Tensor, displacements: int) -> torch.Tensor:
    """``c_k(x, y) = sum_c left(c, y, x) * right(c, y, x - k) / C`` for k = 0 .. displacements - 1:
    (N, C, H, W) x 2 -> (N, displacements, H, W), 0 where x - k falls left of the image."""
    n, c, h, w = left.shape
    out = left.new_zeros(n, displacements, h, w)
    for k in range(min(displacements, w)):
        out[:, k, :, k:] = (left[..., k:] * right[..., : w - k]).mean(1)
    return out


class DisparityNet(nn.Module):
    """``forward(x)``: (N, views * in_channels, H, W) in [0, 1] -> (N, 1, H, W) disparity of the
    first view in pixels; ``forward(x, scales=True)``: the list of the ``scales`` predictions,
    finest first, for inputs whose sides are multiples of :attr:`multiple`."""

    def __init__(self, cfg: DisparityNetConfig):
        super().__init__()
        widths = tuple(int(w) for w in cfg.widths)
        if cfg.act != "elu" and cfg.act.lower() not in ACT_NAMES:
            raise UserError(f"Received act={cfg.act!r}; expected elu or one of {', '.join(ACT_NAMES)}.")
        if cfg.input not in INPUTS:
            raise UserError(f"Received input={cfg.input!r}; expected one of {', '.join(INPUTS)}.")
        if len(widths) < 2 or any(w < 1 for w in widths):
            raise UserError(f"Received widths={cfg.widths!r}; expected at least two positive widths.")
        if not 1 <= cfg.scales <= len(widths) - 1:
            raise UserError(f"Received scales={cfg.scales!r}; expected 1 to {len(widths) - 1} (one per decoder level).")
        if not cfg.max_disp > 0:
            raise UserError(f"Received max_disp={cfg.max_disp!r}; expected a positive number of pixels.")
        self.cfg = cfg
        self.views = 1 if cfg.input == "left" else 2  # images the input holds, left first
        self.max_disp, self.num_scales = float(cfg.max_disp), cfg.scales
        self.multiple = 2 ** (len(widths) - 1)
        stem_in = cfg.in_channels * (2 if cfg.input == "stack" else 1)
        a = cfg.act
        self.stem = nn.Sequential(_conv(stem_in, widths[0], act=a), _conv(widths[0], widths[0], act=a))
        self.down = nn.ModuleList(
            nn.Sequential(_conv(widths[i - 1], widths[i], 2, a), _conv(widths[i], widths[i], act=a))
            for i in range(1, len(widths)))
        if cfg.input == "corr":  # displacements of the half-resolution features
            self.displacements = max(1, math.ceil(cfg.max_disp / 2))
            self.corr_fuse = _conv(widths[1] + self.displacements, widths[1], act=a)
        # decoder level i (size 1/2^i) from level i + 1
        self.up = nn.ModuleList(_conv(widths[i + 1], widths[i], act=a) for i in range(len(widths) - 1))
        self.fuse = nn.ModuleList(_conv(2 * widths[i] + (1 if i < cfg.scales - 1 else 0), widths[i], act=a)
                                  for i in range(len(widths) - 1))
        self.heads = nn.ModuleList(nn.Conv2d(widths[i], 1, 3, 1, 1) for i in range(cfg.scales))

    def _encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.cfg.input != "corr":
            feats = [self.stem(x)]
            for stage in self.down:
                feats.append(stage(feats[-1]))
            return feats
        c = self.cfg.in_channels
        both = self.stem(torch.cat([x[:, :c], x[:, c:2 * c]], 0))  # one pass for the two views
        half = self.down[0](both)
        n = len(x)
        corr = horizontal_correlation(half[:n], half[n:], self.displacements)
        feats = [both[:n], self.corr_fuse(torch.cat([half[:n], corr], 1))]
        for stage in self.down[1:]:
            feats.append(stage(feats[-1]))
        return feats

    def _pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = self._encode(x)
        y = feats[-1]
        disps: list[torch.Tensor] = []
        coarser = None  # the disparity of the level below, as a fraction of max_disp
        for i in range(len(feats) - 2, -1, -1):
            y = self.up[i](F.interpolate(y, scale_factor=2, mode="nearest"))
            parts = [y, feats[i]]
            if coarser is not None:
                parts.append(F.interpolate(coarser, scale_factor=2, mode="bilinear", align_corners=False))
            y = self.fuse[i](torch.cat(parts, 1))
            if i < self.num_scales:
                coarser = torch.sigmoid(self.heads[i](y))
                disps.append(coarser * (self.max_disp / 2 ** i))
        return disps[::-1]

    def forward(self, x: torch.Tensor, scales: bool = False):
        expected = self.views * self.cfg.in_channels
        if x.dim() != 4 or x.shape[1] != expected:
            raise UserError(f"disparity network received an input of shape {tuple(x.shape)}; expected "
                            f"(N, {expected}, H, W) ({self.views} view(s) of {self.cfg.in_channels} channels, "
                            f"input={self.cfg.input!r}).")
        h, w = x.shape[-2:]
        m = self.multiple
        if scales:
            if h % m or w % m:
                raise UserError(f"multi-scale output needs sides that are multiples of {m}, got {h}x{w}")
            return self._pyramid(x)
        ph, pw = -h % m, -w % m
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        return self._pyramid(x)[0][..., :h, :w]


def _create_disparity(variant: str, /, **kwargs) -> DisparityNet:
    cfg = build_config(DisparityNetConfig, variant, kwargs)
    cfg.widths = tuple(cfg.widths)
    return DisparityNet(cfg)


@register_model
def disparity(**kwargs) -> DisparityNet:
    """Disparity encoder-decoder (Garg et al. 2016); ``input`` = left, stack or corr."""
    return _create_disparity("disparity", **kwargs)


def config_dict(model: DisparityNet) -> dict:
    """The model's settings for ``model.json`` (JSON types)."""
    d = asdict(model.cfg)
    d["widths"] = list(d["widths"])
    return d
