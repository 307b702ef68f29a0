"""Inception v3 (Szegedy et al. 2015, "Rethinking the Inception Architecture for Computer
Vision")."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fovea.models.base import AuxOutputs, Classifier
from fovea.models.registry import register_model
from fovea.nn.init import inception_init
from fovea.nn.inception import BN_EPS, InceptionA, InceptionB, InceptionC, InceptionD, InceptionE
from fovea.nn.init import xavier_init
from fovea.nn.layers import ConvNormAct


class InceptionV3Aux(nn.Module):
    """Inception v3's auxiliary classifier on the 17x17 grid (after Mixed_6e): 5x5 average pool
    with stride 3, 1x1 conv (128), 5x5 conv (768), global average pool, fc.

    The paper finds it acts as a regularizer rather than helping early training (Sec. 4).
    The fixed 5x5/3 pool needs a grid of at least 17x17 (an input of about 299x299); on a
    smaller grid the map is average-pooled adaptively to the 5x5 the 5x5 convolution needs,
    so the head works for any input the network accepts and matches torchvision's where
    torchvision's works. The paper's "BN-auxiliary" (batch norm on the fully connected layer
    too) is not used, as in torchvision."""

    def __init__(self, in_channels: int, num_classes: int, norm: str | None = "bn", act: str | None = "relu"):
        super().__init__()
        self.conv0 = ConvNormAct(in_channels, 128, 1, norm=norm, act=act, norm_eps=BN_EPS)
        self.conv1 = ConvNormAct(128, 768, 5, padding=0, norm=norm, act=act, norm_eps=BN_EPS)
        self.fc = nn.Linear(768, num_classes) if num_classes else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.avg_pool2d(x, 5, stride=3) if min(x.shape[-2:]) >= 17 else F.adaptive_avg_pool2d(x, 5)
        x = self.conv1(self.conv0(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


@dataclass
class InceptionV3Config:
    num_classes: int = 1000
    in_channels: int = 3
    aux_logits: bool = True  # the auxiliary classifier after Mixed_6e
    norm: str | None = "bn"
    act: str = "relu"
    dropout: float = 0.5
    factorize_5x5: bool = False  # the paper's all-3x3 35x35 modules (Fig. 5) instead of the released 5x5 branch


class InceptionV3(Classifier):
    """Inception v3: a stem of plain convolutions (299 -> 35), three 35x35 modules (A), a grid
    reduction (B), four 17x17 modules with 1x7/7x1 factorization (C), a grid reduction (D),
    two 8x8 modules with expanded filter banks (E), global average pooling, dropout, fc.
    27.2M parameters with the auxiliary head, 23.8M without.

    The layout is the released TensorFlow model's, which torchvision follows, so torchvision's
    state dicts load as they are. It differs from the paper's Table 1 in places: the stem's
    80-channel layer is a 1x1 convolution, its last step down to 35x35 a max pool rather than a
    stride-2 convolution, and the 35x35 modules keep one 5x5 branch (see
    :class:`~fovea.nn.inception.InceptionA` and ``factorize_5x5``). Batch norm has eps 1e-3.
    torchvision's ``transform_input`` (re-normalizing ImageNet-normalized input to [-1, 1] for
    its ported weights) is not part of the model: feed whatever normalization the weights were
    trained with.

    In training mode with ``aux_logits`` on, ``forward`` returns ``AuxOutputs(logits, aux=(aux,))``;
    otherwise it returns the logits (``forward_features`` never runs the auxiliary head).
    Inputs must be at least 75x75 (the 8x8 grid at 299 is 1x1 there).
    """

    torchvision_name = "inception_v3"
    min_input_size = 75
    canonical_size = 299

    def __init__(self, cfg: InceptionV3Config):
        super().__init__()
        self.cfg = cfg
        n, a = cfg.norm, cfg.act
        cba = dict(norm=n, act=a, norm_eps=BN_EPS)
        self.Conv2d_1a_3x3 = ConvNormAct(cfg.in_channels, 32, 3, stride=2, padding=0, **cba)
        self.Conv2d_2a_3x3 = ConvNormAct(32, 32, 3, padding=0, **cba)
        self.Conv2d_2b_3x3 = ConvNormAct(32, 64, 3, **cba)
        self.maxpool1 = nn.MaxPool2d(3, stride=2)
        self.Conv2d_3b_1x1 = ConvNormAct(64, 80, 1, **cba)
        self.Conv2d_4a_3x3 = ConvNormAct(80, 192, 3, padding=0, **cba)
        self.maxpool2 = nn.MaxPool2d(3, stride=2)
        f5 = cfg.factorize_5x5
        self.Mixed_5b = InceptionA(192, pool_features=32, factorize_5x5=f5, norm=n, act=a)
        self.Mixed_5c = InceptionA(256, pool_features=64, factorize_5x5=f5, norm=n, act=a)
        self.Mixed_5d = InceptionA(288, pool_features=64, factorize_5x5=f5, norm=n, act=a)
        self.Mixed_6a = InceptionB(288, norm=n, act=a)
        self.Mixed_6b = InceptionC(768, channels_7x7=128, norm=n, act=a)
        self.Mixed_6c = InceptionC(768, channels_7x7=160, norm=n, act=a)
        self.Mixed_6d = InceptionC(768, channels_7x7=160, norm=n, act=a)
        self.Mixed_6e = InceptionC(768, channels_7x7=192, norm=n, act=a)
        self.AuxLogits = InceptionV3Aux(768, cfg.num_classes, norm=n, act=a) if cfg.aux_logits else None
        self.Mixed_7a = InceptionD(768, norm=n, act=a)
        self.Mixed_7b = InceptionE(1280, norm=n, act=a)
        self.Mixed_7c = InceptionE(2048, norm=n, act=a)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(cfg.dropout)
        self.num_features = self.Mixed_7c.out_channels
        self.fc = nn.Linear(self.num_features, cfg.num_classes) if cfg.num_classes else nn.Identity()
        self.num_classes = cfg.num_classes
        self.aux_logits = cfg.aux_logits
        self.feature_info = [
            dict(module="Conv2d_2b_3x3", num_chs=64, reduction=2),
            dict(module="Conv2d_4a_3x3", num_chs=192, reduction=4),
            dict(module="Mixed_5d", num_chs=288, reduction=8),
            dict(module="Mixed_6e", num_chs=768, reduction=16),
            dict(module="Mixed_7c", num_chs=self.num_features, reduction=32),
        ]
        self._init_weights()

    def _init_weights(self) -> None:
        if self.cfg.norm in (None, "none"):
            xavier_init(self)  # a N(0, 0.1) start is tuned for batch norm; without it use Glorot
            return
        # torchvision / TF-slim: truncated normal, std 0.1, except the auxiliary head's 5x5 conv
        # (0.01) and its classifier (0.001).
        stds = {}
        if self.AuxLogits is not None:
            stds = {self.AuxLogits.conv1.conv: 0.01, self.AuxLogits.fc: 0.001}
        inception_init(self, std=0.1, stds=stds)

    def _features(self, x: torch.Tensor, with_aux: bool) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        self.check_input(x)  # one clear error below min_input_size, naming the layer
        x = self.maxpool1(self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x))))
        x = self.maxpool2(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)))
        x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x)))
        x = self.Mixed_6a(x)
        x = self.Mixed_6e(self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(x))))
        aux = (self.AuxLogits(x),) if with_aux else ()
        x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))
        return x, aux

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
        if self.AuxLogits is not None:
            self.AuxLogits.fc = nn.Linear(768, num_classes) if num_classes else nn.Identity()
        self.num_classes = self.cfg.num_classes = num_classes


def _create_inception(variant: str, **kwargs) -> InceptionV3:
    return InceptionV3(InceptionV3Config(**kwargs))


@register_model
def inception_v3(**kwargs) -> InceptionV3:
    """Inception v3 with its auxiliary classifier, in the released (and torchvision's) layout."""
    return _create_inception("inception_v3", **kwargs)
