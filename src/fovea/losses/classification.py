"""Classification losses: softmax cross-entropy, label smoothing, multiclass (squared) hinge.

Every loss takes logits of shape (N, K) and int64 targets of shape (N,) and returns the
mean over the batch.
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from fovea.errors import UserError

__all__ = ["LOSSES", "LabelSmoothingCrossEntropy", "MulticlassHinge", "build_loss", "l2_regularization"]

LOSSES = ("ce", "label-smoothing", "hinge", "squared-hinge")


class LabelSmoothingCrossEntropy(nn.Module):
    """Label-smoothing regularization (Szegedy et al. 2016, Inception-v3).

    The one-hot target q is mixed with the uniform prior u(k) = 1/K,
    q'(k) = (1 - gamma) q(k) + gamma / K, and the loss is the cross-entropy
    -sum_k q'(k) log p(k) with p = softmax(logits), that is
    (1 - gamma) * CE(p, y) + gamma * mean_k(-log p(k)).
    Equal to ``F.cross_entropy(logits, y, label_smoothing=gamma)``.
    """

    def __init__(self, smoothing: float = 0.1) -> None:
        super().__init__()
        if not 0.0 <= smoothing <= 1.0:
            raise UserError(f"Received smoothing={smoothing}; expected a value in [0, 1].")
        self.smoothing = smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits, dim=1)
        nll = -log_p.gather(1, target[:, None]).squeeze(1)
        uniform = -log_p.mean(dim=1)
        return ((1.0 - self.smoothing) * nll + self.smoothing * uniform).mean()

    def extra_repr(self) -> str:
        return f"smoothing={self.smoothing}"


class MulticlassHinge(nn.Module):
    """The multiclass SVM (max-margin) loss of the tutorial (Weston & Watkins 1999 form):

        L_i = sum_{j != y_i} max(0, s_j - s_{y_i} + Delta),

    averaged over the batch; ``squared=True`` squares each term (squared hinge).
    PyTorch's ``nn.MultiMarginLoss(margin=Delta, p=1 or 2)`` divides the sum by K as well,
    so this loss equals it times K.
    """

    def __init__(self, margin: float = 1.0, squared: bool = False) -> None:
        super().__init__()
        if margin < 0:
            raise UserError(f"Received margin={margin}; the hinge margin Delta must be >= 0.")
        self.margin = margin
        self.squared = squared

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        correct = logits.gather(1, target[:, None])
        margins = (logits - correct + self.margin).clamp_min(0.0)
        # the j = y_i term is max(0, Delta), which the sum leaves out
        margins = margins.scatter(1, target[:, None], 0.0)
        if self.squared:
            margins = margins * margins
        return margins.sum(dim=1).mean()

    def extra_repr(self) -> str:
        return f"margin={self.margin}, squared={self.squared}"


def l2_regularization(parameters: Iterable[torch.Tensor], strength: float) -> torch.Tensor:
    """The L2 penalty lambda * sum(W**2) to add to a loss. Its gradient is 2 lambda W, so it
    matches an optimizer's ``weight_decay`` = 2 lambda. Usually applied to weights only."""
    params = list(parameters)
    if not params:
        return torch.zeros(())
    return strength * sum(p.pow(2).sum() for p in params)


def build_loss(name: str = "ce", *, smoothing: float = 0.1, margin: float = 1.0) -> nn.Module:
    """Build a classification loss by name (one of ``LOSSES``): "ce" softmax cross-entropy,
    "label-smoothing" with ``smoothing`` gamma, "hinge" and "squared-hinge" with ``margin`` Delta."""
    if name == "ce":
        return nn.CrossEntropyLoss()
    if name == "label-smoothing":
        return LabelSmoothingCrossEntropy(smoothing)
    if name == "hinge":
        return MulticlassHinge(margin)
    if name == "squared-hinge":
        return MulticlassHinge(margin, squared=True)
    raise UserError(f"Unknown loss {name!r}; expected one of: {', '.join(LOSSES)}.")
