"""LeNet-5 (LeCun et al. 1998), as published and in its modern ReLU / max-pool form."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fovea.models.base import Classifier
from fovea.models.registry import register_model
from fovea.nn.act import get_act

# C3's partial connection table (the paper's Table I): which S2 maps feed each C3 map.
# Six maps see 3 contiguous maps, six see 4 contiguous, three see 4 non-contiguous, one sees all.
C3_TABLE: tuple[tuple[int, ...], ...] = (
    (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (4, 5, 0), (5, 0, 1),
    (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (3, 4, 5, 0), (4, 5, 0, 1), (5, 0, 1, 2),
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)


class ScaledTanh(nn.Module):
    """The paper's squashing function f(a) = A tanh(S a), A = 1.7159, S = 2/3."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 1.7159 * torch.tanh(x * (2.0 / 3.0))


class Subsampling(nn.Module):
    """S2 / S4: the sum of each 2x2 block times a trainable coefficient, plus a trainable
    bias, one pair per feature map (2 parameters per map)."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.avg_pool2d(x, 2) * 4.0
        return s * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class PartialConv2d(nn.Module):
    """A convolution in which output map j sees only the input maps listed in ``table[j]``;
    only the connected kernels are parameters (C3: 60 kernels of 5x5 + 16 biases = 1,516)."""

    def __init__(self, table, in_channels: int, kernel_size: int = 5):
        super().__init__()
        pairs = [(o, i) for o, ins in enumerate(table) for i in ins]
        self.in_channels, self.out_channels, self.kernel_size = in_channels, len(table), kernel_size
        self.register_buffer("out_idx", torch.tensor([o for o, _ in pairs]), persistent=False)
        self.register_buffer("in_idx", torch.tensor([i for _, i in pairs]), persistent=False)
        self.weight = nn.Parameter(torch.empty(len(pairs), kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(len(table)))
        fan_in = torch.bincount(self.out_idx).float().mean().item() * kernel_size**2
        nn.init.uniform_(self.weight, -2.4 / fan_in, 2.4 / fan_in)  # the paper's +-2.4/F_i

    def dense_weight(self) -> torch.Tensor:
        k = self.kernel_size
        w = self.weight.new_zeros(self.out_channels, self.in_channels, k, k)
        return w.index_put((self.out_idx, self.in_idx), self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.dense_weight(), self.bias)


@dataclass
class LeNetConfig:
    num_classes: int = 10
    in_channels: int = 1
    variant: str = "original"  # "original": tanh, trainable subsampling, C3 table; "relu": ReLU, max-pool, full C3
    act: str | None = None  # override the variant's activation


class LeNet5(Classifier):
    """C1 conv5x5-6, S2, C3 conv5x5-16, S4, C5 conv5x5-120, F6 fc84, output fc.

    Built for 32x32 inputs (C5 then sees 5x5 and gives 1x1); larger inputs are averaged to 1x1
    after C5. The output layer is linear (the paper's Euclidean RBF units are replaced by the
    usual softmax classifier)."""

    torchvision_name = None
    canonical_size = 32
    min_input_size = 32  # C5 is a valid 5x5 convolution on S4's 5x5 maps

    def __init__(self, cfg: LeNetConfig):
        super().__init__()
        self.cfg = cfg
        original = cfg.variant == "original"
        if cfg.variant not in ("original", "relu"):
            raise ValueError(f"LeNet-5 variant must be 'original' or 'relu', got {cfg.variant!r}")
        act = (lambda: get_act(cfg.act)) if cfg.act else (ScaledTanh if original else nn.ReLU)
        self.c1 = nn.Conv2d(cfg.in_channels, 6, 5)
        self.act1 = act()
        self.s2 = Subsampling(6) if original else nn.MaxPool2d(2)
        self.act2 = act() if original else nn.Identity()
        self.c3 = PartialConv2d(C3_TABLE, 6) if original else nn.Conv2d(6, 16, 5)
        self.act3 = act()
        self.s4 = Subsampling(16) if original else nn.MaxPool2d(2)
        self.act4 = act() if original else nn.Identity()
        self.c5 = nn.Conv2d(16, 120, 5)
        self.act5 = act()
        self.f6 = nn.Linear(120, 84)
        self.act6 = act()
        self.fc = nn.Linear(84, cfg.num_classes) if cfg.num_classes else nn.Identity()
        self.num_classes, self.num_features = cfg.num_classes, 84
        self.feature_info = [dict(module="act1", num_chs=6, reduction=1), dict(module="act2" if original else "s2", num_chs=6, reduction=2),
                             dict(module="act3", num_chs=16, reduction=2), dict(module="act4" if original else "s4", num_chs=16, reduction=4),
                             dict(module="act5", num_chs=120, reduction=4)]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x = self.act2(self.s2(self.act1(self.c1(x))))
        x = self.act4(self.s4(self.act3(self.c3(x))))
        return self.act5(self.c5(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.act6(self.f6(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)))
        return x if pre_logits else self.fc(x)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        self.fc = nn.Linear(84, num_classes) if num_classes else nn.Identity()
        self.num_classes = num_classes


def _create_lenet(variant: str, **kwargs) -> LeNet5:
    return LeNet5(LeNetConfig(variant=variant, **kwargs))


@register_model
def lenet5(**kwargs) -> LeNet5:
    """LeNet-5 as in LeCun et al. 1998: scaled tanh, trainable subsampling, C3 connection table."""
    return _create_lenet("original", **kwargs)


@register_model
def lenet5_relu(**kwargs) -> LeNet5:
    """The modern LeNet-5: ReLU, 2x2 max pooling, fully connected C3."""
    return _create_lenet("relu", **kwargs)
