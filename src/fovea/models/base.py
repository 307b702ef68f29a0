"""The surface every fovea classifier offers, so that transfer learning, metric learning,
segmentation decoders and explainers can reuse any backbone."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn


class AuxOutputs(NamedTuple):
    """What GoogLeNet and Inception v3 return in training mode when their auxiliary
    classifiers are on: the main logits and the auxiliary logits (eval mode returns logits)."""

    logits: torch.Tensor
    aux: tuple[torch.Tensor, ...]


class Classifier(nn.Module):
    """Base class: ``forward(x) == forward_head(forward_features(x))``.

    Subclasses set ``num_classes``, ``num_features`` (width of the pre-logits vector) and
    ``feature_info`` (a list of ``dict(module=name, num_chs=C, reduction=stride)``, one per
    stage, shallow to deep), and implement ``forward_features``, ``forward_head`` and
    ``get_classifier``/``reset_classifier``.
    """

    num_classes: int
    num_features: int
    feature_info: list[dict]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        raise NotImplementedError

    def get_classifier(self) -> nn.Module:
        raise NotImplementedError

    def reset_classifier(self, num_classes: int) -> None:
        raise NotImplementedError

    def forward(self, x: torch.Tensor):
        return self.forward_head(self.forward_features(x))


def new_linear(old: nn.Linear | nn.Module, num_classes: int) -> nn.Module:
    """A fresh output layer with the same input width as ``old``; identity for 0 classes."""
    if num_classes == 0:
        return nn.Identity()
    return nn.Linear(old.in_features, num_classes)
