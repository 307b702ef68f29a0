"""VGG (Simonyan & Zisserman 2015): stacks of 3x3/1 "same" convolutions and 2x2/2 max pools,
then two fully connected layers of 4096 units with dropout and the output layer.

Configurations A, B, D and E of the paper's Table 1 are VGG-11, -13, -16 and -19; ``_bn``
adds batch normalization after every convolution (Ioffe & Szegedy 2015, not in the paper).
Submodules are laid out as torchvision's ``VGG`` (``features.N``, ``avgpool``,
``classifier.N``), so torchvision state dicts load with identical keys; ``layer_names`` gives
each layer its name in the papers' convention (``features.28`` is ``conv5_3`` in VGG-16).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import torch
from torch import nn

from fovea.errors import UserError
from fovea.models.base import Classifier, build_config
from fovea.models.registry import register_model
from fovea.nn.init import he_init, xavier_init
from fovea.nn.norm import get_norm

# Output channels of each 3x3 convolution, "M" for a 2x2/2 max pool (the paper's Table 1).
CFGS: dict[str, tuple[Union[int, str], ...]] = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),  # A
    "vgg13": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),  # B
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),  # D
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"),  # E
}
INITS = ("he", "xavier", "paper")


@dataclass
class VGGConfig:
    cfg: tuple[Union[int, str], ...] = CFGS["vgg16"]
    norm: str | None = None  # "bn" for the _bn models; any name fovea.nn.get_norm knows
    dropout: float = 0.5
    num_classes: int = 1000
    in_channels: int = 3
    # "he": He et al. 2015 for the convolutions (which trains VGG-19 from scratch), N(0, 0.01)
    # for the fully connected layers, as torchvision; "xavier": Glorot & Bengio 2010, which the
    # paper found works without pre-training; "paper": N(0, 0.01) and zero biases everywhere,
    # how the paper trained configuration A (it initialized the deeper nets from A).
    init: str = "he"


class VGG(Classifier):
    """features (conv3x3 [-> norm] -> relu ..., max pool 2x2/2 after each stage) -> adaptive
    avg pool 7x7 (a no-op at 224x224) -> fc6 -> relu -> dropout -> fc7 -> relu -> dropout -> fc8.

    Any input of at least 2^(number of pools) pixels a side (32x32 for the standard nets) works.
    """

    def __init__(self, cfg: VGGConfig):
        super().__init__()
        bad = [v for v in cfg.cfg if v != "M" and not (isinstance(v, int) and v > 0)]
        if bad or not any(v != "M" for v in cfg.cfg):
            raise UserError(f"VGG cfg must list positive conv widths and 'M' for pools, got {list(cfg.cfg)}")
        if cfg.init not in INITS:
            raise UserError(f"VGG init must be one of {', '.join(INITS)}, got {cfg.init!r}")
        self.cfg = cfg
        self.torchvision_name = self._torchvision_name(cfg)

        layers: list[nn.Module] = []
        self.layer_names: dict[str, str] = {}  # "features.28" -> "conv5_3", "features.30" -> "pool5"
        self.feature_info: list[dict] = []

        def add(module: nn.Module, name: str) -> None:
            self.layer_names[f"features.{len(layers)}"] = name
            layers.append(module)

        c_in, stage, index = cfg.in_channels, 1, 0
        for v in cfg.cfg:
            if v == "M":
                add(nn.MaxPool2d(2, 2), f"pool{stage}")
                self.feature_info.append(dict(module=f"features.{len(layers) - 1}", num_chs=c_in,
                                              reduction=2**stage))
                stage, index = stage + 1, 0
                continue
            index += 1
            # The conv keeps its bias even before a norm, so the keys are torchvision's.
            add(nn.Conv2d(c_in, v, 3, padding=1), f"conv{stage}_{index}")
            if cfg.norm not in (None, "none"):
                add(get_norm(cfg.norm, v), f"{cfg.norm}{stage}_{index}")
            add(nn.ReLU(), f"relu{stage}_{index}")  # not in place, so hooks on conv outputs (Grad-CAM) see them intact
            c_in = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(c_in * 7 * 7, 4096),
            nn.ReLU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(4096, cfg.num_classes) if cfg.num_classes else nn.Identity(),
        )
        for idx, name in enumerate(("fc6", "relu6", "drop6", "fc7", "relu7", "drop7", "fc8")):
            self.layer_names[f"classifier.{idx}"] = name
        self.num_classes, self.num_features = cfg.num_classes, 4096
        self.min_input_size = 2 ** cfg.cfg.count("M")
        self._init_weights(cfg.init)

    @staticmethod
    def _torchvision_name(cfg: VGGConfig) -> str | None:
        """torchvision's name for the same layout ("vgg16_bn"), or None when it has none."""
        base = next((name for name, layers in CFGS.items() if tuple(cfg.cfg) == layers), None)
        if base is None or cfg.norm not in (None, "none", "bn"):
            return None
        return base + ("_bn" if cfg.norm == "bn" else "")

    def _init_weights(self, scheme: str) -> None:
        if scheme == "xavier":
            xavier_init(self)
            return
        he_init(self)
        for m in self.modules():
            if isinstance(m, nn.Linear) or (scheme == "paper" and isinstance(m, nn.Conv2d)):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)
        for layer in self.classifier[:-1]:
            x = layer(x)
        return x if pre_logits else self.classifier[-1](x)

    def get_classifier(self) -> nn.Module:
        return self.classifier[-1]

    def reset_classifier(self, num_classes: int) -> None:
        self.classifier[-1] = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        self.num_classes = num_classes


def _create_vgg(variant: str, /, **kwargs) -> VGG:
    """``variant`` is "vgg16" or "vgg16_bn"; keyword arguments override its VGGConfig fields."""
    base, _, norm = variant.partition("_")
    kwargs = {"cfg": CFGS[base], "norm": norm or None, **kwargs}
    kwargs["cfg"] = tuple(kwargs["cfg"])
    return VGG(build_config(VGGConfig, variant, kwargs))


@register_model
def vgg11(**kwargs) -> VGG:
    """VGG-11, configuration A: 8 convolutions + 3 fully connected layers."""
    return _create_vgg("vgg11", **kwargs)


@register_model
def vgg11_bn(**kwargs) -> VGG:
    """VGG-11 with batch normalization after every convolution."""
    return _create_vgg("vgg11_bn", **kwargs)


@register_model
def vgg13(**kwargs) -> VGG:
    """VGG-13, configuration B: 10 convolutions + 3 fully connected layers."""
    return _create_vgg("vgg13", **kwargs)


@register_model
def vgg13_bn(**kwargs) -> VGG:
    """VGG-13 with batch normalization after every convolution."""
    return _create_vgg("vgg13_bn", **kwargs)


@register_model
def vgg16(**kwargs) -> VGG:
    """VGG-16, configuration D: 13 convolutions + 3 fully connected layers (138M parameters)."""
    return _create_vgg("vgg16", **kwargs)


@register_model
def vgg16_bn(**kwargs) -> VGG:
    """VGG-16 with batch normalization after every convolution."""
    return _create_vgg("vgg16_bn", **kwargs)


@register_model
def vgg19(**kwargs) -> VGG:
    """VGG-19, configuration E: 16 convolutions + 3 fully connected layers (144M parameters)."""
    return _create_vgg("vgg19", **kwargs)


@register_model
def vgg19_bn(**kwargs) -> VGG:
    """VGG-19 with batch normalization after every convolution."""
    return _create_vgg("vgg19_bn", **kwargs)
