"""ResNet (He et al. 2015, "Deep Residual Learning for Image Recognition"): the ImageNet
ResNet-18/34/50/101/152, the CIFAR-10 ResNet-20/32/44/56/110 of the paper's section 4.2, and
pre-activation ResNets (He et al. 2016, "Identity Mappings in Deep Residual Networks").

The ImageNet models have torchvision's module names, so ``torchvision.models.resnet50()``'s
state dict loads as it is (``create_model("resnet50", weights="torchvision")``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fovea.models.base import Classifier, same_architecture
from fovea.models.registry import register_model
from fovea.nn.act import get_act
from fovea.nn.init import he_init
from fovea.nn.norm import get_norm
from fovea.nn.residual import SHORTCUTS, BasicBlock, Bottleneck, PreActBasicBlock

BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck, "preact_basic": PreActBasicBlock}
STEMS = ("imagenet", "cifar")


@dataclass
class ResNetConfig:
    block: str = "basic"  # "basic", "bottleneck" or "preact_basic"
    layers: tuple[int, ...] = (2, 2, 2, 2)  # blocks per stage
    widths: tuple[int, ...] = (64, 128, 256, 512)  # 3x3 width per stage (bottleneck output is 4x); the stem has widths[0]
    stem: str = "imagenet"  # "imagenet": 7x7/2 conv + 3x3/2 max pool; "cifar": 3x3/1 conv, no pooling
    shortcut: str = "B"  # "A" zero-pad, "B" project when the shape changes, "C" project everywhere
    norm: str | None = "bn"
    act: str = "relu"
    num_classes: int = 1000
    in_channels: int = 3
    bottleneck_stride: str = "3x3"  # which bottleneck conv strides: "3x3" (torchvision) or "1x1" (the 2015 paper)
    zero_init_residual: bool = False  # start each block's last norm scale at 0 (Goyal et al. 2017)
    head_drop_rate: float = 0.0  # dropout before the fc layer

    def __post_init__(self):
        self.layers, self.widths = tuple(self.layers), tuple(self.widths)  # JSON gives lists


# Settings that change the architecture, so weights made for one do not fit another.
_HEAD_ONLY = ("num_classes", "in_channels", "zero_init_residual", "head_drop_rate")


class ResNet(Classifier):
    """Stem, then stages ``layer1``..``layerN`` of residual blocks (the first block of every
    stage after the first halves the resolution and the shortcut adapts the width), global
    average pooling and a fully connected layer. Pre-activation networks end their last stage
    with norm-act (``final_bn``, ``final_act``) since their blocks end with a convolution.

    With the ImageNet stem, a pre-activation net keeps the stem's norm-act, so the first
    block's own norm-act follows it (the 2016 paper's code drops that one; it is one extra
    norm layer and gives the same family of functions)."""

    torchvision_name: str | None = None

    def __init__(self, cfg: ResNetConfig):
        super().__init__()
        if cfg.block not in BLOCKS:
            raise ValueError(f"ResNet block must be one of {', '.join(BLOCKS)}, got {cfg.block!r}")
        if cfg.stem not in STEMS:
            raise ValueError(f"ResNet stem must be one of {', '.join(STEMS)}, got {cfg.stem!r}")
        if cfg.shortcut not in SHORTCUTS:
            raise ValueError(f"ResNet shortcut must be one of {', '.join(SHORTCUTS)}, got {cfg.shortcut!r}")
        if len(cfg.layers) != len(cfg.widths) or not cfg.layers or min(cfg.layers) < 1:
            raise ValueError(f"ResNet needs one width per stage and at least one block per stage; "
                             f"got layers={cfg.layers}, widths={cfg.widths}")
        self.cfg = cfg
        self.canonical_size = 32 if cfg.stem == "cifar" else 224
        block = BLOCKS[cfg.block]
        preact = block is PreActBasicBlock
        has_norm = cfg.norm not in (None, "none")
        width = cfg.widths[0]

        if cfg.stem == "imagenet":
            self.conv1 = nn.Conv2d(cfg.in_channels, width, 7, stride=2, padding=3, bias=not has_norm)
            self.bn1 = get_norm(cfg.norm, width)
            self.relu = get_act(cfg.act, inplace=True)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
            reduction = 4
        else:
            self.conv1 = nn.Conv2d(cfg.in_channels, width, 3, padding=1, bias=not has_norm)
            # A pre-activation CIFAR net goes straight from the first conv into the first block's norm-act.
            self.bn1 = nn.Identity() if preact else get_norm(cfg.norm, width)
            self.relu = nn.Identity() if preact else get_act(cfg.act, inplace=True)
            self.maxpool = nn.Identity()
            reduction = 1

        extra = {"stride_at": cfg.bottleneck_stride} if block is Bottleneck else {}
        channels = width
        self.feature_info = []
        self.stage_names: list[str] = []
        for i, (depth, w) in enumerate(zip(cfg.layers, cfg.widths)):
            stride = 1 if i == 0 else 2
            blocks = []
            for j in range(depth):
                blocks.append(block(channels, w, stride if j == 0 else 1, cfg.shortcut, cfg.norm, cfg.act, **extra))
                channels = blocks[-1].out_channels
            reduction *= stride
            name = f"layer{i + 1}"
            self.add_module(name, nn.Sequential(*blocks))
            self.stage_names.append(name)
            self.feature_info.append(dict(module=name, num_chs=channels, reduction=reduction))

        self.final_bn = get_norm(cfg.norm, channels) if preact else nn.Identity()
        self.final_act = get_act(cfg.act, inplace=True) if preact else nn.Identity()
        self.num_features = channels
        self.num_classes = cfg.num_classes
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.head_drop = nn.Dropout(cfg.head_drop_rate)
        self.fc = nn.Linear(channels, cfg.num_classes) if cfg.num_classes else nn.Identity()

        he_init(self)
        if cfg.zero_init_residual:
            for m in self.modules():
                if isinstance(m, tuple(BLOCKS.values())):
                    m.zero_init_last()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return self.final_act(self.final_bn(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(torch.flatten(self.avgpool(x), 1))
        return x if pre_logits else self.fc(x)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        self.num_classes = num_classes


_CIFAR = dict(block="basic", widths=(16, 32, 64), stem="cifar", shortcut="A", num_classes=10)


def _cifar_depth(depth: int) -> tuple[int, int, int]:
    n = (depth - 2) // 6  # 6n + 2 layers: the first conv, 3 stages of n two-conv blocks, the fc
    return (n, n, n)


_VARIANTS: dict[str, dict] = {
    "resnet18": dict(block="basic", layers=(2, 2, 2, 2)),
    "resnet34": dict(block="basic", layers=(3, 4, 6, 3)),
    "resnet50": dict(block="bottleneck", layers=(3, 4, 6, 3)),
    "resnet101": dict(block="bottleneck", layers=(3, 4, 23, 3)),
    "resnet152": dict(block="bottleneck", layers=(3, 8, 36, 3)),
    **{f"resnet{d}": dict(_CIFAR, layers=_cifar_depth(d)) for d in (20, 32, 44, 56, 110)},
    "preact_resnet18": dict(block="preact_basic", layers=(2, 2, 2, 2)),
    "preact_resnet110": dict(_CIFAR, block="preact_basic", layers=_cifar_depth(110)),
}
_TORCHVISION = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


def _create_resnet(variant: str, **kwargs) -> ResNet:
    arch = _VARIANTS[variant]
    cfg = ResNetConfig(**{**arch, **kwargs})
    model = ResNet(cfg)
    if variant in _TORCHVISION:
        if same_architecture(cfg, ResNetConfig(**arch), ignore=_HEAD_ONLY):
            model.torchvision_name = variant  # torchvision's weights fit only the unchanged architecture
    return model


@register_model
def resnet18(**kwargs) -> ResNet:
    """ResNet-18: basic blocks (2, 2, 2, 2), ImageNet stem, projection shortcuts (B)."""
    return _create_resnet("resnet18", **kwargs)


@register_model
def resnet34(**kwargs) -> ResNet:
    """ResNet-34: basic blocks (3, 4, 6, 3), ImageNet stem, projection shortcuts (B)."""
    return _create_resnet("resnet34", **kwargs)


@register_model
def resnet50(**kwargs) -> ResNet:
    """ResNet-50: bottleneck blocks (3, 4, 6, 3), ImageNet stem, projection shortcuts (B)."""
    return _create_resnet("resnet50", **kwargs)


@register_model
def resnet101(**kwargs) -> ResNet:
    """ResNet-101: bottleneck blocks (3, 4, 23, 3)."""
    return _create_resnet("resnet101", **kwargs)


@register_model
def resnet152(**kwargs) -> ResNet:
    """ResNet-152: bottleneck blocks (3, 8, 36, 3)."""
    return _create_resnet("resnet152", **kwargs)


@register_model
def resnet20(**kwargs) -> ResNet:
    """CIFAR ResNet-20 (6n+2, n=3): 16/32/64 channels, zero-pad shortcuts (A), 0.27M parameters."""
    return _create_resnet("resnet20", **kwargs)


@register_model
def resnet32(**kwargs) -> ResNet:
    """CIFAR ResNet-32 (n=5), 0.46M parameters."""
    return _create_resnet("resnet32", **kwargs)


@register_model
def resnet44(**kwargs) -> ResNet:
    """CIFAR ResNet-44 (n=7), 0.66M parameters."""
    return _create_resnet("resnet44", **kwargs)


@register_model
def resnet56(**kwargs) -> ResNet:
    """CIFAR ResNet-56 (n=9), 0.85M parameters."""
    return _create_resnet("resnet56", **kwargs)


@register_model
def resnet110(**kwargs) -> ResNet:
    """CIFAR ResNet-110 (n=18), 1.7M parameters."""
    return _create_resnet("resnet110", **kwargs)


@register_model
def preact_resnet18(**kwargs) -> ResNet:
    """Pre-activation ResNet-18 (He et al. 2016): ResNet-18's layout with norm-act-conv blocks."""
    return _create_resnet("preact_resnet18", **kwargs)


@register_model
def preact_resnet110(**kwargs) -> ResNet:
    """Pre-activation CIFAR ResNet-110 (He et al. 2016 report 6.37% CIFAR-10 error, against 6.61%)."""
    return _create_resnet("preact_resnet110", **kwargs)
