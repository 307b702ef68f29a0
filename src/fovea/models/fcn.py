"""Fully convolutional networks for semantic segmentation (Long, Shelhamer & Darrell 2015).

VGG-16's convolutional layers, then its fully connected layers turned into convolutions (fc6 a
7x7 convolution of 4096 channels, fc7 a 1x1 convolution of 4096 channels: the same weights,
reshaped, computing the classifier at every 32-pixel step), a 1x1 "score" convolution to the
classes, and transposed convolutions back to the input's resolution:

- FCN-32s: the stride-32 scores upsampled 32x in one step.
- FCN-16s: the scores upsampled 2x, added to a 1x1 score layer on pool4 (stride 16), and the
  sum upsampled 16x.
- FCN-8s: that sum upsampled 2x again, added to a score layer on pool3 (stride 8), and the sum
  upsampled 8x.

The 2x upsampling layers are initialized to bilinear interpolation and learned; the final
upsampling is fixed to bilinear interpolation (``learn_final_upsample=True`` lets it learn).
Score layers start at zero, as in the paper.

Any input size, including odd ones and ones not divisible by 32, gives an output of exactly the
input's height and width, by the paper's scheme: conv1_1 pads the input by 100 pixels, pools
round up (Caffe's ceil mode), the transposed convolutions have no padding, and every map is
cropped at a fixed offset that aligns it with the input. The offsets follow from mapping each
layer's output index o to the input coordinate of its centre (o*s - p + (k-1)/2 for a
convolution or pool, (o - (k-1)/2)/s for a transposed convolution): the 32x output's pixel u
lies at input pixel u - 19, so FCN-32s crops 19; the 2x-upsampled scores meet pool4's scores
at offset 5 and pool3's at offset 9; FCN-16s's 16x output crops 27 and FCN-8s's 8x output 31.
The 100-pixel pad also makes fc6's 7x7 window fit for inputs as small as 1x1.

``width`` scales VGG-16's convolution widths and ``fc_width`` sets fc6/fc7's, so that
``width=1/8, fc_width=256`` is a small FCN that trains on a CPU. The backbone can be loaded
from a fovea or torchvision VGG-16 state dict (``backbone="torchvision"``, a weights file, or a
state dict); fc6/fc7 come from ``classifier.0``/``classifier.3``, reshaped.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from fovea.errors import UserError
from fovea.models.base import build_config
from fovea.models.vgg import CFGS
from fovea.nn.init import he_init
from fovea.nn.norm import get_norm
from fovea.nn.upsample import BilinearUpsample

__all__ = ["FCN", "FCNConfig", "STRIDES", "fcn8s", "fcn16s", "fcn32s", "linear_to_conv", "vgg_fc_to_conv"]

STRIDES = (32, 16, 8)
INPUT_PAD = 100  # the paper's pad on conv1_1; the crop offsets below hold for this value only
# Crop offsets of each map against the one it is added to (see the module docstring).
_POOL4_OFFSET, _POOL3_OFFSET = 5, 9
_FINAL_OFFSET = {32: 19, 16: 27, 8: 31}


@dataclass
class FCNConfig:
    stride: int = 8  # output stride of the coarsest scores fused: 32 (FCN-32s), 16 or 8
    num_classes: int = 21  # PASCAL VOC: 20 classes and background
    in_channels: int = 3
    width: float = 1.0  # multiplier on VGG-16's convolution widths (64 ... 512)
    fc_width: int = 4096  # channels of fc6 and fc7
    dropout: float = 0.5  # after fc6 and fc7, as in VGG-16
    norm: str | None = None  # "bn" for a VGG-16-BN backbone; any name fovea.nn.get_norm knows
    learn_final_upsample: bool = False  # the paper fixes the last upsampling to bilinear
    score_init: str = "zeros"  # "zeros" (the paper) or "normal" (N(0, 0.01))


def linear_to_conv(linear: nn.Linear, in_channels: int, kernel_size: int) -> nn.Conv2d:
    """The convolution that computes ``linear`` at every kernel_size x kernel_size window: a
    Linear over a flattened (C, k, k) map is a k x k convolution with the weight reshaped to
    (out, C, k, k) (flattening order C, H, W, as ``torch.flatten`` of an NCHW map)."""
    expected = in_channels * kernel_size * kernel_size
    if linear.in_features != expected:
        raise UserError(f"Received a Linear with in_features={linear.in_features}; expected "
                        f"{in_channels}*{kernel_size}*{kernel_size}={expected} "
                        f"to make a {kernel_size}x{kernel_size} conv.")
    conv = nn.Conv2d(in_channels, linear.out_features, kernel_size, bias=linear.bias is not None)
    with torch.no_grad():
        conv.weight.copy_(linear.weight.reshape(conv.weight.shape))
        if linear.bias is not None:
            conv.bias.copy_(linear.bias)
    return conv


def vgg_fc_to_conv(state_dict: dict[str, torch.Tensor], in_channels: int = 512) -> dict[str, torch.Tensor]:
    """fc6/fc7 of a VGG state dict (``classifier.0``, ``classifier.3``, fovea's and torchvision's
    keys) as the weights of FCN's ``fc6`` (7x7) and ``fc7`` (1x1) convolutions."""
    out = {}
    for src, dst, k in (("classifier.0", "fc6", 7), ("classifier.3", "fc7", 1)):
        if f"{src}.weight" not in state_dict:
            raise UserError(f"VGG state dict lacks {src}.weight; expected a VGG-16 classifier's state dict")
        w = state_dict[f"{src}.weight"]
        c = in_channels if src == "classifier.0" else w.shape[1]
        if w.shape[1] != c * k * k:
            raise UserError(f"VGG {src}.weight has shape {tuple(w.shape)}; expected (*, {c * k * k}) "
                            f"= {c} channels x {k}x{k} for FCN's {dst}")
        out[f"{dst}.weight"] = w.reshape(w.shape[0], c, k, k)
        out[f"{dst}.bias"] = state_dict[f"{src}.bias"]
    return out


def _crop(x: torch.Tensor, offset: int, like: torch.Tensor | tuple[int, int]) -> torch.Tensor:
    h, w = like.shape[-2:] if isinstance(like, torch.Tensor) else like
    assert x.shape[-2] >= offset + h and x.shape[-1] >= offset + w, (tuple(x.shape), offset, h, w)
    return x[..., offset:offset + h, offset:offset + w]


class FCN(nn.Module):
    """FCN-32s, -16s or -8s (``cfg.stride``) on VGG-16; ``forward(x)`` gives (N, num_classes, H, W)
    class scores for an (N, C, H, W) input of any size.

    ``features`` is laid out as VGG-16's (``features.N``, the same keys as fovea's and
    torchvision's ``vgg16``/``vgg16_bn``), so a VGG state dict loads into it unchanged;
    ``backbone`` (``"torchvision"``, a weights file, or a VGG-16 state dict) loads those weights
    and fc6/fc7 at construction.
    """

    def __init__(self, cfg: FCNConfig, backbone: str | Path | dict | None = None):
        super().__init__()
        if cfg.stride not in STRIDES:
            raise UserError(f"Received stride={cfg.stride!r}; expected one of {STRIDES} (FCN-32s, -16s, -8s).")
        if cfg.num_classes < 1 or cfg.in_channels < 1:
            raise UserError(f"Received num_classes={cfg.num_classes}, in_channels={cfg.in_channels}; "
                            f"expected both >= 1.")
        if not cfg.width > 0 or cfg.fc_width < 1:
            raise UserError(f"Received width={cfg.width}, fc_width={cfg.fc_width}; expected width > 0, fc_width >= 1.")
        if cfg.score_init not in ("zeros", "normal"):
            raise UserError(f"Received score_init={cfg.score_init!r}; expected 'zeros' or 'normal'.")
        self.cfg = cfg
        layers: list[nn.Module] = []
        self.layer_names: dict[str, str] = {}
        self.feature_info: list[dict] = []
        c_in, stage, index = cfg.in_channels, 1, 0
        self._taps: dict[int, str] = {}  # index in features -> pool name, for pool3/pool4
        for v in CFGS["vgg16"]:
            if v == "M":
                # ceil mode, as Caffe's pooling, so every input keeps fc6's 7x7 window and the crops
                self._taps[len(layers)] = f"pool{stage}"
                self.layer_names[f"features.{len(layers)}"] = f"pool{stage}"
                self.feature_info.append(dict(module=f"features.{len(layers)}", num_chs=c_in, reduction=2**stage))
                layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
                stage, index = stage + 1, 0
                continue
            index += 1
            c_out = max(1, round(v * cfg.width))
            self.layer_names[f"features.{len(layers)}"] = f"conv{stage}_{index}"
            layers.append(nn.Conv2d(c_in, c_out, 3, padding=INPUT_PAD if not layers else 1))
            if cfg.norm not in (None, "none"):
                layers.append(get_norm(cfg.norm, c_out))
            layers.append(nn.ReLU())  # not in place, so hooks on conv outputs see them intact
            c_in = c_out
        self.features = nn.Sequential(*layers)
        pool3_ch, pool4_ch = self.feature_info[2]["num_chs"], self.feature_info[3]["num_chs"]
        self.fc6 = nn.Conv2d(c_in, cfg.fc_width, 7)
        self.fc7 = nn.Conv2d(cfg.fc_width, cfg.fc_width, 1)
        self.drop6, self.drop7 = nn.Dropout(cfg.dropout), nn.Dropout(cfg.dropout)
        self.score_fr = nn.Conv2d(cfg.fc_width, cfg.num_classes, 1)
        k = cfg.num_classes
        if cfg.stride <= 16:
            self.upscore2 = BilinearUpsample(k, 2, learnable=True, padding=0)
            self.score_pool4 = nn.Conv2d(pool4_ch, k, 1)
        if cfg.stride == 8:
            self.upscore_pool4 = BilinearUpsample(k, 2, learnable=True, padding=0)
            self.score_pool3 = nn.Conv2d(pool3_ch, k, 1)
        self.upscore = BilinearUpsample(k, cfg.stride, learnable=cfg.learn_final_upsample, padding=0)
        self.num_classes = k
        self._init_weights(cfg.score_init)
        if backbone is not None:
            self.load_backbone(backbone)

    def _init_weights(self, score_init: str) -> None:
        for name, m in self.named_modules():
            if isinstance(m, nn.Conv2d):
                if name.startswith("score"):
                    nn.init.normal_(m.weight, 0.0, 0.01) if score_init == "normal" else nn.init.zeros_(m.weight)
                    nn.init.zeros_(m.bias)
                elif name.startswith("fc"):
                    nn.init.normal_(m.weight, 0.0, 0.01)  # VGG's fully connected init
                    nn.init.zeros_(m.bias)
                else:
                    he_init(m)

    def load_backbone(self, source: str | Path | dict) -> "FCN":
        """Copy VGG-16's convolutions and fc6/fc7 (reshaped to convolutions) from ``source``:
        ``"torchvision"`` (its ImageNet weights, ``vgg16`` or ``vgg16_bn`` to match ``norm``),
        a weights file, or a state dict of a fovea or torchvision VGG-16."""
        from fovea.models.weights import read_weights_file, torchvision_state_dict

        if isinstance(source, dict):
            sd = source
        elif str(source) == "torchvision":
            if self.cfg.width != 1 or self.cfg.fc_width != 4096 or self.cfg.norm not in (None, "none", "bn"):
                raise UserError(f"torchvision's VGG-16 weights need width=1, fc_width=4096 and norm None or 'bn'; "
                                f"received width={self.cfg.width}, fc_width={self.cfg.fc_width}, "
                                f"norm={self.cfg.norm!r}")
            sd = torchvision_state_dict("vgg16_bn" if self.cfg.norm == "bn" else "vgg16")
        else:
            sd = read_weights_file(source)
        own = self.state_dict()
        new = {k: v for k, v in sd.items() if k.startswith("features.") and not k.endswith("num_batches_tracked")}
        wanted = [k for k in own if k.startswith("features.") and not k.endswith("num_batches_tracked")]
        missing = sorted(set(wanted) - set(new), key=wanted.index)
        if missing:
            raise UserError(f"VGG state dict lacks {len(missing)} backbone tensors, e.g. {missing[:3]}; "
                            f"expected a VGG-16{'-BN' if self.cfg.norm else ''} state dict")
        new.update(vgg_fc_to_conv(sd, in_channels=self.fc6.in_channels))
        for key, val in new.items():
            if key not in own or own[key].shape != val.shape:
                got = tuple(val.shape)
                raise UserError(f"VGG tensor {key} has shape {got}; this FCN expects "
                                f"{tuple(own[key].shape) if key in own else 'no such tensor'} (check width/fc_width)")
        self.load_state_dict(new, strict=False)
        return self

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """pool3, pool4 and fc7's output (after ReLU and dropout)."""
        taps: dict[str, torch.Tensor] = {}
        for i, layer in enumerate(self.features):
            x = layer(x)
            if self._taps.get(i) in ("pool3", "pool4"):
                taps[self._taps[i]] = x
        x = self.drop6(torch.relu(self.fc6(x)))
        taps["fc7"] = self.drop7(torch.relu(self.fc7(x)))
        return taps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.cfg.in_channels:
            raise UserError(f"Received an input of shape {tuple(x.shape)}; expected (N, {self.cfg.in_channels}, H, W).")
        feats = self.forward_features(x)
        score = self.score_fr(feats["fc7"])
        if self.cfg.stride <= 16:
            up = self.upscore2(score)
            score = up + _crop(self.score_pool4(feats["pool4"]), _POOL4_OFFSET, up)
        if self.cfg.stride == 8:
            up = self.upscore_pool4(score)
            score = up + _crop(self.score_pool3(feats["pool3"]), _POOL3_OFFSET, up)
        return _crop(self.upscore(score), _FINAL_OFFSET[self.cfg.stride], x)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in asdict(self.cfg).items())


def _create_fcn(variant: str, /, backbone: str | Path | dict | None = None, **kwargs) -> FCN:
    """``variant`` is "fcn32s", "fcn16s" or "fcn8s"; keyword arguments override FCNConfig fields."""
    cfg = build_config(FCNConfig, variant, kwargs, fixed=dict(stride=int(variant[3:-1])), also=("backbone",))
    return FCN(cfg, backbone=backbone)


def fcn32s(**kwargs) -> FCN:
    """FCN-32s: VGG-16's stride-32 scores upsampled 32x (a fixed bilinear kernel)."""
    return _create_fcn("fcn32s", **kwargs)


def fcn16s(**kwargs) -> FCN:
    """FCN-16s: stride-32 scores upsampled 2x plus pool4's scores, upsampled 16x."""
    return _create_fcn("fcn16s", **kwargs)


def fcn8s(**kwargs) -> FCN:
    """FCN-8s: FCN-16s's fused scores upsampled 2x plus pool3's scores, upsampled 8x."""
    return _create_fcn("fcn8s", **kwargs)
