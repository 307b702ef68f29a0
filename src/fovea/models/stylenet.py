"""Image transformation network for fast feed-forward style transfer (Johnson, Alahi & Fei-Fei
2016, "Perceptual Losses for Real-Time Style Transfer and Super-Resolution", supplementary
Table 1), with instance normalization (Ulyanov, Vedaldi & Lempitsky 2016, "Instance
Normalization: The Missing Ingredient for Fast Stylization").

Layout (``width`` = 32 as in the paper):

- 9x9 convolution, ``width`` channels, stride 1;
- two 3x3 convolutions of stride 2, ``2 * width`` and ``4 * width`` channels (down by 4);
- ``blocks`` residual blocks of two 3x3 convolutions at ``4 * width`` channels (5 in the paper);
- two upsampling stages to ``2 * width`` and ``width`` channels: nearest-neighbour upsampling
  by 2 then a 3x3 convolution (``upsample="nearest"``, the default: it avoids the checkerboard
  artefacts of transposed convolutions, Odena, Dumoulin & Olah 2016, which short CPU runs show
  plainly) or the paper's 3x3 fractionally strided convolution of stride 1/2
  (``upsample="deconv"``); both have the same parameters;
- 9x9 convolution to 3 channels and an output in [0, 1]: ``(tanh(y) + 1) / 2`` (the paper's
  scaled tanh, ``output="tanh"``) or ``sigmoid(y)``.

Every convolution but the last is followed by the norm (``"instance"`` or ``"bn"``) and a ReLU.
Padding is by reflection (the paper pads the input by 40 pixels and uses unpadded convolutions;
reflection inside each convolution keeps the size and avoids border artefacts the same way).
The network is fully convolutional: any input whose sides are multiples of 4 maps to an output
of the same size; other sides are reflection-padded up to a multiple of 4 and the output cropped
back (``pad_input=True``, the default), or refused (``pad_input=False``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fovea.errors import UserError
from fovea.models.base import build_config
from fovea.models.registry import register_model

__all__ = ["NORMS", "OUTPUTS", "UPSAMPLES", "StyleNet", "StyleNetConfig", "stylenet", "time_forward"]

NORMS = ("instance", "bn")
UPSAMPLES = ("deconv", "nearest")
OUTPUTS = ("tanh", "sigmoid")
MULTIPLE = 4  # two stride-2 convolutions


@dataclass
class StyleNetConfig:
    width: int = 32  # channels of the first convolution; the paper's 32 (then 64, 128)
    blocks: int = 5  # residual blocks
    norm: str = "instance"  # "instance" (Ulyanov et al. 2016) or "bn" (Johnson et al. 2016)
    upsample: str = "nearest"  # "nearest" (upsample + conv, no checkerboard) or "deconv" (the paper's)
    output: str = "tanh"  # "tanh": (tanh + 1) / 2; "sigmoid"
    pad_input: bool = True  # sides not a multiple of 4: reflection-pad and crop back (False: refuse)


def _norm(name: str, channels: int) -> nn.Module:
    if name == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    return nn.BatchNorm2d(channels)


class ConvLayer(nn.Sequential):
    """Reflection padding, convolution, then optionally norm and ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, norm: str | None = "instance",
                 relu: bool = True):
        layers: list[nn.Module] = [nn.ReflectionPad2d(kernel // 2), nn.Conv2d(cin, cout, kernel, stride)]
        if norm is not None:
            layers.append(_norm(norm, cout))
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class UpsampleLayer(nn.Sequential):
    """Upsampling by 2: a 3x3 transposed convolution of stride 2 (fractional stride 1/2), or
    nearest-neighbour upsampling followed by a reflection-padded 3x3 convolution; then norm, ReLU."""

    def __init__(self, cin: int, cout: int, mode: str, norm: str):
        if mode == "deconv":
            conv: list[nn.Module] = [nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1)]
        else:
            conv = [nn.Upsample(scale_factor=2, mode="nearest"), nn.ReflectionPad2d(1), nn.Conv2d(cin, cout, 3)]
        super().__init__(*conv, _norm(norm, cout), nn.ReLU(inplace=True))


class ResidualBlock(nn.Module):
    """``x + norm(conv(relu(norm(conv(x)))))``, no ReLU after the sum (Gross & Wilber 2016, as
    Johnson et al.'s supplementary material)."""

    def __init__(self, channels: int, norm: str):
        super().__init__()
        self.body = nn.Sequential(ConvLayer(channels, channels, 3, norm=norm),
                                  ConvLayer(channels, channels, 3, norm=norm, relu=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class StyleNet(nn.Module):
    """``forward(x)``: an RGB batch (N, 3, H, W) in [0, 1] -> its stylization (N, 3, H, W) in [0, 1]."""

    def __init__(self, cfg: StyleNetConfig):
        super().__init__()
        for key, value, allowed in (("norm", cfg.norm, NORMS), ("upsample", cfg.upsample, UPSAMPLES),
                                    ("output", cfg.output, OUTPUTS)):
            if value not in allowed:
                raise UserError(f"Received {key}={value!r}; expected one of {', '.join(allowed)}.")
        for key in ("width", "blocks"):
            value = getattr(cfg, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < (1 if key == "width" else 0):
                raise UserError(f"Received {key}={value!r}; expected an integer >= {1 if key == 'width' else 0}.")
        self.cfg = cfg
        w, norm = cfg.width, cfg.norm
        self.encoder = nn.Sequential(ConvLayer(3, w, 9, norm=norm), ConvLayer(w, 2 * w, 3, 2, norm=norm),
                                     ConvLayer(2 * w, 4 * w, 3, 2, norm=norm))
        self.residuals = nn.Sequential(*(ResidualBlock(4 * w, norm) for _ in range(cfg.blocks)))
        self.decoder = nn.Sequential(UpsampleLayer(4 * w, 2 * w, cfg.upsample, norm),
                                     UpsampleLayer(2 * w, w, cfg.upsample, norm),
                                     ConvLayer(w, 3, 9, norm=None, relu=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 3:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise UserError(f"StyleNet received an input of shape {shape}; expected (N, 3, H, W) RGB in [0, 1].")
        h, w = x.shape[-2:]
        ph, pw = -h % MULTIPLE, -w % MULTIPLE
        if ph or pw:
            if not self.cfg.pad_input:
                raise UserError(f"StyleNet received a {h}x{w} input; with pad_input=False both sides must be "
                                f"multiples of {MULTIPLE} (e.g. {h + ph}x{w + pw}).")
            if min(h, w) < 2:
                raise UserError(f"StyleNet received a {h}x{w} input; expected at least 2x2 pixels.")
            x = F.pad(x, (0, pw, 0, ph), mode="reflect" if min(h, w) > max(ph, pw) else "replicate")
        y = self.decoder(self.residuals(self.encoder(x)))
        y = (torch.tanh(y) + 1) / 2 if self.cfg.output == "tanh" else torch.sigmoid(y)
        return y[..., :h, :w]

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in asdict(self.cfg).items())


def _create_stylenet(variant: str, /, **kwargs) -> StyleNet:
    return StyleNet(build_config(StyleNetConfig, variant, kwargs))


@register_model
def stylenet(**kwargs) -> StyleNet:
    """Johnson et al.'s image transformation network (width 32: 1.68M parameters); keyword
    arguments override StyleNetConfig fields (``width=8`` for quick CPU runs)."""
    return _create_stylenet("stylenet", **kwargs)


def time_forward(model: nn.Module, size: int = 512, repeats: int = 5, warmup: int = 1,
                 device: str | torch.device = "cpu") -> float:
    """Median seconds of one no-grad forward of ``model`` (eval mode) on a (1, 3, size, size)
    image: how ``bench/style_transfer.py`` times a trained style network against Gatys steps."""
    import statistics
    import time

    model = model.to(device).eval()
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            if torch.device(device).type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            model(x)
            if torch.device(device).type == "cuda":
                torch.cuda.synchronize()
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    return statistics.median(times)
