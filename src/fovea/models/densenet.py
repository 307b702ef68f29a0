"""DenseNet (Huang et al. 2017, "Densely Connected Convolutional Networks"): the ImageNet
DenseNet-121/161/169/201 (all DenseNet-BC: bottleneck layers, compression 0.5) and a
configurable DenseNet for 32x32 inputs, such as the paper's CIFAR DenseNet-BC (L=100, k=12).

Module names follow torchvision's (``features.conv0``, ``features.denseblock1.denselayer1.norm1``,
``features.transition1.conv``, ``features.norm5``, ``classifier``), so
``torchvision.models.densenet121()``'s state dict loads as it is.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from fovea.models.base import Classifier, same_architecture
from fovea.models.registry import register_model
from fovea.nn.act import get_act
from fovea.nn.dense import DenseBlock, Transition
from fovea.nn.init import he_init
from fovea.nn.norm import get_norm

STEMS = ("imagenet", "cifar")


@dataclass
class DenseNetConfig:
    growth_rate: int = 32  # k: channels each layer adds
    block_config: tuple[int, ...] = (6, 12, 24, 16)  # layers per dense block
    num_init_features: int | None = None  # stem width; None: 2k, or 16 for a CIFAR net without B and C (the paper's)
    bn_size: int = 4  # bottleneck width = bn_size * k
    compression: float = 0.5  # theta: a transition keeps floor(theta * C) channels
    bottleneck: bool = True  # DenseNet-B: a 1x1 conv before each 3x3
    drop_rate: float = 0.0  # dropout on every layer's new features
    stem: str = "imagenet"  # "imagenet": 7x7/2 conv, norm-act, 3x3/2 max pool; "cifar": one 3x3 conv
    norm: str | None = "bn"
    act: str = "relu"
    num_classes: int = 1000
    in_channels: int = 3
    head_drop_rate: float = 0.0  # dropout before the classifier

    def __post_init__(self):
        self.block_config = tuple(self.block_config)  # JSON gives a list


_HEAD_ONLY = ("num_classes", "in_channels", "drop_rate", "head_drop_rate")


class DenseNet(Classifier):
    """Stem, dense blocks joined by transitions (norm-act-1x1 conv with compression, 2x2 average
    pooling), a final norm (``features.norm5``) and act, global average pooling, a linear
    ``classifier``."""

    torchvision_name: str | None = None

    def __init__(self, cfg: DenseNetConfig):
        super().__init__()
        if cfg.stem not in STEMS:
            raise ValueError(f"DenseNet stem must be one of {', '.join(STEMS)}, got {cfg.stem!r}")
        if not cfg.block_config or min(cfg.block_config) < 1 or cfg.growth_rate < 1:
            raise ValueError(f"DenseNet needs at least one block of at least one layer and growth_rate >= 1; "
                             f"got block_config={cfg.block_config}, growth_rate={cfg.growth_rate}")
        self.cfg = cfg
        self.canonical_size = 32 if cfg.stem == "cifar" else 224
        k = cfg.growth_rate
        has_norm = cfg.norm not in (None, "none")
        init = cfg.num_init_features
        if init is None:
            plain_cifar = cfg.stem == "cifar" and not cfg.bottleneck and cfg.compression == 1.0
            init = 16 if plain_cifar else 2 * k

        if cfg.stem == "imagenet":
            self.features = nn.Sequential(OrderedDict([
                ("conv0", nn.Conv2d(cfg.in_channels, init, 7, stride=2, padding=3, bias=not has_norm)),
                ("norm0", get_norm(cfg.norm, init)),
                ("relu0", get_act(cfg.act, inplace=True)),
                ("pool0", nn.MaxPool2d(3, stride=2, padding=1)),
            ]))
            reduction = 4
        else:  # the first dense layer's norm-act follows the conv directly, as in the paper
            self.features = nn.Sequential(OrderedDict([
                ("conv0", nn.Conv2d(cfg.in_channels, init, 3, padding=1, bias=not has_norm)),
            ]))
            reduction = 1

        channels = init
        self.feature_info = []
        for i, num_layers in enumerate(cfg.block_config):
            block = DenseBlock(num_layers, channels, k, cfg.bn_size, cfg.drop_rate, cfg.bottleneck, cfg.norm, cfg.act)
            self.features.add_module(f"denseblock{i + 1}", block)
            channels = block.out_channels
            self.feature_info.append(dict(module=f"features.denseblock{i + 1}", num_chs=channels, reduction=reduction))
            if i != len(cfg.block_config) - 1:
                trans = Transition(channels, cfg.compression, cfg.norm, cfg.act)
                self.features.add_module(f"transition{i + 1}", trans)
                channels = trans.out_channels
                reduction *= 2
        self.features.add_module("norm5", get_norm(cfg.norm, channels))
        self.final_act = get_act(cfg.act, inplace=has_norm)

        self.num_features = channels
        self.num_classes = cfg.num_classes
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.head_drop = nn.Dropout(cfg.head_drop_rate)
        self.classifier = nn.Linear(channels, cfg.num_classes) if cfg.num_classes else nn.Identity()
        he_init(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.final_act(self.features(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(torch.flatten(self.avgpool(x), 1))
        return x if pre_logits else self.classifier(x)

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int) -> None:
        self.classifier = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        self.num_classes = num_classes


_CIFAR = dict(stem="cifar", growth_rate=12, block_config=(16, 16, 16), num_classes=10)

_VARIANTS: dict[str, dict] = {
    "densenet121": dict(growth_rate=32, block_config=(6, 12, 24, 16)),
    "densenet161": dict(growth_rate=48, block_config=(6, 12, 36, 24), num_init_features=96),
    "densenet169": dict(growth_rate=32, block_config=(6, 12, 32, 32)),
    "densenet201": dict(growth_rate=32, block_config=(6, 12, 48, 32)),
    "densenet_bc": _CIFAR,
    "densenet_bc100": _CIFAR,
}
_TORCHVISION = ("densenet121", "densenet161", "densenet169", "densenet201")


def cifar_block_config(depth: int, bottleneck: bool = True) -> tuple[int, int, int]:
    """The paper's three equal CIFAR blocks for total depth L: (L - 4) / 6 layers each with
    bottlenecks (two convolutions per layer), (L - 4) / 3 without. The 4 are the first conv,
    the two transitions and the classifier."""
    per_layer = 2 if bottleneck else 1
    n, rest = divmod(depth - 4, 3 * per_layer)
    if rest or n < 1:
        raise ValueError(f"a CIFAR DenseNet{'-BC' if bottleneck else ''} depth must be 4 + {3 * per_layer}n "
                         f"with n >= 1, got depth={depth}")
    return (n, n, n)


def _create_densenet(variant: str, **kwargs) -> DenseNet:
    arch = _VARIANTS[variant]
    cfg = DenseNetConfig(**{**arch, **kwargs})
    model = DenseNet(cfg)
    if variant in _TORCHVISION:
        if same_architecture(cfg, DenseNetConfig(**arch), ignore=_HEAD_ONLY):
            model.torchvision_name = variant  # torchvision's weights fit only the unchanged architecture
    return model


@register_model
def densenet121(**kwargs) -> DenseNet:
    """DenseNet-121: k=32, blocks (6, 12, 24, 16), 64 stem channels."""
    return _create_densenet("densenet121", **kwargs)


@register_model
def densenet161(**kwargs) -> DenseNet:
    """DenseNet-161: k=48, blocks (6, 12, 36, 24), 96 stem channels."""
    return _create_densenet("densenet161", **kwargs)


@register_model
def densenet169(**kwargs) -> DenseNet:
    """DenseNet-169: k=32, blocks (6, 12, 32, 32)."""
    return _create_densenet("densenet169", **kwargs)


@register_model
def densenet201(**kwargs) -> DenseNet:
    """DenseNet-201: k=32, blocks (6, 12, 48, 32)."""
    return _create_densenet("densenet201", **kwargs)


@register_model
def densenet_bc(depth: int | None = None, **kwargs) -> DenseNet:
    """A DenseNet for 32x32 inputs: set ``growth_rate``, ``block_config`` (or ``depth``, which
    gives the paper's three equal blocks), ``compression`` and ``bottleneck``. The defaults are
    the paper's CIFAR DenseNet-BC with L=100, k=12; ``bottleneck=False, compression=1.0`` is the
    plain DenseNet (16 stem channels)."""
    if depth is not None:
        kwargs["block_config"] = cifar_block_config(depth, kwargs.get("bottleneck", True))
    return _create_densenet("densenet_bc", **kwargs)


@register_model
def densenet_bc100(**kwargs) -> DenseNet:
    """CIFAR DenseNet-BC (L=100, k=12): three blocks of 16 bottleneck layers, theta=0.5, 0.8M parameters."""
    return _create_densenet("densenet_bc100", **kwargs)
