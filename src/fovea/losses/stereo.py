"""Unsupervised stereo losses: inverse warping, photometric reconstruction and smoothness.

Garg, Kumar, Carneiro & Reid 2016, "Unsupervised CNN for single view depth estimation: geometry
to the rescue". A network predicts the disparity d of the left view of a rectified pair; a
left pixel (x, y) shows the scene point that the right view shows at (x - d(x, y), y), so the
right image sampled there (inverse warping, bilinear, :func:`warp_right_to_left`) reconstructs
the left one:

    left_hat(x, y) = right(x - d(x, y), y).

The network learns from how well that reconstruction matches, with no ground-truth depth:

    L = photometric(left, left_hat) + smoothness_weight * smoothness(d).

Photometric terms (:func:`photometric_error`, per pixel, averaged over the channels):

- ``l2``: (left - left_hat)^2, Garg's reconstruction loss;
- ``l1``: |left - left_hat|;
- ``ssim``: 0.85 * (1 - SSIM) / 2 + 0.15 * |left - left_hat| (Godard, Mac Aodha & Brostow 2017,
  "Unsupervised monocular depth estimation with left-right consistency"), SSIM over 3x3 windows
  (plain means, reflection padding), C1 = 0.01^2, C2 = 0.03^2.

Pixels whose match falls outside the right image (x - d < 0 or > W - 1: the left border, which
the right camera does not see) are left out of the photometric mean (:func:`warp_right_to_left`
returns the mask); the mask is not differentiated.

Smoothness terms (:func:`disparity_smoothness`), on the disparity in pixels (so a slanted plane
costs the same at every image scale):

- ``l2``: mean of (dd/dx)^2 + (dd/dy)^2, Garg's squared L2 norm of the disparity gradient;
- ``edge``: mean of |dd/dx| exp(-|dI/dx|) + |dd/dy| exp(-|dI/dy|), the edge-aware L1 term of
  Godard et al. (image gradients averaged over the channels), which lets the disparity jump
  where the image has an edge.

Finite differences are forward differences between neighbouring pixels; each mean runs over
the (H, W - 1) horizontal and (H - 1, W) vertical differences.

Multi-scale (:func:`multiscale_stereo_loss`): a prediction at 1/2^k of the input size is
scored on the images average-pooled to that size, its disparity in that scale's pixels, and the
terms of the scales are averaged. A coarse scale sees the low frequencies of the images, whose
photometric error still slopes towards a match many input pixels away.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from fovea.errors import UserError

__all__ = ["PHOTOMETRIC", "SMOOTHNESS", "StereoLoss", "disparity_smoothness", "multiscale_stereo_loss",
           "parse_stereo_loss", "photometric_error", "ssim_map", "stereo_loss", "warp_right_to_left"]

PHOTOMETRIC = ("l2", "l1", "ssim")
SMOOTHNESS = ("l2", "edge")
SSIM_WEIGHT = 0.85  # Godard et al.'s alpha


def parse_stereo_loss(text: str) -> tuple[str, str]:
    """``PHOTOMETRIC[:SMOOTHNESS]`` -> (photometric, smoothness), e.g. ``l2:l2`` (Garg et al.) or
    ``ssim:edge``; the smoothness term defaults to ``edge``."""
    photo, _, smooth = str(text).partition(":")
    smooth = smooth or "edge"
    if photo not in PHOTOMETRIC or smooth not in SMOOTHNESS:
        raise UserError(f"--loss {text!r}: expected PHOTOMETRIC[:SMOOTHNESS] with PHOTOMETRIC one of "
                        f"{', '.join(PHOTOMETRIC)} and SMOOTHNESS one of {', '.join(SMOOTHNESS)}, "
                        "e.g. l2:l2 or ssim:edge")
    return photo, smooth


def _check_pair(image: Tensor, disp: Tensor) -> None:
    if image.dim() != 4 or disp.dim() != 4 or disp.shape[1] != 1 or disp.shape[0] != image.shape[0] \
            or disp.shape[-2:] != image.shape[-2:]:
        raise UserError(f"Received an image of shape {tuple(image.shape)} and a disparity of shape "
                        f"{tuple(disp.shape)}; expected (B, C, H, W) and (B, 1, H, W).")


def warp_right_to_left(right: Tensor, disp: Tensor, padding_mode: str = "border") -> tuple[Tensor, Tensor]:
    """Inverse warping: ``left_hat(x, y) = right(x - disp(x, y), y)`` by bilinear sampling
    (``grid_sample``, pixel centres at integer coordinates, ``align_corners=True``).

    ``right``: (B, C, H, W); ``disp``: (B, 1, H, W), the left view's disparity in pixels.
    Returns the reconstruction (B, C, H, W) and a (B, 1, H, W) float mask, 1 where the sample
    lies inside the right image (0 <= x - d <= W - 1), not differentiated."""
    _check_pair(right, disp)
    b, _, h, w = right.shape
    xs = torch.arange(w, device=disp.device, dtype=disp.dtype).view(1, 1, 1, w)
    ys = torch.arange(h, device=disp.device, dtype=disp.dtype).view(1, 1, h, 1)
    x_src = xs - disp  # (B, 1, H, W)
    gx = 2 * x_src / max(w - 1, 1) - 1
    gy = (2 * ys / max(h - 1, 1) - 1).expand_as(gx)
    grid = torch.stack([gx[:, 0], gy[:, 0]], dim=-1)  # (B, H, W, 2) as (x, y)
    warped = F.grid_sample(right, grid.to(right.dtype), mode="bilinear", padding_mode=padding_mode,
                           align_corners=True)
    valid = ((x_src >= 0) & (x_src <= w - 1)).to(right.dtype).detach()
    return warped, valid


def ssim_map(x: Tensor, y: Tensor, c1: float = 0.01 ** 2, c2: float = 0.03 ** 2) -> Tensor:
    """Per-pixel SSIM (Wang et al. 2004) over 3x3 windows with uniform weights and reflection
    padding, as Godard et al. compute it; (B, C, H, W) in, (B, C, H, W) out, in [-1, 1]."""
    x, y = F.pad(x, (1, 1, 1, 1), mode="reflect"), F.pad(y, (1, 1, 1, 1), mode="reflect")
    mu_x, mu_y = F.avg_pool2d(x, 3, 1), F.avg_pool2d(y, 3, 1)
    var_x = F.avg_pool2d(x * x, 3, 1) - mu_x ** 2
    var_y = F.avg_pool2d(y * y, 3, 1) - mu_y ** 2
    cov = F.avg_pool2d(x * y, 3, 1) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2)
    return num / den


def photometric_error(target: Tensor, recon: Tensor, kind: str = "l2") -> Tensor:
    """Per-pixel reconstruction error (B, 1, H, W), averaged over the channels: ``l2``, ``l1`` or
    ``ssim`` (0.85 (1 - SSIM) / 2 + 0.15 L1), see the module docstring."""
    if kind == "l2":
        return (target - recon).pow(2).mean(1, keepdim=True)
    l1 = (target - recon).abs().mean(1, keepdim=True)
    if kind == "l1":
        return l1
    if kind == "ssim":
        dssim = ((1 - ssim_map(target, recon)) / 2).clamp(0, 1).mean(1, keepdim=True)
        return SSIM_WEIGHT * dssim + (1 - SSIM_WEIGHT) * l1
    raise UserError(f"Received photometric loss {kind!r}; expected one of {', '.join(PHOTOMETRIC)}.")


def disparity_smoothness(disp: Tensor, image: Tensor | None = None, kind: str = "l2") -> Tensor:
    """Smoothness of a (B, 1, H, W) disparity in pixels: ``l2`` = mean (dd/dx)^2 + mean (dd/dy)^2
    (Garg et al.), or ``edge`` = mean |dd/dx| e^(-|dI/dx|) + mean |dd/dy| e^(-|dI/dy|) with the
    (B, C, H, W) ``image`` (Godard et al.)."""
    dx = disp[..., :, 1:] - disp[..., :, :-1]
    dy = disp[..., 1:, :] - disp[..., :-1, :]
    if kind == "l2":
        return dx.pow(2).mean() + dy.pow(2).mean()
    if kind == "edge":
        if image is None or image.shape[-2:] != disp.shape[-2:]:
            raise UserError("the edge-aware smoothness needs the image the disparity belongs to, of the same size")
        wx = torch.exp(-(image[..., :, 1:] - image[..., :, :-1]).abs().mean(1, keepdim=True))
        wy = torch.exp(-(image[..., 1:, :] - image[..., :-1, :]).abs().mean(1, keepdim=True))
        return (dx.abs() * wx).mean() + (dy.abs() * wy).mean()
    raise UserError(f"Received smoothness {kind!r}; expected one of {', '.join(SMOOTHNESS)}.")


class StereoLoss(dict):
    """The loss and its parts as tensors: ``loss``, ``photometric``, ``smoothness``."""


def stereo_loss(left: Tensor, right: Tensor, disp: Tensor, *, photometric: str = "l2", smoothness: str = "l2",
                smoothness_weight: float = 0.1, mask: str = "none", margin: float = 0.0) -> StereoLoss:
    """Garg et al.'s loss at one scale: the photometric error of the right view warped by the
    left disparity, averaged over the pixels that ``mask`` keeps, plus ``smoothness_weight`` x
    the smoothness of ``disp``.

    ``mask``: ``none`` (every pixel; samples beyond the border repeat the edge), ``columns``
    (the pixels ``margin`` or more columns from the left edge: with disparities of at most
    ``margin`` their matches always lie in the right image) or ``outside`` (the pixels whose
    match lies in the right image; it depends on the disparity, so a network can hide a pixel
    from the loss by pointing it outside)."""
    recon, valid = warp_right_to_left(right, disp)
    err = photometric_error(left, recon, photometric)
    if mask == "columns":
        photo = err[..., int(math.ceil(margin)):].mean() if math.ceil(margin) < err.shape[-1] else err.mean()
    elif mask == "outside":
        photo = (err * valid).sum() / valid.sum().clamp_min(1.0)
    elif mask == "none":
        photo = err.mean()
    else:
        raise UserError(f"Received mask={mask!r}; expected none, columns or outside.")
    smooth = disparity_smoothness(disp, left, smoothness)
    return StereoLoss(loss=photo + smoothness_weight * smooth, photometric=photo, smoothness=smooth)


def multiscale_stereo_loss(left: Tensor, right: Tensor, disps: Sequence[Tensor], margin: float = 0.0,
                           **kwargs) -> StereoLoss:
    """:func:`stereo_loss` averaged over predictions at 1, 1/2, 1/4, ... of the images' size
    (finest first, each in its own scale's pixels), the images average-pooled to each size
    and ``margin`` divided alike. Each prediction's size must be the images' size divided by
    its power of two."""
    parts: dict[str, Tensor] = {}
    lt, rt = left, right
    for k, d in enumerate(disps):
        if k:
            lt, rt = F.avg_pool2d(lt, 2), F.avg_pool2d(rt, 2)
        if d.shape[-2:] != lt.shape[-2:]:
            raise UserError(f"prediction {k} has size {tuple(d.shape[-2:])}, expected {tuple(lt.shape[-2:])} "
                            f"(the images' {tuple(left.shape[-2:])} / {2 ** k})")
        for name, v in stereo_loss(lt, rt, d, margin=margin / 2 ** k, **kwargs).items():
            parts[name] = parts[name] + v if name in parts else v
    return StereoLoss({k: v / len(disps) for k, v in parts.items()})
