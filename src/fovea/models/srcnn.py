"""Image restoration networks: SRCNN for super-resolution and DnCNN for denoising.

SRCNN (Dong, Loy, He & Tang 2014, "Learning a deep convolutional network for image
super-resolution"; TPAMI 2016) maps a bicubic-upscaled low-resolution image to the
high-resolution one with three convolutions read as patch extraction, non-linear mapping and
reconstruction: the 9-1-5 net is conv 9x9 -> 64, ReLU, conv 1x1 -> 32, ReLU, conv 5x5 -> 1 on
the luminance (Y) channel of BT.601 YCbCr (8,129 parameters); Cb and Cr are upscaled by bicubic
interpolation alone. The paper trains with unpadded ("valid") convolutions, so the output is
12 pixels smaller than the input (``f1 + f2 + f3 - 3``) and is compared with the centre of the
target; ``padding="same"`` (the default here) zero-pads each convolution to keep the size.
Weights start from N(0, 0.001^2) and biases from 0, as in the paper.

DnCNN (Zhang, Zuo, Chen, Meng & Zhang 2017, "Beyond a Gaussian denoiser: residual learning of
deep CNN for image denoising") has ``depth`` 3x3 convolutions of ``width`` channels: conv+ReLU,
then ``depth - 2`` conv+BN+ReLU, then a conv back to the image channels. It predicts the noise
residual v = y - x and returns the denoised image ``y - v`` (residual learning). The paper uses
depth 17 for a known noise level and 20 for blind denoising, width 64, and He initialization.
The middle convolutions carry no bias, which their batch norm's shift would make redundant.
``zero_init_last=True`` zeroes the last convolution so training starts from the identity map.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fovea.data.color import rgb_to_ycbcr, ycbcr_to_rgb
from fovea.errors import UserError
from fovea.models.base import build_config
from fovea.nn.init import he_init
from fovea.nn.norm import get_norm, has_norm

__all__ = ["PADDINGS", "DnCNN", "DnCNNConfig", "SRCNN", "SRCNNConfig", "dncnn", "srcnn", "srcnn_valid",
           "super_resolve_rgb"]

PADDINGS = ("same", "valid")


def _check_positive(**values) -> None:
    bad = {k: v for k, v in values.items() if not isinstance(v, int) or isinstance(v, bool) or v < 1}
    if bad:
        got = ", ".join(f"{k}={v!r}" for k, v in bad.items())
        raise UserError(f"Received {got}; expected integers >= 1.")


def _check_image_batch(x: torch.Tensor, channels: int, model: str) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != channels:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise UserError(f"{model} received an input of shape {shape}; expected (N, {channels}, H, W).")


@dataclass
class SRCNNConfig:
    in_channels: int = 1  # the Y channel; 3 for the paper's RGB variant
    kernels: tuple[int, int, int] = (9, 1, 5)  # f1, f2, f3: the 9-1-5 net
    widths: tuple[int, int] = (64, 32)  # n1, n2
    padding: str = "same"  # "same" (zero padding) or "valid" (the paper: output smaller by f1 + f2 + f3 - 3)
    init_std: float = 1e-3  # the paper's N(0, 0.001) weights


class SRCNN(nn.Module):
    """SRCNN; ``forward(x)`` maps a bicubic-upscaled (N, C, H, W) image to (N, C, H', W'), H' = H
    for ``padding="same"`` and H' = H - margin * 2 for ``padding="valid"``."""

    def __init__(self, cfg: SRCNNConfig):
        super().__init__()
        if cfg.padding not in PADDINGS:
            raise UserError(f"Received padding={cfg.padding!r}; expected one of {', '.join(PADDINGS)}.")
        kernels, widths = tuple(cfg.kernels), tuple(cfg.widths)
        if len(kernels) != 3 or len(widths) != 2:
            raise UserError(f"Received kernels={cfg.kernels!r}, widths={cfg.widths!r}; expected three kernel sizes "
                            f"(f1, f2, f3) and two widths (n1, n2), e.g. (9, 1, 5) and (64, 32).")
        _check_positive(in_channels=cfg.in_channels, f1=kernels[0], f2=kernels[1], f3=kernels[2],
                        n1=widths[0], n2=widths[1])
        if cfg.padding == "same" and any(k % 2 == 0 for k in kernels):
            raise UserError(f"Received kernels={kernels} with padding='same'; expected odd kernel sizes.")
        if not cfg.init_std > 0:
            raise UserError(f"Received init_std={cfg.init_std!r}; expected a standard deviation > 0.")
        self.cfg = cfg
        pad = [k // 2 if cfg.padding == "same" else 0 for k in kernels]
        channels = (cfg.in_channels, *widths, cfg.in_channels)
        self.patch_extraction = nn.Conv2d(channels[0], channels[1], kernels[0], padding=pad[0])
        self.mapping = nn.Conv2d(channels[1], channels[2], kernels[1], padding=pad[1])
        self.reconstruction = nn.Conv2d(channels[2], channels[3], kernels[2], padding=pad[2])
        for conv in (self.patch_extraction, self.mapping, self.reconstruction):
            nn.init.normal_(conv.weight, 0.0, cfg.init_std)
            nn.init.zeros_(conv.bias)

    @property
    def margin(self) -> int:
        """Pixels lost on each side by a valid SRCNN (6 for 9-1-5); 0 for same padding."""
        return 0 if self.cfg.padding == "same" else sum(k - 1 for k in self.cfg.kernels) // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_image_batch(x, self.cfg.in_channels, "SRCNN")
        smallest = 2 * self.margin + 1
        if min(x.shape[-2:]) < smallest:
            raise UserError(f"SRCNN received an input of size {tuple(x.shape[-2:])}; with padding='valid' "
                            f"both sides must be at least {smallest}.")
        x = F.relu(self.patch_extraction(x))
        x = F.relu(self.mapping(x))
        return self.reconstruction(x)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in asdict(self.cfg).items())


@dataclass
class DnCNNConfig:
    in_channels: int = 1  # grey-level images; 3 for colour (CDnCNN)
    depth: int = 17  # convolutions; the paper uses 17 for a known noise level, 20 for blind denoising
    width: int = 64  # channels of the hidden convolutions
    norm: str | None = "bn"  # after each middle convolution
    zero_init_last: bool = False  # start as the identity (residual 0) instead of the paper's He init of the last conv


class DnCNN(nn.Module):
    """DnCNN; ``forward(noisy)`` returns the denoised image ``noisy - residual(noisy)`` of the
    input's shape, and ``residual(noisy)`` the predicted noise."""

    def __init__(self, cfg: DnCNNConfig):
        super().__init__()
        _check_positive(in_channels=cfg.in_channels, width=cfg.width)
        if not isinstance(cfg.depth, int) or isinstance(cfg.depth, bool) or cfg.depth < 2:
            raise UserError(f"Received depth={cfg.depth!r}; expected an integer >= 2 (the paper uses 17 or 20).")
        self.cfg = cfg
        bias = not has_norm(cfg.norm)
        layers: list[nn.Module] = [nn.Conv2d(cfg.in_channels, cfg.width, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(cfg.depth - 2):
            layers += [nn.Conv2d(cfg.width, cfg.width, 3, padding=1, bias=bias), get_norm(cfg.norm, cfg.width),
                       nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(cfg.width, cfg.in_channels, 3, padding=1))
        self.body = nn.Sequential(*layers)
        he_init(self)
        if cfg.zero_init_last:
            # a He-initialized last conv predicts a residual of variance ~1, far above the noise
            # (e.g. (25/255)^2); from zero the net denoises after tens of steps instead of thousands
            nn.init.zeros_(self.body[-1].weight)

    def residual(self, noisy: torch.Tensor) -> torch.Tensor:
        _check_image_batch(noisy, self.cfg.in_channels, "DnCNN")
        return self.body(noisy)

    def forward(self, noisy: torch.Tensor) -> torch.Tensor:
        return noisy - self.residual(noisy)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in asdict(self.cfg).items())


@torch.no_grad()
def super_resolve_rgb(model: SRCNN, rgb: torch.Tensor, scale: int) -> torch.Tensor:
    """Upscale a low-resolution RGB image in [0, 1], (N, 3, h, w) or (3, h, w), by ``scale`` the
    SRCNN way: bicubic upscaling, then the model on the Y channel while Cb and Cr keep their
    bicubic values. A valid-padding model's output is placed over the centre of the bicubic Y.
    Returns RGB of size (h * scale, w * scale), clamped to [0, 1]."""
    if not isinstance(scale, int) or isinstance(scale, bool) or scale < 1:
        raise UserError(f"Received scale={scale!r}; expected an integer upscaling factor >= 1.")
    in_channels = getattr(getattr(model, "cfg", None), "in_channels", None)
    if in_channels != 1:
        raise UserError(f"super_resolve_rgb needs a luminance SRCNN (in_channels=1); received "
                        f"{type(model).__name__} with in_channels={in_channels}.")
    squeeze = isinstance(rgb, torch.Tensor) and rgb.dim() == 3
    x = rgb[None] if squeeze else rgb
    _check_image_batch(x, 3, "super_resolve_rgb")
    up = F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False).clamp(0, 1)
    ycbcr = rgb_to_ycbcr(up)
    y = model(ycbcr[:, :1])
    m = (ycbcr.shape[-2] - y.shape[-2]) // 2, (ycbcr.shape[-1] - y.shape[-1]) // 2
    ycbcr[:, :1, m[0]:m[0] + y.shape[-2], m[1]:m[1] + y.shape[-1]] = y
    out = ycbcr_to_rgb(ycbcr).clamp(0, 1)
    return out[0] if squeeze else out


def _create_srcnn(variant: str, /, **kwargs) -> SRCNN:
    """``variant`` is "srcnn" (same padding) or "srcnn-valid"; keyword arguments override
    SRCNNConfig fields."""
    return SRCNN(build_config(SRCNNConfig, variant, kwargs,
                              fixed=dict(padding="valid" if variant == "srcnn-valid" else "same")))


def srcnn(**kwargs) -> SRCNN:
    """SRCNN 9-1-5 with same padding: output size = input size (8,129 parameters on Y)."""
    return _create_srcnn("srcnn", **kwargs)


def srcnn_valid(**kwargs) -> SRCNN:
    """SRCNN 9-1-5 as published: unpadded convolutions, output 12 pixels smaller than the input."""
    return _create_srcnn("srcnn-valid", **kwargs)


def dncnn(**kwargs) -> DnCNN:
    """DnCNN-S: depth 17, width 64, batch norm, residual learning (556,097 parameters on grey
    images); keyword arguments override DnCNNConfig fields."""
    return DnCNN(build_config(DnCNNConfig, "dncnn", kwargs))
