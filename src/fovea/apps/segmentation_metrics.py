"""Semantic-segmentation metrics, accumulated over batches.

:class:`SegmentationMetrics` keeps a ``K x K`` confusion matrix ``C`` (rows the true class,
columns the predicted one; pixels whose target is the ignore index are left out) and
derives from it

- pixel accuracy ``sum_k C_kk / sum C``;
- per-class IoU (Jaccard) ``TP / (TP + FP + FN)`` and its mean over the classes that occur
  (in the target or the prediction), as in Long et al. (2015), "Fully convolutional networks";
- per-class Dice ``2 TP / (2 TP + FP + FN)`` (the F1 score of the pooled pixels) and its mean.

It also accumulates the boundary F1 score (BF score) of Csurka, Larlus & Perronnin (2013),
"What is a good evaluation measure for semantic segmentation?": for each image and class,
the boundary pixels of the predicted and of the true class region are compared with a
distance tolerance ``theta``; precision is the share of predicted boundary pixels within
``theta`` of a true one, recall the share of true boundary pixels within ``theta`` of a
predicted one, and ``BF = 2 P R / (P + R)``. Per-class BF is the mean over the images in
which the class occurs (in the target or the prediction); the reported BF is the mean over
classes. A boundary pixel is a pixel of the region with a 4-neighbour of another class
inside the image (the image border is not a boundary); distances are Euclidean, and
``theta`` defaults to 0.75% of the image diagonal as in the paper.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from fovea.errors import UserError

__all__ = ["IGNORE_INDEX", "SegmentationMetrics", "class_boundaries", "confusion_matrix"]

IGNORE_INDEX = 255


def _as_labels(preds: Tensor) -> Tensor:
    return preds.argmax(1) if preds.dim() == 4 else preds


def confusion_matrix(preds: Tensor, targets: Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """``(K, K)`` int64 counts, rows the target class and columns the predicted one.

    ``preds`` are class ids ``(N, H, W)`` or scores ``(N, K, H, W)``; ``targets`` class ids
    ``(N, H, W)``. Target pixels equal to ``ignore_index`` are not counted.
    """
    preds = _as_labels(preds)
    if preds.shape != targets.shape:
        raise UserError(f"Received predictions of shape {tuple(preds.shape)} and targets of shape "
                        f"{tuple(targets.shape)}; expected the same (N, H, W).")
    t, p = targets.reshape(-1).long(), preds.reshape(-1).long()
    keep = t != ignore_index
    t, p = t[keep], p[keep]
    if t.numel() and (int(t.max()) >= num_classes or int(t.min()) < 0):
        raise UserError(f"Targets hold class ids in [{int(t.min())}, {int(t.max())}]; expected 0..{num_classes - 1} "
                        f"or the ignore index {ignore_index}.")
    if p.numel() and (int(p.max()) >= num_classes or int(p.min()) < 0):
        raise UserError(f"Predictions hold class ids in [{int(p.min())}, {int(p.max())}]; "
                        f"expected 0..{num_classes - 1}.")
    return torch.bincount(t * num_classes + p, minlength=num_classes * num_classes).view(num_classes, num_classes)


def class_boundaries(labels: Tensor, num_classes: int) -> Tensor:
    """``(N, K, H, W)`` bool: pixels of class k with a 4-neighbour of another class inside the image."""
    onehot = F.one_hot(labels.long().clamp(0, num_classes), num_classes + 1)[..., :num_classes]
    x = onehot.permute(0, 3, 1, 2).float()
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")  # the border does not count as another class
    eroded = torch.stack([padded[..., :-2, 1:-1], padded[..., 2:, 1:-1],
                          padded[..., 1:-1, :-2], padded[..., 1:-1, 2:]]).amin(0)
    return (x > 0) & (eroded == 0)


def _disk(radius: float, device: torch.device) -> Tensor:
    r = int(math.floor(radius))
    offsets = torch.arange(-r, r + 1, device=device, dtype=torch.float32)
    return ((offsets[:, None] ** 2 + offsets[None, :] ** 2) <= radius * radius + 1e-9).float()


def _within(boundary: Tensor, radius: float) -> Tensor:
    """Pixels within Euclidean distance ``radius`` of a boundary pixel (a dilation by a disk)."""
    n, k, h, w = boundary.shape
    disk = _disk(radius, boundary.device)
    if disk.numel() == 1:
        return boundary
    r = disk.shape[0] // 2
    near = F.conv2d(boundary.float().reshape(n * k, 1, h, w), disk[None, None], padding=r)
    return (near > 0).view(n, k, h, w)


class SegmentationMetrics:
    """Accumulates a confusion matrix and BF scores over batches; ``compute`` gives the metrics.

    ``bf_tolerance`` is ``theta`` in pixels; ``None`` takes 0.75% of each batch's image
    diagonal (Csurka et al. 2013). ``boundary=False`` skips the BF score.
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX, bf_tolerance: float | None = None,
                 boundary: bool = True) -> None:
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
            raise UserError(f"Received num_classes={num_classes!r}; expected an integer >= 2.")
        if bf_tolerance is not None and not bf_tolerance >= 0:
            raise UserError(f"Received bf_tolerance={bf_tolerance!r}; expected a distance >= 0 in pixels or None.")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.bf_tolerance = bf_tolerance
        self.boundary = boundary
        self.reset()

    def reset(self) -> None:
        k = self.num_classes
        self.confusion = torch.zeros(k, k, dtype=torch.int64)
        self.bf_sum = torch.zeros(k, dtype=torch.float64)
        self.bf_count = torch.zeros(k, dtype=torch.int64)

    @torch.no_grad()
    def update(self, preds: Tensor, targets: Tensor) -> None:
        """Add a batch: ``preds`` class ids ``(N, H, W)`` or scores ``(N, K, H, W)``, ``targets`` ``(N, H, W)``."""
        preds = _as_labels(preds)
        self.confusion += confusion_matrix(preds, targets, self.num_classes, self.ignore_index).cpu()
        if self.boundary:
            self._update_bf(preds, targets)

    def _update_bf(self, preds: Tensor, targets: Tensor) -> None:
        k = self.num_classes
        h, w = targets.shape[-2:]
        theta = 0.0075 * math.hypot(h, w) if self.bf_tolerance is None else float(self.bf_tolerance)
        valid = (targets != self.ignore_index)[:, None]
        # the ignore id (and any id >= K) lands in no class channel, so ignored pixels border every class
        preds = torch.where(valid[:, 0], preds, torch.full_like(preds, k))
        pred_b = class_boundaries(preds, k) & valid
        true_b = class_boundaries(torch.where(valid[:, 0], targets, torch.full_like(targets, k)), k) & valid
        matched_pred = (pred_b & _within(true_b, theta)).sum((2, 3)).double()
        matched_true = (true_b & _within(pred_b, theta)).sum((2, 3)).double()
        n_pred, n_true = pred_b.sum((2, 3)).double(), true_b.sum((2, 3)).double()
        precision = matched_pred / n_pred.clamp(min=1)
        recall = matched_true / n_true.clamp(min=1)
        f = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp(min=1e-12),
                        torch.zeros_like(precision))
        # a region with no boundary on either side (the class fills the whole valid image) matches perfectly
        both_empty = (n_pred == 0) & (n_true == 0)
        f = torch.where(both_empty, torch.ones_like(f), f)
        present = torch.stack([(preds == c).flatten(1).any(1) | (targets == c).flatten(1).any(1)
                               for c in range(k)], 1)
        self.bf_sum += torch.where(present, f, torch.zeros_like(f)).sum(0).cpu()
        self.bf_count += present.sum(0).cpu()

    def compute(self) -> dict[str, Tensor | float]:
        """``pixel_accuracy``, ``iou`` / ``miou``, ``dice`` / ``mdice`` and ``bf`` / ``mbf``.

        Per-class values are float64 tensors with NaN for classes that never occurred; the
        means skip them.
        """
        c = self.confusion.double()
        tp = c.diag()
        fp, fn = c.sum(0) - tp, c.sum(1) - tp
        total = c.sum()
        nan = torch.full_like(tp, float("nan"))
        union = tp + fp + fn
        iou = torch.where(union > 0, tp / union.clamp(min=1), nan)
        dice = torch.where(union > 0, 2 * tp / (2 * tp + fp + fn).clamp(min=1), nan)
        out: dict[str, Tensor | float] = {
            "pixel_accuracy": float(tp.sum() / total) if total > 0 else float("nan"),
            "iou": iou, "miou": float(iou.nanmean()),
            "dice": dice, "mdice": float(dice.nanmean()),
        }
        if self.boundary:
            bf = torch.where(self.bf_count > 0, self.bf_sum / self.bf_count.clamp(min=1), nan)
            out["bf"] = bf
            out["mbf"] = float(bf.nanmean())
        return out
