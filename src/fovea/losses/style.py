"""Losses of neural style (Gatys, Ecker & Bethge 2016, "Image Style Transfer Using Convolutional
Neural Networks") and of perceptual training (Johnson, Alahi & Fei-Fei 2016, "Perceptual Losses
for Real-Time Style Transfer and Super-Resolution"), and the network taps that feed them.

With ``F^l`` the response of layer ``l`` to the image (``N_l`` channels, ``M_l = H_l W_l``
positions, reshaped to ``N_l x M_l``):

- Gram matrix ``G^l_ij = sum_k F^l_ik F^l_jk`` (:func:`gram_matrix`; ``normalize=True`` divides
  by ``N_l M_l``, Johnson et al.'s convention).
- Content loss ``L_content = 1/2 sum_ij (F^l_ij - P^l_ij)^2`` against the photo's response ``P``
  (:func:`content_loss`).
- Style loss of one layer ``E_l = 1 / (4 N_l^2 M_l^2) sum_ij (G^l_ij - A^l_ij)^2`` against the
  artwork's Gram matrix ``A`` (:func:`style_layer_loss`); ``L_style = sum_l w_l E_l``.
- Total loss ``L = alpha L_content + beta L_style`` (+ ``tv`` times :func:`total_variation`).

Johnson et al.'s feature reconstruction loss is ``||F - P||^2 / (N M)`` (a mean squared error,
:func:`feature_loss`) and their style reconstruction loss ``||G/(NM) - A/(NM)||_F^2``
(:func:`gram_loss`). Each function takes a batch and returns the sum over the batch of the
per-image losses for the Gatys forms, the mean over the batch for the Johnson forms (training
losses).

:class:`FeatureTap` runs a VGG (any fovea ``VGG``, whose ``layer_names`` give the papers' names)
only up to the deepest layer asked for, and returns the named responses. Layer names follow the
papers: ``relu4_2`` is the rectified response of the convolution ``conv4_2``. The paper's Caffe
network rectifies in place, so what Gatys et al. call ``conv4_2`` is fovea's ``relu4_2``; fovea's
``conv4_2`` is the response before the ReLU.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from fovea.errors import UserError

__all__ = ["FeatureTap", "content_loss", "feature_loss", "gram_loss", "gram_matrix", "style_layer_loss",
           "total_variation"]


def _flat(f: Tensor) -> Tensor:
    if f.dim() != 4:
        raise ValueError(f"expected feature maps (B, C, H, W), got shape {tuple(f.shape)}")
    return f.flatten(2)  # (B, N, M)


def gram_matrix(f: Tensor, normalize: bool = False) -> Tensor:
    """``G_ij = sum_k F_ik F_jk`` for each image of a (B, N, H, W) batch: (B, N, N). Computed in
    float32 at least, so bf16 features do not round the sums."""
    x = _flat(f)
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    g = x @ x.transpose(1, 2)
    if normalize:
        g = g / (x.shape[1] * x.shape[2])
    return g


def content_loss(f: Tensor, p: Tensor) -> Tensor:
    """``1/2 sum (F - P)^2``, summed over the batch (Gatys et al. eq. 1)."""
    return 0.5 * (f - p).pow(2).sum()


def style_layer_loss(g: Tensor, a: Tensor, n: int, m: int) -> Tensor:
    """``E_l = sum (G - A)^2 / (4 N^2 M^2)`` for unnormalized Gram matrices of a layer with ``n``
    channels and ``m`` positions, summed over the batch (Gatys et al. eq. 4)."""
    return (g - a).pow(2).sum() / (4.0 * n * n * m * m)


def feature_loss(f: Tensor, p: Tensor) -> Tensor:
    """Johnson et al.'s feature reconstruction loss ``||F - P||^2 / (C H W)``, averaged over the batch."""
    return (f - p).pow(2).mean()


def gram_loss(g: Tensor, a: Tensor) -> Tensor:
    """Johnson et al.'s style reconstruction loss ``||G - A||_F^2`` of normalized Gram matrices
    (``gram_matrix(f, normalize=True)``), averaged over the batch; ``a`` may be (1, N, N)."""
    return (g - a).pow(2).sum((1, 2)).mean()


def total_variation(x: Tensor, power: float = 2.0) -> Tensor:
    """``sum (x[i+1, j] - x[i, j])^p + (x[i, j+1] - x[i, j])^p`` over every channel and image
    (``power=2``: squared differences, Mahendran & Vedaldi 2015; ``power=1``: anisotropic TV)."""
    dh = (x[..., 1:, :] - x[..., :-1, :]).abs()
    dw = (x[..., :, 1:] - x[..., :, :-1]).abs()
    if power == 1:
        return dh.sum() + dw.sum()
    return dh.pow(power).sum() + dw.pow(power).sum()


class FeatureTap(nn.Module):
    """The responses of named layers of a VGG-like network, running it only as far as needed.

    ``net`` has a ``features`` ``nn.Sequential`` and a ``layer_names`` dict mapping
    ``"features.N"`` to the papers' names (``conv1_1``, ``relu1_1``, ``pool1``, ...), as fovea's
    VGG has. ``layers`` are those names; ``forward(x)`` returns ``{name: response}``. The layers
    after the deepest one asked for are dropped (``self.body`` is the kept prefix), the
    parameters are frozen, and the tap stays in eval mode.
    """

    def __init__(self, net: nn.Module, layers: Sequence[str]):
        super().__init__()
        names = getattr(net, "layer_names", None)
        features = getattr(net, "features", None)
        if not isinstance(names, dict) or not isinstance(features, nn.Sequential):
            raise UserError(f"{type(net).__name__} has no VGG-style features and layer names; use a VGG")
        index = {name: int(key.split(".")[1]) for key, name in names.items() if key.startswith("features.")}
        if not layers:
            raise UserError("no layers given; expected names such as relu4_2")
        for layer in layers:
            if layer not in index:
                close = difflib.get_close_matches(layer, list(index), n=3, cutoff=0.6)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise UserError(f"layer {layer!r} is not in {type(net).__name__}; expected one of "
                                f"{', '.join(sorted(index, key=index.get))}{hint}")
        self.layers = list(dict.fromkeys(layers))
        self.at = {index[name]: name for name in self.layers}
        last = max(self.at)
        self.body = nn.Sequential(*list(features.children())[: last + 1])
        for p in self.body.parameters():
            p.requires_grad_(False)
        self.body.eval()

    def train(self, mode: bool = True) -> "FeatureTap":  # frozen: always eval (batch norm statistics stay fixed)
        return super().train(False)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for i, module in enumerate(self.body):
            x = module(x)
            if i in self.at:
                out[self.at[i]] = x
        return out
