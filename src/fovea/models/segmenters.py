"""Builders of the pixels-to-pixels segmentation models, by name.

Segmenters return (N, num_classes, H, W) score maps rather than (N, num_classes) logits, so
they live beside the classifier registry (whose every model offers the classifier surface:
``forward_head``, ``reset_classifier`` ...) rather than in it.
"""

from __future__ import annotations

import difflib
from typing import Callable

from torch import nn

from fovea.errors import UnknownModelError, UserError
from fovea.models.fcn import fcn8s, fcn16s, fcn32s
from fovea.models.unet import unet, unet_same

__all__ = ["SEGMENTERS", "build_segmenter", "list_segmenters"]

SEGMENTERS: dict[str, Callable[..., nn.Module]] = {
    "fcn32s": fcn32s,
    "fcn16s": fcn16s,
    "fcn8s": fcn8s,
    "unet": unet,
    "unet-same": unet_same,
}


def list_segmenters() -> list[str]:
    """Names ``build_segmenter`` knows, sorted."""
    return sorted(SEGMENTERS)


def build_segmenter(name: str, num_classes: int | None = None, in_channels: int | None = None, **kwargs) -> nn.Module:
    """A segmentation model by name (``list_segmenters()``); ``num_classes`` and ``in_channels``
    override the family's defaults (FCN: 21 and 3, U-Net: 2 and 1) and other keyword arguments
    go to its config (``width=``, ``fc_width=``, ``backbone=`` for FCN; ``base=``, ``depth=``
    for U-Net)."""
    if name not in SEGMENTERS:
        close = difflib.get_close_matches(name, list(SEGMENTERS), n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else f"expected one of {', '.join(list_segmenters())}"
        raise UnknownModelError(f"unknown segmentation model {name!r}; {hint}")
    for key, val in (("num_classes", num_classes), ("in_channels", in_channels)):
        if val is not None:
            if not isinstance(val, int) or val < 1:
                raise UserError(f"Received {key}={val!r}; expected an integer >= 1.")
            kwargs[key] = val
    return SEGMENTERS[name](**kwargs)
