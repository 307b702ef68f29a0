"""Segmentation models by name: every one gives per-pixel class scores."""

import pytest
import torch

import fovea
from fovea.errors import UnknownModelError, UserError
from fovea.models.fcn import FCN
from fovea.models.segmenters import build_segmenter, list_segmenters
from fovea.models.unet import UNet

SMALL = {"fcn32s": dict(width=1 / 16, fc_width=16), "fcn16s": dict(width=1 / 16, fc_width=16),
         "fcn8s": dict(width=1 / 16, fc_width=16), "unet": dict(base=2, depth=2), "unet-same": dict(base=2, depth=2)}


@pytest.mark.parametrize("name", list_segmenters())
def test_every_segmenter_scores_every_pixel(name):
    model = build_segmenter(name, num_classes=4, in_channels=2, **SMALL[name])
    assert isinstance(model, FCN if name.startswith("fcn") else UNet)
    x = torch.randn(2, 2, 44, 44)  # valid for the depth-2 U-Net (output 4x4), divisible by 4
    out = model(x)
    side = 4 if name == "unet" else 44
    assert out.shape == (2, 4, side, side)
    out.square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


def test_names_and_errors():
    assert list_segmenters() == ["fcn16s", "fcn32s", "fcn8s", "unet", "unet-same"]
    assert not set(list_segmenters()) & set(fovea.list_models())  # kept apart from the classifiers
    with pytest.raises(UnknownModelError, match="'fcn8'; did you mean fcn8s"):
        build_segmenter("fcn8")
    with pytest.raises(UserError, match="num_classes=0"):
        build_segmenter("unet", num_classes=0)
    assert build_segmenter("fcn8s", **SMALL["fcn8s"]).num_classes == 21
    assert build_segmenter("unet", **SMALL["unet"]).cfg.in_channels == 1
