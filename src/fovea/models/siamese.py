"""Embedding networks for metric learning: any registered backbone (through its
``forward_features``, globally average-pooled) followed by a projection to ``dim`` dimensions,
optionally L2-normalized; and the two branches of a Siamese or triplet network.

The branches f (anchors, or the first domain) and g (positives and negatives, or the second
domain) share their weights in one of three ways, as the survey's section VI describes for
different kinds of data:

- ``shared``: f = g, one network (the two inputs come from the same domain);
- ``unshared``: f and g are separate networks (cross-domain: sketches against photos);
- ``half``: the upper layers (the projection) are shared, the lower layers (the backbone) are
  separate (similar domains: each keeps its own low-level filters, both map into one space).

A module shared by both branches is stored once, so the state dict has no duplicate tensors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fovea.errors import UserError

__all__ = ["BRANCHES", "MetricNet", "Projection", "pooled_features"]

BRANCHES = ("shared", "unshared", "half")


def pooled_features(backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``forward_features`` reduced to one vector per image (global average over space)."""
    f = backbone.forward_features(x)
    if f.ndim == 4:
        return f.mean((2, 3))
    return f.flatten(1)


class Projection(nn.Module):
    """feature -> hidden -> ReLU -> dim (or a single linear map with ``hidden=0``)."""

    def __init__(self, in_dim: int, dim: int, hidden: int = 256):
        super().__init__()
        self.net = (nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim))
                    if hidden else nn.Linear(in_dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MetricNet(nn.Module):
    """Two branches, f (``embed(x, "a")``) and g (``embed(x, "b")``); ``forward`` is f.

    ``make_backbone()`` builds a fresh backbone (called once, or twice when the lower layers are
    separate); ``preprocess`` is applied to every input, as in a classifier run."""

    def __init__(self, make_backbone, input_shape: tuple[int, int, int], *, dim: int = 64,
                 branches: str = "shared", normalize: bool = True, hidden: int = 256,
                 preprocess: nn.Module | None = None):
        super().__init__()
        if branches not in BRANCHES:
            raise UserError(f"--branches {branches!r}: expected one of {', '.join(BRANCHES)}")
        if dim < 1:
            raise UserError(f"--embed-dim {dim} must be at least 1")
        self.branches, self.dim, self.normalize = branches, dim, normalize
        self.preprocess = preprocess if preprocess is not None else nn.Identity()
        self.backbone_a = make_backbone()
        with torch.no_grad():
            was = self.backbone_a.training
            self.backbone_a.eval()
            feat = pooled_features(self.backbone_a, torch.zeros(1, *input_shape)).shape[1]
            self.backbone_a.train(was)
        self.feature_dim = feat
        self.proj_a = Projection(feat, dim, hidden)
        self.backbone_b = make_backbone() if branches in ("unshared", "half") else None
        self.proj_b = Projection(feat, dim, hidden) if branches == "unshared" else None

    def embed(self, x: torch.Tensor, branch: str = "a") -> torch.Tensor:
        if branch not in ("a", "b"):
            raise ValueError(f"branch must be 'a' or 'b', got {branch!r}")
        backbone = self.backbone_b if branch == "b" and self.backbone_b is not None else self.backbone_a
        proj = self.proj_b if branch == "b" and self.proj_b is not None else self.proj_a
        z = proj(pooled_features(backbone, self.preprocess(x)))
        return F.normalize(z.float(), dim=1) if self.normalize else z

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(x, "a")
