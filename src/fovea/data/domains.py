"""A second image domain made from the first, for cross-domain retrieval offline: edge maps
("sketches") of digits or Fashion-MNIST items, so that sketch -> image retrieval can be trained
and measured without another data set."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fovea.errors import UserError

__all__ = ["DOMAINS", "sobel_sketch", "to_domain"]

DOMAINS = ("sketch",)

_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def sobel_sketch(x: torch.Tensor) -> torch.Tensor:
    """Edge maps of images in [0, 1], (B, C, H, W) -> (B, C, H, W): the Sobel gradient magnitude
    of the grey image, scaled so each image's strongest edge is 1, as dark lines on white (a
    drawing's polarity), repeated over the channels."""
    grey = x.float().mean(1, keepdim=True)
    kx = _SOBEL_X.to(x.device)
    kernels = torch.stack([kx, kx.T])[:, None]  # d/dx and d/dy
    g = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), kernels)
    mag = g.pow(2).sum(1, keepdim=True).sqrt()
    mag = mag / mag.flatten(1).amax(1).clamp_min(1e-6)[:, None, None, None]
    return (1 - mag).expand(-1, x.shape[1], -1, -1).to(x.dtype)


def to_domain(x: torch.Tensor, domain: str) -> torch.Tensor:
    if domain == "sketch":
        return sobel_sketch(x)
    raise UserError(f"unknown domain {domain!r}; expected one of {', '.join(DOMAINS)}")
