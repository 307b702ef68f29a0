"""ConvNormAct: convolution, normalization and activation in a configurable order."""

from __future__ import annotations

import torch
from torch import nn

from fovea.nn.act import get_act
from fovea.nn.conv import Size, conv
from fovea.nn.norm import get_norm


class ConvNormAct(nn.Module):
    """Conv -> Norm -> Act (``order="post"``, the default) or Norm -> Act -> Conv
    (``order="pre"``, the pre-activation form of He et al. 2016).

    Submodules are called ``conv``, ``bn`` and ``act`` whatever the norm is, so state dicts
    line up with torchvision's ``BasicConv2d``. The convolution has no bias when a norm
    follows it (the norm's beta does that job)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Size = 3, stride: Size = 1,
                 padding: str | Size = "same", dilation: Size = 1, groups: int = 1,
                 bias: bool | None = None, norm: str | None = "bn", act: str | None = "relu",
                 order: str = "post", padding_mode: str = "zeros", dim: int = 2, norm_eps: float | None = None):
        super().__init__()
        if order not in ("post", "pre"):
            raise ValueError(f"order must be 'post' (conv-norm-act) or 'pre' (norm-act-conv), got {order!r}")
        self.order = order
        has_norm = norm not in (None, "none")
        if bias is None:
            bias = not has_norm or order == "pre"
        norm_ch = in_channels if order == "pre" else out_channels
        if order == "pre":  # registration order = state-dict order = execution order
            self.bn = get_norm(norm, norm_ch, dim) if has_norm else nn.Identity()
            self.act = get_act(act, inplace=False)
            self.conv = conv(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                             bias, padding_mode, dim)
        else:
            self.conv = conv(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                             bias, padding_mode, dim)
            self.bn = get_norm(norm, norm_ch, dim) if has_norm else nn.Identity()
            self.act = get_act(act, inplace=True)
        if norm_eps is not None and hasattr(self.bn, "eps"):
            self.bn.eps = norm_eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.order == "pre":
            return self.conv(self.act(self.bn(x)))
        return self.act(self.bn(self.conv(x)))
