"""Weight initialization schemes."""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

_CONV_LINEAR = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                nn.ConvTranspose3d, nn.Linear)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm)


def _reset_norms(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, _NORMS) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def he_init(model: nn.Module) -> nn.Module:
    """He et al. 2015: W ~ N(0, sqrt(2 / n_l)), n_l = k*k*fan-in channels; biases zero.
    Linear layers: the same rule with n_l = in_features."""
    for m in model.modules():
        if isinstance(m, _CONV_LINEAR):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    _reset_norms(model)
    return model


def alexnet_init(model: nn.Module, bias_one: Iterable[str] = ()) -> nn.Module:
    """Krizhevsky et al. 2012: W ~ N(0, 0.01); biases 0, except the layers named in
    ``bias_one`` (AlexNet: conv2, conv4, conv5 and the hidden fully connected layers),
    whose bias is 1 to give the ReLUs positive inputs early on."""
    ones = set(bias_one)
    for name, m in model.named_modules():
        if isinstance(m, _CONV_LINEAR):
            nn.init.normal_(m.weight, 0.0, 0.01)
            if m.bias is not None:
                nn.init.constant_(m.bias, 1.0 if name in ones else 0.0)
    _reset_norms(model)
    return model


def xavier_init(model: nn.Module) -> nn.Module:
    """Glorot & Bengio 2010: uniform with variance 2 / (fan_in + fan_out); biases zero."""
    for m in model.modules():
        if isinstance(m, _CONV_LINEAR):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    _reset_norms(model)
    return model


@torch.no_grad()
def truncated_normal_(tensor: torch.Tensor, std: float, cut: float = 2.0) -> torch.Tensor:
    """Fill with N(0, std^2) draws truncated to [-cut * std, cut * std] (TensorFlow's
    ``truncated_normal``, the Inception models' initializer), redrawing values outside.

    ``torch.nn.init.trunc_normal_`` takes absolute bounds (torchvision passes -2, 2, which at
    std 0.01 truncates nothing) and inverts the CDF, several times slower on large tensors."""
    flat = tensor.view(-1)
    flat.normal_(0.0, std)
    idx = (flat.abs() > cut * std).nonzero().squeeze(1)
    while idx.numel():  # 4.6% of the draws at cut = 2; redraw only those
        redraw = flat.new_empty(idx.numel()).normal_(0.0, std)
        ok = redraw.abs() <= cut * std
        flat[idx[ok]] = redraw[ok]
        idx = idx[~ok]
    return tensor


def inception_init(model: nn.Module, std: float, stds: dict[nn.Module, float] | None = None) -> nn.Module:
    """Truncated-normal weights (std ``std``, or ``stds[module]`` for the modules listed),
    zero biases, batch norm at identity: the initialization of torchvision's GoogLeNet
    (std 0.01) and Inception v3 (std 0.1)."""
    stds = stds or {}
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            truncated_normal_(m.weight, stds.get(m, std))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model


INIT_SCHEMES = {"he": he_init, "alexnet": alexnet_init, "xavier": xavier_init}


def init_weights(model: nn.Module, scheme: str = "he", **kwargs) -> nn.Module:
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"unknown init scheme {scheme!r}; expected one of {', '.join(INIT_SCHEMES)}")
    return INIT_SCHEMES[scheme](model, **kwargs)
