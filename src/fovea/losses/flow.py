"""Optical-flow losses: the end-point error and FlowNet's multi-scale loss.

End-point error (EPE), the standard flow metric (Baker et al. 2011) and FlowNet's training
loss (Dosovitskiy et al. 2015): the Euclidean distance between the predicted and the true flow
vector, averaged over the pixels,

    EPE = 1/N * sum_x sqrt((u(x) - u_gt(x))^2 + (v(x) - v_gt(x))^2).

Multi-scale loss: FlowNet supervises every prediction of its refinement decoder, flow2 (1/4
of the input resolution) to flow6 (1/64), each against the ground truth brought to its size:

    L = sum_l w_l * EPE(flow_l, resize(flow_gt, size of flow_l)),

with (w2, w3, w4, w5, w6) = (0.005, 0.01, 0.02, 0.08, 0.32), the weights of the authors'
released training definition (``FLOWNET_WEIGHTS``).

Resizing (:func:`resize_flow`): the ground truth is shrunk by area averaging (average pooling
over the block of pixels each coarse cell covers, ``adaptive_avg_pool2d``), which is the mean
motion of that block; bilinear sampling would pick a few pixels and alias thin structures.
The flow values are scaled with the grid: u by new_width / width and v by new_height / height,
since fovea's predictions are in pixels of their own level (``fovea.models.flownet``). With
these units the paper's weights leave the five terms of similar size at the start of training:
an error of e input pixels is e / 2^l at level l, while the weights grow about as fast.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from fovea.errors import UserError

__all__ = ["FLOWNET_WEIGHTS", "epe", "multiscale_epe", "resize_flow"]

# flow2, flow3, flow4, flow5, flow6: finest first, the order FlowNet's forward returns them.
FLOWNET_WEIGHTS = (0.005, 0.01, 0.02, 0.08, 0.32)


def _check_flow(name: str, x: Tensor) -> None:
    if x.dim() not in (3, 4) or x.shape[-3] != 2:
        raise UserError(f"Received {name} of shape {tuple(x.shape)}, expected (B, 2, H, W) or (2, H, W).")


def _as_mask(mask: Tensor, flow: Tensor) -> Tensor:
    """A (..., 1, H, W) float mask for a (..., 2, H, W) flow from (H, W), (B, H, W) or (B, 1, H, W)."""
    m = mask.to(flow.dtype)
    if m.dim() == flow.dim() - 1:
        m = m.unsqueeze(-3)
    if m.dim() != flow.dim() or m.shape[-3] != 1 or m.shape[-2:] != flow.shape[-2:]:
        raise UserError(f"Received a mask of shape {tuple(mask.shape)} for a flow of shape {tuple(flow.shape)}, "
                        "expected (B, H, W) or (B, 1, H, W).")
    return m


def epe(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean end-point error between two flow fields (B, 2, H, W) (or (2, H, W)).

    ``mask`` (bool or 0/1, (B, H, W) or (B, 1, H, W)) keeps the pixels with known ground truth:
    the mean is over those (0 when there is none). Pixels outside the mask may hold anything,
    even NaN or Middlebury's 1e9 marker. The gradient at a zero error is taken as 0.
    """
    _check_flow("a predicted flow", pred)
    _check_flow("a target flow", target)
    if pred.shape != target.shape:
        raise UserError(f"Received a prediction of shape {tuple(pred.shape)} and a target of shape "
                        f"{tuple(target.shape)}, expected the same shape.")
    if mask is None:
        return torch.linalg.vector_norm(pred - target, dim=-3).mean()
    m = _as_mask(mask, pred)
    diff = torch.where(m > 0, pred - target, torch.zeros((), dtype=pred.dtype, device=pred.device))
    dist = torch.linalg.vector_norm(diff, dim=-3) * m.squeeze(-3)
    return dist.sum() / m.sum().clamp_min(1)


def resize_flow(flow: Tensor, size: tuple[int, int], mode: str = "area") -> Tensor:
    """Resize a flow field (B, 2, H, W) to ``size`` = (h, w) and scale its values with the grid
    (u by w / W, v by h / H). ``mode``: ``"area"`` (block averages; for shrinking) or ``"bilinear"``
    (for enlarging; align_corners=False)."""
    _check_flow("a flow", flow)
    h, w = size
    if mode == "area":
        out = F.adaptive_avg_pool2d(flow, (h, w))
    elif mode == "bilinear":
        out = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False)
    else:
        raise UserError(f"Received mode={mode!r}, expected 'area' or 'bilinear'.")
    scale = torch.tensor([w / flow.shape[-1], h / flow.shape[-2]], dtype=flow.dtype, device=flow.device)
    return out * scale.view(2, 1, 1)


def multiscale_epe(preds: Sequence[Tensor], target: Tensor, weights: Sequence[float] = FLOWNET_WEIGHTS,
                   mask: Tensor | None = None) -> Tensor:
    """FlowNet's multi-scale loss: sum_l w_l * EPE(pred_l, target area-resized to pred_l's size).

    ``preds`` are finest first, each (B, 2, h_l, w_l) in pixels of its own grid (what
    ``FlowNet.forward`` returns in training mode); ``target`` is the (B, 2, H, W) ground truth in
    input pixels. With a ``mask`` the ground truth of a coarse cell is the mean over its known
    pixels, and a cell with none is left out.
    """
    if len(preds) != len(weights):
        raise UserError(f"Received {len(preds)} predictions and {len(weights)} weights, expected one weight each.")
    _check_flow("a target flow", target)
    total = target.new_zeros(())
    for pred, w in zip(preds, weights):
        size = tuple(pred.shape[-2:])
        if mask is None:
            total = total + w * epe(pred, resize_flow(target, size))
            continue
        m = _as_mask(mask, target)
        known = torch.where(m > 0, target, torch.zeros((), dtype=target.dtype, device=target.device))
        cover = F.adaptive_avg_pool2d(m, size)
        small = resize_flow(known * m, size) / cover.clamp_min(1e-12)
        total = total + w * epe(pred, small, cover > 0)
    return total
