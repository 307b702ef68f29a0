"""The surface every fovea classifier offers, so that transfer learning, metric learning,
segmentation decoders and explainers can reuse any backbone."""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from typing import Iterator, NamedTuple

import torch
from torch import nn

from fovea.errors import UserError


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
    canonical_size: int = 224  # the input side the architecture was published for

    @property
    def min_input_size(self) -> int:
        """The smallest input side the model is meant for: by default its total stride, so the
        last feature map is at least 1x1. Families with other limits set it."""
        return getattr(self, "_min_input_size", None) or self.feature_info[-1]["reduction"]

    @min_input_size.setter
    def min_input_size(self, value: int) -> None:
        self._min_input_size = value

    @property
    def default_input_size(self) -> tuple[int, int, int]:
        """C x H x W of the published input (C from the first convolution)."""
        first = next(m for m in self.modules() if isinstance(m, nn.Conv2d) or hasattr(m, "in_channels"))
        return (first.in_channels, self.canonical_size, self.canonical_size)

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

    def check_input(self, x: torch.Tensor) -> None:
        """Refuse an input smaller than ``self.min_input_size`` with an ``InputTooSmallError``
        that names the layer where the spatial size drops below 1 (found by tracing)."""
        smallest = getattr(self, "min_input_size", 1)
        if min(x.shape[2:]) >= smallest or torch.compiler.is_compiling():
            return
        from fovea.arith import is_tracing, trace

        if not is_tracing():  # while tracing, the tracer itself stops at the layer
            trace(self, tuple(x.shape[1:]), device=x.device)


def new_linear(old: nn.Linear | nn.Module, num_classes: int) -> nn.Module:
    """A fresh output layer with the same input width as ``old``; identity for 0 classes."""
    if num_classes == 0:
        return nn.Identity()
    return nn.Linear(old.in_features, num_classes)


def build_config(config_cls, name: str, kwargs: dict, *, fixed: dict | None = None, also: tuple[str, ...] = ()):
    """``config_cls(**fixed, **kwargs)`` for a builder named ``name``; a keyword argument that is not
    one of the config's fields (those in ``fixed`` are the builder's to set) is refused in one line
    that lists the valid ones, with the builder's own extra arguments ``also``."""
    fixed = fixed or {}
    fields = [f.name for f in dataclasses.fields(config_cls) if f.name not in fixed]
    unknown = sorted(set(kwargs) - set(fields))
    if unknown:
        raise UserError(f"{name} does not take {', '.join(unknown)}; expected some of {', '.join([*fields, *also])}")
    return config_cls(**fixed, **kwargs)


def same_architecture(cfg, ref, ignore: tuple[str, ...] = ()) -> bool:
    """Whether two configs of one family differ only in the fields named in ``ignore`` (so that
    weights made for ``ref``, e.g. torchvision's, still fit a model built from ``cfg``)."""
    return all(getattr(cfg, f.name) == getattr(ref, f.name) for f in dataclasses.fields(cfg) if f.name not in ignore)


def model_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The main logits of ``model(x)`` as float, whether or not it returns auxiliary outputs."""
    out = model(x)
    return (out.logits if isinstance(out, AuxOutputs) else out).float()


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model`` in eval mode and give every submodule back the mode it had (a model half
    in train mode, e.g. with frozen batch norm, stays that way)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training
