"""FlowNet (Dosovitskiy et al. 2015, "FlowNet: Learning Optical Flow with Convolutional
Networks"): optical flow regressed end to end by a convolutional network, in two variants.

- FlowNetS ("simple"): the two frames stacked into one 6-channel input and a plain contracting
  network of ten convolutions (total stride 64).
- FlowNetC ("correlation"): two streams of three convolutions with shared weights, one per
  frame, fused by the correlation layer (:func:`correlation`) plus a 1x1 convolution of the
  first stream (``conv_redir``), then the same contracting tail as FlowNetS.

Both end in the refinement decoder: at each level an upconvolution of the coarser features is
concatenated with the contracting features of that resolution and with the coarser flow
prediction upsampled by a 4x4 stride-2 transposed convolution; a 3x3 convolution predicts the
flow of every level, from 1/64 (``flow6``) to 1/4 (``flow2``) of the input resolution.

Units and sizes. The prediction of a level is in pixels of that level's grid (a value of 1
at 1/4 resolution is 4 input pixels), so a flow field resized to another grid has its values
scaled by the ratio of the sizes (``fovea.losses.flow.resize_flow``). Inputs of any size are
padded on the right and bottom (replicate) to a multiple of 64 and the results cropped back:

- in training mode ``forward`` returns the five predictions, finest first
  (flow2, flow3, flow4, flow5, flow6), level l cropped to ceil(H / 2^l) x ceil(W / 2^l), which
  is what ``multiscale_epe`` takes;
- in eval mode it returns flow2 upsampled bilinearly to the (padded) input size, multiplied by
  4, and cropped to (B, 2, H, W): flow in input pixels, u to the right, v downwards.

``width`` multiplies every channel count (1.0 = the paper's 64 ... 1024), so a small network
trains on a CPU; the correlation's displacement range does not depend on it.

Layer names follow the authors' release (conv1 ... conv6_1, deconv5 ... deconv2,
predict_flow6 ... predict_flow2, upsampled_flow6_to_5 ...). As there, FlowNetS has a conv6_1
after conv6, and every convolution but the flow predictors is followed by a leaky ReLU with
slope 0.1. FlowNetC's correlation uses k = 0 (single-pixel patches), d = 20, s1 = 1, s2 = 2
on conv3 features (stride 8): 21 x 21 = 441 displacement channels, as in the paper.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fovea.errors import UserError

__all__ = [
    "Correlation", "FlowNet", "FlowNetC", "FlowNetConfig", "FlowNetS", "FlowRefinement", "build_flownet",
    "correlation", "correlation_channels", "flownetc", "flownets",
]

TOTAL_STRIDE = 64  # six stride-2 convolutions
FINEST_LEVEL = 2  # flow2 is at 1/4 resolution
NUM_LEVELS = 5  # flow2 ... flow6


# ---------------------------------------------------------------------------------------------
# The correlation layer


def correlation_channels(max_displacement: int, stride2: int = 1) -> int:
    """Output channels of the correlation layer: (2 * (d // s2) + 1)^2."""
    return (2 * (max_displacement // stride2) + 1) ** 2


def correlation(f1: Tensor, f2: Tensor, max_displacement: int, patch_radius: int = 0,
                stride1: int = 1, stride2: int = 1) -> Tensor:
    """The FlowNetC correlation of two feature maps (Dosovitskiy et al. 2015, eq. 1).

    For a position x1 of ``f1`` and a displacement o2 = s2 * (j, i), |i|, |j| <= d // s2::

        c(x1, x1 + o2) = 1 / (C * K^2) * sum_{o in [-k, k]^2} <f1(x1 + o), f2(x1 + o2 + o)>

    with k = ``patch_radius`` (patch size K = 2k + 1; k = 0 compares single pixels, as in the
    paper's FlowNetC), d = ``max_displacement``, s1 = ``stride1`` (x1 runs over every s1-th
    row and column from 0) and s2 = ``stride2``. Both maps are zero outside the image.

    Normalization: the sum is divided by the number of summed products, C * K^2, as in the
    Caffe layer of the FlowNet release. The output then has the scale of one feature product
    whatever the channel count or patch size, so a narrower network (``width``) or a bigger
    patch does not change the range of what the next convolution sees.

    f1, f2: (B, C, H, W). Returns (B, (2 * (d // s2) + 1)^2, ceil(H / s1), ceil(W / s1)); the
    channel of displacement (dy, dx) = s2 * (j, i) is (j + r) * (2r + 1) + (i + r), r = d // s2
    (row-major, dx fastest). Computed by shifting ``f2`` over the displacements and multiplying
    (one (B, C, H, W) product at a time, so memory stays at the size of the output), then a
    box filter over the patch with stride s1.
    """
    if f1.dim() != 4 or f1.shape != f2.shape:
        raise ValueError(f"correlation needs two (B, C, H, W) maps of the same shape, "
                         f"got {tuple(f1.shape)} and {tuple(f2.shape)}")
    if max_displacement < 0 or patch_radius < 0 or stride1 < 1 or stride2 < 1:
        raise ValueError(f"correlation needs max_displacement >= 0, patch_radius >= 0 and strides >= 1, got "
                         f"d={max_displacement}, k={patch_radius}, s1={stride1}, s2={stride2}")
    channels, height, width = f1.shape[1:]
    r = max_displacement // stride2
    reach = r * stride2  # the largest displacement actually compared
    f2p = F.pad(f2, (reach, reach, reach, reach))
    # With single-pixel patches only every s1-th position is needed: stride before multiplying.
    step = stride1 if patch_radius == 0 else 1
    a = f1[:, :, ::step, ::step]
    out = []
    for j in range(-r, r + 1):
        y0 = reach + j * stride2
        for i in range(-r, r + 1):
            x0 = reach + i * stride2
            b = f2p[:, :, y0:y0 + height:step, x0:x0 + width:step]
            out.append((a * b).sum(1))
    corr = torch.stack(out, 1) / channels
    if patch_radius > 0:  # mean over the K x K patch, zeros outside (count_include_pad), sampled every s1
        corr = F.avg_pool2d(corr, 2 * patch_radius + 1, stride=stride1, padding=patch_radius,
                            count_include_pad=True)
    return corr


class Correlation(nn.Module):
    """The correlation layer as a module; see :func:`correlation`. No parameters."""

    def __init__(self, max_displacement: int = 20, patch_radius: int = 0, stride1: int = 1, stride2: int = 2):
        super().__init__()
        self.max_displacement, self.patch_radius = max_displacement, patch_radius
        self.stride1, self.stride2 = stride1, stride2
        self.out_channels = correlation_channels(max_displacement, stride2)

    def forward(self, f1: Tensor, f2: Tensor) -> Tensor:
        return correlation(f1, f2, self.max_displacement, self.patch_radius, self.stride1, self.stride2)

    def extra_repr(self) -> str:
        return (f"max_displacement={self.max_displacement}, patch_radius={self.patch_radius}, "
                f"stride1={self.stride1}, stride2={self.stride2}")


# ---------------------------------------------------------------------------------------------
# Blocks


def _conv(cin: int, cout: int, k: int, stride: int = 1, slope: float = 0.1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2), nn.LeakyReLU(slope, inplace=True))


def _deconv(cin: int, cout: int, slope: float = 0.1) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1), nn.LeakyReLU(slope, inplace=True))


def _predict_flow(cin: int) -> nn.Conv2d:
    return nn.Conv2d(cin, 2, 3, padding=1)


def _upsample_flow() -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(2, 2, 4, stride=2, padding=1, bias=False)


class FlowRefinement(nn.Module):
    """The FlowNet refinement (expanding) part. Takes the contracting features at strides
    4, 8, 16, 32, 64 and returns the flow predictions at those strides, finest first.

    At level l (from 5 down to 2): concat_l = [features_l, deconv_l(concat_{l+1}),
    upsampled_flow(flow_{l+1})] and flow_l = predict_flow_l(concat_l), with concat_6 = features_6.
    """

    def __init__(self, feature_channels: tuple[int, int, int, int, int], deconv_channels: tuple[int, int, int, int],
                 slope: float = 0.1):
        super().__init__()
        c2, c3, c4, c5, c6 = feature_channels
        d2, d3, d4, d5 = deconv_channels
        self.predict_flow6 = _predict_flow(c6)
        cin = c6
        for level, c, d in ((5, c5, d5), (4, c4, d4), (3, c3, d3), (2, c2, d2)):
            setattr(self, f"deconv{level}", _deconv(cin, d, slope))
            setattr(self, f"upsampled_flow{level + 1}_to_{level}", _upsample_flow())
            cin = c + d + 2
            setattr(self, f"predict_flow{level}", _predict_flow(cin))

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        x = features[-1]
        flow = self.predict_flow6(x)
        flows = [flow]
        for level, feat in zip((5, 4, 3, 2), features[-2::-1]):
            up_feat = getattr(self, f"deconv{level}")(x)
            up_flow = getattr(self, f"upsampled_flow{level + 1}_to_{level}")(flow)
            x = torch.cat([feat, up_feat, up_flow], 1)
            flow = getattr(self, f"predict_flow{level}")(x)
            flows.append(flow)
        return flows[::-1]


# ---------------------------------------------------------------------------------------------
# The networks


@dataclass
class FlowNetConfig:
    variant: str = "s"  # "s" (stacked frames) or "c" (two streams and a correlation layer)
    in_channels: int = 3  # per frame
    width: float = 1.0  # multiplies every channel count; 1.0 = the paper's
    slope: float = 0.1  # of the leaky ReLUs
    # FlowNetC's correlation layer (the paper's k = 0, d = 20, s1 = 1, s2 = 2)
    max_displacement: int = 20
    patch_radius: int = 0
    stride1: int = 1
    stride2: int = 2


class FlowNet(nn.Module, ABC):
    """What FlowNetS and FlowNetC share: input checks, padding to a multiple of 64, the
    refinement decoder and the output convention (module docstring)."""

    def __init__(self, cfg: FlowNetConfig):
        super().__init__()
        if not cfg.width > 0:
            raise UserError(f"Received width={cfg.width!r}, expected a positive channel multiplier.")
        self.cfg = cfg

    def ch(self, c: int) -> int:
        """A channel count of the paper scaled by ``width`` (at least 2)."""
        return max(2, round(c * self.cfg.width))

    def _build_decoder(self, feature_channels: tuple[int, int, int, int, int]) -> None:
        self.decoder = FlowRefinement(feature_channels, tuple(self.ch(c) for c in (64, 128, 256, 512)), self.cfg.slope)

    def _init_weights(self) -> None:
        # MSRA initialization, as in the FlowNet release, with the leaky slope.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, a=self.cfg.slope, nonlinearity="leaky_relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @abstractmethod
    def contracting(self, img1: Tensor, img2: Tensor) -> list[Tensor]:
        """Features at strides 4, 8, 16, 32 and 64 of inputs whose sides are multiples of 64."""

    def forward(self, img1: Tensor, img2: Tensor | None = None) -> Tensor | list[Tensor]:
        """``img1`` and ``img2``: (B, C, H, W) each, or ``img1`` alone as the (B, 2C, H, W) stack."""
        img1, img2 = self._split(img1, img2)
        h, w = img1.shape[-2:]
        ph, pw = -h % TOTAL_STRIDE, -w % TOTAL_STRIDE
        if ph or pw:
            img1 = F.pad(img1, (0, pw, 0, ph), mode="replicate")
            img2 = F.pad(img2, (0, pw, 0, ph), mode="replicate")
        flows = self.decoder(self.contracting(img1, img2))
        if self.training:
            return [f[..., :math.ceil(h / 2 ** lv), :math.ceil(w / 2 ** lv)]
                    for lv, f in enumerate(flows, start=FINEST_LEVEL)]
        factor = 2 ** FINEST_LEVEL
        full = F.interpolate(flows[0], scale_factor=factor, mode="bilinear", align_corners=False) * factor
        return full[..., :h, :w]

    def _split(self, img1: Tensor, img2: Tensor | None) -> tuple[Tensor, Tensor]:
        c = self.cfg.in_channels
        if img2 is None:
            if img1.dim() != 4 or img1.shape[1] != 2 * c:
                raise UserError(f"Received an input of shape {tuple(img1.shape)}, expected (B, {2 * c}, H, W): "
                                f"two {c}-channel frames stacked, or the two frames as two arguments.")
            return img1[:, :c], img1[:, c:]
        if img1.dim() != 4 or img1.shape[1] != c or img1.shape != img2.shape:
            raise UserError(f"Received frames of shapes {tuple(img1.shape)} and {tuple(img2.shape)}, "
                            f"expected two (B, {c}, H, W) tensors of the same shape.")
        return img1, img2


class FlowNetS(FlowNet):
    """FlowNetS: the two frames stacked into one 2C-channel input of a plain contracting network."""

    def __init__(self, cfg: FlowNetConfig):
        super().__init__(cfg)
        ch, s = self.ch, cfg.slope
        self.conv1 = _conv(2 * cfg.in_channels, ch(64), 7, 2, s)
        self.conv2 = _conv(ch(64), ch(128), 5, 2, s)
        self.conv3 = _conv(ch(128), ch(256), 5, 2, s)
        self.conv3_1 = _conv(ch(256), ch(256), 3, 1, s)
        _build_tail(self, s)
        self._build_decoder((ch(128), ch(256), ch(512), ch(512), ch(1024)))
        self._init_weights()

    def contracting(self, img1: Tensor, img2: Tensor) -> list[Tensor]:
        c2 = self.conv2(self.conv1(torch.cat([img1, img2], 1)))
        c3 = self.conv3_1(self.conv3(c2))
        return [c2, c3, *_tail(self, c3)]


class FlowNetC(FlowNet):
    """FlowNetC: conv1-conv3 applied to each frame with shared weights, the correlation of the
    two conv3 maps (leaky ReLU) concatenated with ``conv_redir`` (1x1) of the first, then conv3_1
    and the FlowNetS tail. The decoder takes the first frame's conv2 features at stride 4."""

    def __init__(self, cfg: FlowNetConfig):
        super().__init__(cfg)
        if cfg.stride1 != 1:
            raise UserError(f"Received stride1={cfg.stride1}: FlowNetC concatenates the correlation with "
                            "full-resolution conv3 features, so it needs stride1=1.")
        ch, s = self.ch, cfg.slope
        self.conv1 = _conv(cfg.in_channels, ch(64), 7, 2, s)
        self.conv2 = _conv(ch(64), ch(128), 5, 2, s)
        self.conv3 = _conv(ch(128), ch(256), 5, 2, s)
        self.conv_redir = _conv(ch(256), ch(32), 1, 1, s)
        self.corr = Correlation(cfg.max_displacement, cfg.patch_radius, cfg.stride1, cfg.stride2)
        self.corr_act = nn.LeakyReLU(s, inplace=True)
        self.conv3_1 = _conv(ch(32) + self.corr.out_channels, ch(256), 3, 1, s)
        _build_tail(self, s)
        self._build_decoder((ch(128), ch(256), ch(512), ch(512), ch(1024)))
        self._init_weights()

    def contracting(self, img1: Tensor, img2: Tensor) -> list[Tensor]:
        # One pass of the shared stream over both frames at once.
        c2 = self.conv2(self.conv1(torch.cat([img1, img2], 0)))
        c3a, c3b = self.conv3(c2).chunk(2, 0)
        c2a = c2[: img1.shape[0]]
        corr = self.corr_act(self.corr(c3a, c3b))
        c3 = self.conv3_1(torch.cat([self.conv_redir(c3a), corr], 1))
        return [c2a, c3, *_tail(self, c3)]


def _build_tail(net: FlowNet, slope: float) -> None:
    """conv4 ... conv6_1, shared by both variants."""
    ch = net.ch
    net.conv4 = _conv(ch(256), ch(512), 3, 2, slope)
    net.conv4_1 = _conv(ch(512), ch(512), 3, 1, slope)
    net.conv5 = _conv(ch(512), ch(512), 3, 2, slope)
    net.conv5_1 = _conv(ch(512), ch(512), 3, 1, slope)
    net.conv6 = _conv(ch(512), ch(1024), 3, 2, slope)
    net.conv6_1 = _conv(ch(1024), ch(1024), 3, 1, slope)


def _tail(net: FlowNet, c3: Tensor) -> list[Tensor]:
    c4 = net.conv4_1(net.conv4(c3))
    c5 = net.conv5_1(net.conv5(c4))
    c6 = net.conv6_1(net.conv6(c5))
    return [c4, c5, c6]


_VARIANTS = {"s": FlowNetS, "c": FlowNetC}


def build_flownet(variant: str = "s", **kwargs) -> FlowNet:
    """A FlowNetS (``"s"``) or FlowNetC (``"c"``); keyword arguments go to :class:`FlowNetConfig`."""
    key = variant.lower().removeprefix("flownet")
    if key not in _VARIANTS:
        raise UserError(f"Received variant={variant!r}, expected one of 's' (FlowNetS), 'c' (FlowNetC).")
    return _VARIANTS[key](FlowNetConfig(variant=key, **kwargs))


def flownets(**kwargs) -> FlowNetS:
    """FlowNetS: the two frames stacked into 6 channels (the paper's widths at ``width=1.0``)."""
    return build_flownet("s", **kwargs)


def flownetc(**kwargs) -> FlowNetC:
    """FlowNetC: two shared streams fused by the correlation layer (k=0, d=20, s1=1, s2=2)."""
    return build_flownet("c", **kwargs)
