"""AlexNet (Krizhevsky, Sutskever & Hinton 2012) and ZFNet (Zeiler & Fergus 2013).

Both are five convolutions and three max pools, then two hidden fully connected layers of
4096 units with dropout and the output layer. Submodules are laid out as torchvision's
``AlexNet`` (``features``, ``avgpool``, ``classifier``), so with ``channels=(64, 192, 384,
256, 256), lrn=False`` (:data:`TORCHVISION_CONFIG`, the "one weird trick" variant that
torchvision builds) the state dict keys are torchvision's own. With LRN layers the
``features`` indices shift; :func:`fovea.models.weights.load_into` still maps torchvision's
weights on, pairing tensors in order (LRN has no parameters).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fovea.arith import conv_output_size, pool_output_size
from fovea.errors import UserError
from fovea.models.base import Classifier, build_config
from fovea.models.registry import register_model
from fovea.nn.init import alexnet_init
from fovea.nn.norm import LocalResponseNorm

# The configuration torchvision's ``alexnet`` builds (Krizhevsky 2014, "One weird trick"): its
# ImageNet weights load only into a model built with these settings (and in_channels=3).
TORCHVISION_CONFIG = dict(channels=(64, 192, 384, 256, 256), lrn=False)

# Per variant: (kernel, stride, padding) of conv1 and conv2 (conv3-5 are 3x3/1 pad 1), whether
# the contrast normalization comes after the pooling (ZFNet) or before it (AlexNet), and
# whether pools round up. ZFNet's sizes (224 -> 110 -> 55 -> 26 -> 13 -> 6, the paper's
# Figure 3) need Caffe's ceil-mode pooling; AlexNet's (224 -> 55 -> 27 -> 13 -> 6) do not.
_GEOMETRY = {
    "alexnet": dict(conv1=(11, 4, 2), conv2=(5, 1, 2), norm_after_pool=False, ceil_mode=False),
    "zfnet": dict(conv1=(7, 2, 1), conv2=(5, 2, 0), norm_after_pool=True, ceil_mode=True),
}
_GROUPED = (2, 4, 5)  # the convolutions that see only their own tower's maps in the two-GPU net


class GroupedLRN(LocalResponseNorm):
    """Local Response Normalization run separately within each of ``groups`` channel blocks.

    In the paper's two-GPU network each tower normalizes its own half of the maps, so a map
    at the edge of a half never sees the other tower's maps; with ``groups=1`` this is the
    ordinary cross-channel LRN."""

    def __init__(self, groups: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.groups == 1:
            return super().forward(x)
        return torch.cat([super(GroupedLRN, self).forward(c) for c in x.chunk(self.groups, dim=1)], dim=1)

    def extra_repr(self) -> str:
        return super().extra_repr() + (f", groups={self.groups}" if self.groups > 1 else "")


@dataclass
class AlexNetConfig:
    channels: tuple[int, ...] = (96, 256, 384, 384, 256)  # conv1..conv5 filters, the paper's
    lrn: bool = True  # response normalization after conv1 and conv2
    groups: int = 1  # 2: the paper's two-tower split of conv2, conv4 and conv5
    dropout: float = 0.5
    num_classes: int = 1000
    in_channels: int = 3
    variant: str = "alexnet"  # "alexnet" or "zfnet": the geometry of conv1, conv2 and the pools


class AlexNet(Classifier):
    """conv1 -> relu -> [lrn] -> pool -> conv2 -> relu -> [lrn] -> pool -> conv3 -> conv4 ->
    conv5 -> pool -> adaptive avg pool 6x6 -> dropout -> fc6 -> dropout -> fc7 -> fc8, a ReLU
    after every layer but fc8 (ZFNet pools before it normalizes).

    AlexNet (Krizhevsky et al. 2012): conv1 11x11/4, conv2 5x5, overlapping 3x3/2 max pools,
    LRN (k=2, n=5, alpha=1e-4, beta=0.75) after the ReLUs of conv1 and conv2, weights
    N(0, 0.01), bias 1 in conv2, conv4, conv5, fc6 and fc7 and 0 elsewhere. ``groups=2``
    splits conv2, conv4 and conv5 (and the LRNs) into two towers as on the paper's two GPUs
    (60,965,224 parameters instead of 62,378,344).

    ZFNet (Zeiler & Fergus 2013, ``variant="zfnet"``): conv1 7x7/2 (AlexNet's 11x11/4 caused
    aliasing and dead filters), conv2 5x5/2, contrast normalization after the pools of the
    first two layers, weights N(0, 0.01) and biases 0 as that paper says.

    The dropout sits before fc6 and fc7 as in torchvision; Caffe's reference net drops fc6's
    and fc7's outputs instead. Adaptive average pooling to 6x6 (a no-op at 224x224) makes any
    input from 63x63 (AlexNet) or 47x47 (ZFNet) up work.
    """

    def __init__(self, cfg: AlexNetConfig):
        super().__init__()
        if cfg.variant not in _GEOMETRY:
            raise UserError(f"AlexNet variant must be one of {', '.join(_GEOMETRY)}, got {cfg.variant!r}")
        if len(cfg.channels) != 5:
            raise UserError(f"AlexNet needs 5 conv widths (channels=), got {len(cfg.channels)}: {tuple(cfg.channels)}")
        if cfg.groups < 1:
            raise UserError(f"Received groups={cfg.groups}, but the number of towers must be at least 1")
        ins = (cfg.in_channels, *cfg.channels[:4])
        bad = [f"conv{i} ({ins[i - 1]}->{cfg.channels[i - 1]})" for i in _GROUPED
               if ins[i - 1] % cfg.groups or cfg.channels[i - 1] % cfg.groups]
        if bad:
            raise UserError(f"Received groups={cfg.groups}, but it must divide the input and output channels of "
                            f"conv2, conv4 and conv5; it does not for {', '.join(bad)}")
        self.cfg = cfg
        self.torchvision_name = "alexnet" if cfg.variant == "alexnet" else None
        geo = _GEOMETRY[cfg.variant]
        ceil_mode = geo["ceil_mode"]

        layers: list[nn.Module] = []
        self.layer_names: dict[str, str] = {}  # "features.0" -> "conv1", in the papers' words
        self.feature_info: list[dict] = []

        def add(module: nn.Module, name: str) -> None:
            self.layer_names[f"features.{len(layers)}"] = name
            layers.append(module)

        c_in, reduction = cfg.in_channels, 1
        for i, c in enumerate(cfg.channels, 1):
            k, s, p = geo.get(f"conv{i}", (3, 1, 1))
            add(nn.Conv2d(c_in, c, k, s, p, groups=cfg.groups if i in _GROUPED else 1), f"conv{i}")
            add(nn.ReLU(), f"relu{i}")
            reduction *= s
            norm = cfg.lrn and i in (1, 2)
            if norm and not geo["norm_after_pool"]:
                add(GroupedLRN(cfg.groups), f"norm{i}")
            if i in (1, 2, 5):
                add(nn.MaxPool2d(3, 2, ceil_mode=ceil_mode), f"pool{i}")  # overlapping pooling
                reduction *= 2
            if norm and geo["norm_after_pool"]:
                add(GroupedLRN(cfg.groups), f"norm{i}")
            if i in (1, 2, 5):
                self.feature_info.append(dict(module=f"features.{len(layers) - 1}", num_chs=c, reduction=reduction))
            c_in = c
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(cfg.dropout),
            nn.Linear(c_in * 6 * 6, 4096),
            nn.ReLU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(),
            nn.Linear(4096, cfg.num_classes) if cfg.num_classes else nn.Identity(),
        )
        for idx, name in enumerate(("drop6", "fc6", "relu6", "drop7", "fc7", "relu7", "fc8")):
            self.layer_names[f"classifier.{idx}"] = name
        self.num_classes, self.num_features = cfg.num_classes, 4096
        self.min_input_size = self._min_input_size()

        if cfg.variant == "alexnet":  # bias 1 "accelerates the early stages of learning"
            by_name = {v: k for k, v in self.layer_names.items()}
            alexnet_init(self, bias_one=[by_name[n] for n in ("conv2", "conv4", "conv5", "fc6", "fc7")])
        else:
            alexnet_init(self)  # ZFNet: "weights initialized to 1e-2 and biases set to 0"

    def _min_input_size(self) -> int:
        """The smallest square input whose pool5 map is at least 1x1 (PyTorch's size rules:
        a ceil-mode window must start inside the input or its left padding)."""

        def out(n: int) -> int:
            for m in self.features:
                if isinstance(m, (nn.Conv2d, nn.MaxPool2d)):
                    k, s, p = (v if isinstance(v, int) else v[0] for v in (m.kernel_size, m.stride, m.padding))
                    o = (pool_output_size(n, k, p, s, ceil_mode=m.ceil_mode) if isinstance(m, nn.MaxPool2d)
                         else conv_output_size(n, k, p, s))
                    if o < 1:
                        return 0
                    n = o
            return n

        n = 1
        while out(n) < 1:
            n += 1
        return n

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


def _create_alexnet(variant: str, /, **kwargs) -> AlexNet:
    if "channels" in kwargs:
        kwargs["channels"] = tuple(kwargs["channels"])
    return AlexNet(build_config(AlexNetConfig, variant, kwargs, fixed=dict(variant=variant)))


@register_model
def alexnet(**kwargs) -> AlexNet:
    """AlexNet as in Krizhevsky et al. 2012 (96-256-384-384-256 filters, LRN); pass
    ``**TORCHVISION_CONFIG`` for the layout torchvision's ImageNet weights fit."""
    return _create_alexnet("alexnet", **kwargs)


@register_model
def zfnet(**kwargs) -> AlexNet:
    """ZFNet as in Zeiler & Fergus 2013: 7x7/2 conv1, 5x5/2 conv2, contrast normalization."""
    return _create_alexnet("zfnet", **kwargs)

alexnet.torchvision_kwargs = TORCHVISION_CONFIG  # what weights="torchvision" builds
