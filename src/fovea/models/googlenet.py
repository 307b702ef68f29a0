"""GoogLeNet, Inception v1 (Szegedy et al. 2014, "Going Deeper with Convolutions")."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fovea.models.base import AuxOutputs, Classifier
from fovea.models.registry import register_model
from fovea.nn.act import get_act
from fovea.nn.inception import BN_EPS, InceptionV1
from fovea.nn.init import inception_init
from fovea.nn.init import xavier_init
from fovea.nn.layers import ConvNormAct
from fovea.nn.norm import LocalResponseNorm, get_norm

# The paper's Table 1, inception rows: in, #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj.
INCEPTION_CFG: dict[str, tuple[int, ...]] = {
    "inception3a": (192, 64, 96, 128, 16, 32, 32),
    "inception3b": (256, 128, 128, 192, 32, 96, 64),
    "inception4a": (480, 192, 96, 208, 16, 48, 64),
    "inception4b": (512, 160, 112, 224, 24, 64, 64),
    "inception4c": (512, 128, 128, 256, 24, 64, 64),
    "inception4d": (512, 112, 144, 288, 32, 64, 64),
    "inception4e": (528, 256, 160, 320, 32, 128, 128),
    "inception5a": (832, 256, 160, 320, 32, 128, 128),
    "inception5b": (832, 384, 192, 384, 48, 128, 128),
}


class GoogLeNetAux(nn.Module):
    """An auxiliary classifier (paper Sec. 5): average pool to 4x4, 1x1 conv (128) + ReLU,
    fc 1024 + ReLU, 70% dropout, fc to the classes. Its loss is added with weight 0.3 in
    training; it is ignored at inference.

    The paper pools 5x5 with stride 3 (4x4 from the 14x14 grid); adaptive pooling to 4x4, as in
    torchvision, gives 4x4 from any grid, so the head accepts any input size."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.7,
                 norm: str | None = "bn", act: str | None = "relu"):
        super().__init__()
        self.conv = ConvNormAct(in_channels, 128, 1, norm=norm, act=act, norm_eps=BN_EPS)
        self.fc1 = nn.Linear(128 * 4 * 4, 1024)
        self.act = get_act(act, inplace=True)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(1024, num_classes) if num_classes else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.conv(F.adaptive_avg_pool2d(x, 4)), 1)
        return self.fc2(self.dropout(self.act(self.fc1(x))))


@dataclass
class GoogLeNetConfig:
    num_classes: int = 1000
    in_channels: int = 3
    aux_logits: bool = True  # the two auxiliary classifiers (after inception4a and inception4d)
    norm: str | None = "bn"  # after every convolution; None: the 2014 network, convolutions with bias
    act: str = "relu"
    dropout: float = 0.4  # the paper's 40% before the classifier (torchvision uses 0.2)
    aux_dropout: float = 0.7
    branch3_kernel: int = 5  # the "5x5" branch: 5 as in the paper, 3 as in torchvision
    stem_norm: str | None = None  # "lrn": the paper's local response normalization after maxpool1 and conv3


class GoogLeNet(Classifier):
    """GoogLeNet: a 7x7/2 convolution stem, nine Inception modules in three groups separated by
    stride-2 max pools, global average pooling, dropout and a linear classifier; 22 layers with
    parameters, 6.6M parameters with torchvision's layout.

    The layout is torchvision's, so its state dicts load as they are with ``branch3_kernel=3``
    (torchvision's "5x5" branch is a 3x3, pytorch/vision#906): batch normalization (eps 1e-3)
    after every convolution, adaptive pooling in the auxiliary heads, and a 2x2 window for the
    stride-2 pool before inception5a (the paper's Table 1 has 3x3; both give 7x7 from 14x14).
    The 2014 paper had no batch normalization (it predates it): ``norm=None`` gives
    convolutions with bias and no normalization, and ``stem_norm="lrn"`` adds the paper's two
    local response normalizations in the stem.

    torchvision's ``transform_input`` (re-normalizing ImageNet-normalized input to [-1, 1] for
    its ported weights) is not part of the model: feed whatever normalization the weights were
    trained with.

    In training mode with ``aux_logits`` on, ``forward`` returns
    ``AuxOutputs(logits, aux=(aux1, aux2))``; otherwise it returns the logits
    (``forward_features`` never runs the auxiliary heads, so ``forward_head(forward_features(x))``
    is the main path in either mode). Max pools use
    ceil_mode, as in Caffe and torchvision; inputs from 15x15 up work.
    """

    torchvision_name = "googlenet"
    min_input_size = 15

    def __init__(self, cfg: GoogLeNetConfig):
        super().__init__()
        if cfg.branch3_kernel not in (3, 5):
            raise ValueError(f"branch3_kernel must be 5 (paper) or 3 (torchvision), got {cfg.branch3_kernel}")
        self.cfg = cfg
        cba = dict(norm=cfg.norm, act=cfg.act, norm_eps=BN_EPS)
        inc = dict(branch3_kernel=cfg.branch3_kernel, norm=cfg.norm, act=cfg.act)

        self.conv1 = ConvNormAct(cfg.in_channels, 64, 7, stride=2, padding=3, **cba)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.norm1 = _stem_norm(cfg.stem_norm, 64)
        self.conv2 = ConvNormAct(64, 64, 1, **cba)
        self.conv3 = ConvNormAct(64, 192, 3, **cba)
        self.norm2 = _stem_norm(cfg.stem_norm, 192)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception3a = InceptionV1(*INCEPTION_CFG["inception3a"], **inc)
        self.inception3b = InceptionV1(*INCEPTION_CFG["inception3b"], **inc)
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception4a = InceptionV1(*INCEPTION_CFG["inception4a"], **inc)
        self.inception4b = InceptionV1(*INCEPTION_CFG["inception4b"], **inc)
        self.inception4c = InceptionV1(*INCEPTION_CFG["inception4c"], **inc)
        self.inception4d = InceptionV1(*INCEPTION_CFG["inception4d"], **inc)
        self.inception4e = InceptionV1(*INCEPTION_CFG["inception4e"], **inc)
        self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.inception5a = InceptionV1(*INCEPTION_CFG["inception5a"], **inc)
        self.inception5b = InceptionV1(*INCEPTION_CFG["inception5b"], **inc)
        if cfg.aux_logits:
            aux = dict(dropout=cfg.aux_dropout, norm=cfg.norm, act=cfg.act)
            self.aux1 = GoogLeNetAux(self.inception4a.out_channels, cfg.num_classes, **aux)
            self.aux2 = GoogLeNetAux(self.inception4d.out_channels, cfg.num_classes, **aux)
        else:
            self.aux1 = self.aux2 = None
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(cfg.dropout)
        self.num_features = self.inception5b.out_channels
        self.fc = nn.Linear(self.num_features, cfg.num_classes) if cfg.num_classes else nn.Identity()
        self.num_classes = cfg.num_classes
        self.aux_logits = cfg.aux_logits
        self.feature_info = [
            dict(module="conv1", num_chs=64, reduction=2),
            dict(module="conv3", num_chs=192, reduction=4),
            dict(module="inception3b", num_chs=self.inception3b.out_channels, reduction=8),
            dict(module="inception4e", num_chs=self.inception4e.out_channels, reduction=16),
            dict(module="inception5b", num_chs=self.num_features, reduction=32),
        ]
        self._init_weights()

    def _init_weights(self) -> None:
        if self.cfg.norm in (None, "none"):
            xavier_init(self)  # the Caffe reference model's filler; N(0, 0.01) starves a deep net without BN
            return
        inception_init(self, std=0.01)  # torchvision's N(0, 0.01), truncated at 2 std

    def _features(self, x: torch.Tensor, with_aux: bool) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        self.check_input(x)  # one clear error below min_input_size, naming the layer
        x = self.norm1(self.maxpool1(self.conv1(x)))
        x = self.maxpool2(self.norm2(self.conv3(self.conv2(x))))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        x = self.inception4a(x)
        aux1 = self.aux1(x) if with_aux else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        aux2 = self.aux2(x) if with_aux else None
        x = self.maxpool4(self.inception4e(x))
        x = self.inception5b(self.inception5a(x))
        return x, ((aux1, aux2) if with_aux else ())

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._features(x, with_aux=False)[0]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.dropout(torch.flatten(self.avgpool(x), 1))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor | AuxOutputs:
        with_aux = self.training and self.aux_logits
        x, aux = self._features(x, with_aux)
        logits = self.forward_head(x)
        return AuxOutputs(logits, aux) if with_aux else logits

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        """New output layers (main and auxiliary) for ``num_classes``; 0 leaves features."""
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        for aux in (self.aux1, self.aux2):
            if aux is not None:
                aux.fc2 = nn.Linear(1024, num_classes) if num_classes else nn.Identity()
        self.num_classes = self.cfg.num_classes = num_classes


def _stem_norm(name: str | None, channels: int) -> nn.Module:
    if name == "lrn":  # the Caffe reference model's LRN: 5 channels, alpha 1e-4, beta 0.75, k 1
        return LocalResponseNorm(5, 1e-4, 0.75, k=1.0)
    return get_norm(name, channels)


def _create_googlenet(variant: str, **kwargs) -> GoogLeNet:
    return GoogLeNet(GoogLeNetConfig(**kwargs))


@register_model
def googlenet(**kwargs) -> GoogLeNet:
    """GoogLeNet with both auxiliary classifiers and the paper's 5x5 branch; pass
    ``branch3_kernel=3`` for torchvision's layout (and its ImageNet weights)."""
    return _create_googlenet("googlenet", **kwargs)

googlenet.torchvision_kwargs = dict(branch3_kernel=3)  # torchvision's 3x3 in the "5x5" branch
