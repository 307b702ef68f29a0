"""Losses: classification (cross-entropy, label smoothing, multiclass hinge)."""

from fovea.losses.classification import (
    LOSSES,
    LabelSmoothingCrossEntropy,
    MulticlassHinge,
    build_loss,
    l2_regularization,
)

__all__ = ["LOSSES", "LabelSmoothingCrossEntropy", "MulticlassHinge", "build_loss", "l2_regularization"]
