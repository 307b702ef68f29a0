"""SqueezeNet (Iandola et al. 2016, "SqueezeNet: AlexNet-level accuracy with 50x fewer
parameters and <0.5MB model size"), versions 1.0 and 1.1."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fovea.models.base import Classifier
from fovea.models.registry import register_model
from fovea.nn.act import get_act
from fovea.nn.fire import Fire

# Fire modules as (in, squeeze, expand 1x1, expand 3x3); "M" is a 3x3 stride-2 max pool.
# 1.0 is the paper's Table 1; 1.1 (from the authors' repository) has a 3x3 stem with 64
# filters and pools earlier, for 2.4x less computation at the same accuracy.
FIRE_CFG: dict[str, tuple] = {
    "1_0": ("M", (96, 16, 64, 64), (128, 16, 64, 64), (128, 32, 128, 128), "M", (256, 32, 128, 128),
            (256, 48, 192, 192), (384, 48, 192, 192), (384, 64, 256, 256), "M", (512, 64, 256, 256)),
    "1_1": ("M", (64, 16, 64, 64), (128, 16, 64, 64), "M", (128, 32, 128, 128), (256, 32, 128, 128), "M",
            (256, 48, 192, 192), (384, 48, 192, 192), (384, 64, 256, 256), (512, 64, 256, 256)),
}
STEM: dict[str, tuple[int, int]] = {"1_0": (96, 7), "1_1": (64, 3)}  # conv1 filters, kernel (stride 2)
MIN_INPUT: dict[str, int] = {"1_0": 21, "1_1": 17}


@dataclass
class SqueezeNetConfig:
    num_classes: int = 1000
    in_channels: int = 3
    version: str = "1_0"  # "1_0" (the paper) or "1_1"
    dropout: float = 0.5  # before the final convolution (after fire9)
    act: str = "relu"
    norm: str | None = None  # None as in the paper; "bn" adds batch norm after every Fire convolution
    bypass: bool = False  # the paper's "simple bypass" (Sec. 6): residuals around the Fire modules whose width is kept


class SqueezeNet(Classifier):
    """SqueezeNet: a stride-2 convolution, eight Fire modules with three stride-2 max pools among
    them, and no fully connected layer: the classifier is dropout, a 1x1 convolution to the
    classes, ReLU and global average pooling. 1.25M parameters (1.0), 1.24M (1.1).

    Layer names are torchvision's (``features.N``, ``classifier.1``), so its state dicts load as
    they are. Max pools use ceil_mode, as in Caffe and torchvision.

    ``forward_head(x, pre_logits=True)`` returns the globally average-pooled fire9 features
    (512 per image), the input of the final convolution.
    """

    def __init__(self, cfg: SqueezeNetConfig):
        super().__init__()
        if cfg.version not in FIRE_CFG:
            raise ValueError(f"SqueezeNet version must be one of {', '.join(FIRE_CFG)}, got {cfg.version!r}")
        self.cfg = cfg
        self.torchvision_name = f"squeezenet{cfg.version}"
        self.min_input_size = MIN_INPUT[cfg.version]
        width, k = STEM[cfg.version]
        layers: list[nn.Module] = [nn.Conv2d(cfg.in_channels, width, k, stride=2), get_act(cfg.act, inplace=True)]
        self.feature_info = [dict(module="features.1", num_chs=width, reduction=2)]
        reduction = 2
        for item in FIRE_CFG[cfg.version]:
            if item == "M":
                if len(layers) > 2:  # a stage ends before each pool but the first
                    self.feature_info.append(dict(module=f"features.{len(layers) - 1}", num_chs=width,
                                                  reduction=reduction))
                layers.append(nn.MaxPool2d(3, stride=2, ceil_mode=True))
                reduction *= 2
                continue
            fire = Fire(*item, act=cfg.act, norm=cfg.norm, residual=cfg.bypass and item[0] == item[2] + item[3])
            layers.append(fire)
            width = fire.out_channels
        self.feature_info.append(dict(module=f"features.{len(layers) - 1}", num_chs=width, reduction=reduction))
        self.features = nn.Sequential(*layers)
        self.num_features = width
        self.num_classes = cfg.num_classes
        self.classifier = nn.Sequential(nn.Dropout(cfg.dropout), self._final_conv(cfg.num_classes),
                                        get_act(cfg.act, inplace=True), nn.AdaptiveAvgPool2d(1))
        self._init_weights()

    def _final_conv(self, num_classes: int) -> nn.Module:
        if not num_classes:
            return nn.Identity()
        conv = nn.Conv2d(self.num_features, num_classes, 1)
        nn.init.normal_(conv.weight, 0.0, 0.01)  # the final conv starts small, as in torchvision
        nn.init.zeros_(conv.bias)
        return conv

    def _init_weights(self) -> None:
        # torchvision: He-uniform (gain sqrt(2) on the fan-in, a = 0) for the Fire and stem
        # convolutions, biases zero; the final convolution N(0, 0.01) (set in _final_conv).
        for m in self.features.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)  # one clear error below min_input_size, naming the layer
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if pre_logits or not self.num_classes:
            return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return torch.flatten(self.classifier(x), 1)

    def get_classifier(self) -> nn.Module:
        return self.classifier[1]

    def reset_classifier(self, num_classes: int) -> None:
        """A fresh final 1x1 convolution for ``num_classes``; 0 leaves the pooled features."""
        self.classifier[1] = self._final_conv(num_classes)
        self.num_classes = self.cfg.num_classes = num_classes


def _create_squeezenet(variant: str, **kwargs) -> SqueezeNet:
    return SqueezeNet(SqueezeNetConfig(version=variant, **kwargs))


@register_model
def squeezenet1_0(**kwargs) -> SqueezeNet:
    """SqueezeNet 1.0 as in the paper's Table 1 (7x7 stem with 96 filters)."""
    return _create_squeezenet("1_0", **kwargs)


@register_model
def squeezenet1_1(**kwargs) -> SqueezeNet:
    """SqueezeNet 1.1: a 3x3 stem with 64 filters and earlier pooling, 2.4x cheaper than 1.0."""
    return _create_squeezenet("1_1", **kwargs)
