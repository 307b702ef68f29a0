"""U-Net (Ronneberger, Fischer & Brox 2015): a contracting path that captures context and a
symmetric expanding path that localizes, joined by copy-and-crop connections.

Each level holds two 3x3 convolutions, each followed by a ReLU; the contracting path halves the
size with a 2x2/2 max pool and doubles the channels, the expanding path doubles the size with a
2x2/2 up-convolution that halves the channels, concatenates the contracting path's map
(cropped to its size) and applies two 3x3 convolutions. A 1x1 convolution gives the class
scores. The paper's net (``base=64, depth=4``) has 23 convolutions and maps a 572x572 tile to
388x388 scores.

``padding="valid"`` is the paper's: unpadded convolutions, so the output is smaller than the
input by a margin (184 pixels for depth 4) and each output pixel sees only real context.
``overlap_tile_predict`` segments an image of any size from such tiles, mirroring the image at
its borders. ``padding="same"`` pads every 3x3 convolution by 1 (zeros) so the output has the
input's size, for sides divisible by 2^depth.

``unet_weight_map`` builds the paper's loss weights that make the net learn the thin background
borders between touching objects.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from fovea.errors import UserError
from fovea.models.base import build_config
from fovea.nn.init import he_init
from fovea.nn.norm import get_norm

__all__ = ["PADDINGS", "UNet", "UNetConfig", "overlap_tile_predict", "mirror_pad", "unet", "unet_output_size",
           "unet_same", "unet_weight_map", "valid_input_size"]

PADDINGS = ("valid", "same")


@dataclass
class UNetConfig:
    in_channels: int = 1  # the paper's grey-level microscopy images
    num_classes: int = 2  # cell and background
    base: int = 64  # channels of the first level; level l has base * 2^l
    depth: int = 4  # number of 2x2 poolings (and up-convolutions)
    padding: str = "valid"  # "valid" (the paper) or "same"
    norm: str | None = None  # e.g. "bn" after every 3x3 convolution (not in the paper)
    dropout: float = 0.0  # the paper's "drop-out layers at the end of the contracting path"


def _check_depth(depth: int) -> None:
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
        raise UserError(f"Received depth={depth!r}; expected an integer >= 1 (the paper uses 4).")


def _min_bottom(depth: int) -> int:
    """Smallest side at the bottom level (after its two convolutions) that leaves every map of
    the expanding path at least 1 pixel: u_l = 2 u_(l+1) - 4 >= 1 on the way up."""
    return 3 if depth == 1 else 4


def unet_output_size(size: int, depth: int = 4) -> int:
    """Output side of a valid-padding U-Net for an input side ``size``: size - 12 * 2^depth + 8
    (572 -> 388 for depth 4).

    Valid sides are size = 2^depth * b + 2^(depth+3) - 4 with b (the bottom side) at least 4
    (3 for depth 1): every map before a pool has an even side, and the expanding path never
    shrinks to nothing. Other sizes raise a UserError naming the nearest valid ones.
    """
    _check_depth(depth)
    g = 2**depth
    if not isinstance(size, int) or isinstance(size, bool) or size < valid_input_size(1, depth) or (size + 4) % g:
        above = valid_input_size(size if isinstance(size, int) else 1, depth)
        below = above - g if above - g >= valid_input_size(1, depth) else None
        hint = f"{below} or {above}" if below is not None else str(above)
        raise UserError(f"Received input size {size!r} for a valid U-Net of depth {depth}; expected "
                        f"2^{depth}*b + {8 * g - 4} with b >= {_min_bottom(depth)}, e.g. {hint}.")
    return size - 12 * g + 8


def valid_input_size(size: int, depth: int = 4) -> int:
    """The smallest side >= ``size`` that a valid-padding U-Net of this depth accepts (572 for
    570 at depth 4)."""
    _check_depth(depth)
    g = 2**depth
    smallest = g * _min_bottom(depth) + 8 * g - 4
    if size <= smallest:
        return smallest
    return smallest + g * math.ceil((size - smallest) / g)


def _crop_to(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The central part of ``x`` with ``like``'s height and width (the paper's copy-and-crop)."""
    dh, dw = x.shape[-2] - like.shape[-2], x.shape[-1] - like.shape[-1]
    return x[..., dh // 2:dh // 2 + like.shape[-2], dw // 2:dw // 2 + like.shape[-1]]


class DoubleConv(nn.Sequential):
    """3x3 conv [-> norm] -> ReLU, twice: one level of U-Net."""

    def __init__(self, c_in: int, c_out: int, padding: int, norm: str | None = None):
        layers: list[nn.Module] = []
        for a, b in ((c_in, c_out), (c_out, c_out)):
            layers.append(nn.Conv2d(a, b, 3, padding=padding))
            if norm not in (None, "none"):
                layers.append(get_norm(norm, b))
            layers.append(nn.ReLU())
        super().__init__(*layers)


class UNet(nn.Module):
    """U-Net; ``forward(x)`` gives (N, num_classes, H', W') scores, H' = unet_output_size(H) for
    ``padding="valid"`` and H' = H for ``padding="same"``."""

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        _check_depth(cfg.depth)
        if cfg.padding not in PADDINGS:
            raise UserError(f"Received padding={cfg.padding!r}; expected one of {', '.join(PADDINGS)}.")
        if cfg.base < 1 or cfg.in_channels < 1 or cfg.num_classes < 1:
            raise UserError(f"Received base={cfg.base}, in_channels={cfg.in_channels}, num_classes={cfg.num_classes}; "
                            f"expected all >= 1.")
        self.cfg = cfg
        pad = 1 if cfg.padding == "same" else 0
        widths = [cfg.base * 2**level for level in range(cfg.depth + 1)]
        self.down = nn.ModuleList()
        c_in = cfg.in_channels
        for w in widths:
            self.down.append(DoubleConv(c_in, w, pad, cfg.norm))
            c_in = w
        self.pool = nn.MaxPool2d(2, 2)
        self.dropout = nn.Dropout(cfg.dropout)
        self.up = nn.ModuleList(nn.ConvTranspose2d(widths[level + 1], widths[level], 2, stride=2)
                                for level in reversed(range(cfg.depth)))
        self.up_convs = nn.ModuleList(DoubleConv(2 * widths[level], widths[level], pad, cfg.norm)
                                      for level in reversed(range(cfg.depth)))
        self.head = nn.Conv2d(widths[0], cfg.num_classes, 1)
        self.num_classes = cfg.num_classes
        self.feature_info = [dict(module=f"down.{level}", num_chs=w, reduction=2**level)
                             for level, w in enumerate(widths)]
        he_init(self)  # the paper: Gaussian with std sqrt(2/N), N = inputs of one neuron

    def check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.cfg.in_channels:
            raise UserError(f"Received an input of shape {tuple(x.shape)}; expected (N, {self.cfg.in_channels}, H, W).")
        if self.cfg.padding == "valid":
            for side in x.shape[-2:]:
                unet_output_size(side, self.cfg.depth)
        else:
            g = 2**self.cfg.depth
            if x.shape[-2] % g or x.shape[-1] % g:
                raise UserError(f"Received input size {tuple(x.shape[-2:])} for a same-padding U-Net of depth "
                                f"{self.cfg.depth}; expected sides divisible by {g}.")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        skips = []
        for level, block in enumerate(self.down):
            if level:
                x = self.pool(x)
            x = block(x)
            skips.append(x)
        x = self.dropout(skips.pop())
        for up, block in zip(self.up, self.up_convs):
            x = up(x)
            x = block(torch.cat([_crop_to(skips.pop(), x), x], dim=1))
        return self.head(x)

    @property
    def margin(self) -> int:
        """Pixels lost on each side by a valid U-Net (92 for depth 4); 0 for same padding."""
        return 0 if self.cfg.padding == "same" else 6 * 2**self.cfg.depth - 4

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in asdict(self.cfg).items())


def mirror_pad(x: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    """Extend an (..., H, W) tensor by mirroring at its borders (the reflection without repeating
    the edge pixel, ``... c b | a b c | b a ...``), repeated periodically for pads larger than the
    image, so a pixel's value depends only on its coordinate, never on the pad amounts."""

    def index(n: int, before: int, after: int) -> torch.Tensor:
        idx = torch.arange(-before, n + after, device=x.device)
        if n == 1:
            return torch.zeros_like(idx)
        period = 2 * (n - 1)
        idx = idx % period
        return torch.where(idx >= n, period - idx, idx)

    rows, cols = index(x.shape[-2], top, bottom), index(x.shape[-1], left, right)
    return x.index_select(-2, rows).index_select(-1, cols)


def _tile_plan(size: int, out: int, margin: int, g: int) -> tuple[int, int, list[int]]:
    """For one axis: (pad before, pad after, output starts of the tiles, in image coordinates).

    Tiles step by the largest multiple of 2^depth within the output tile, and their inputs start
    at image coordinates divisible by 2^depth, so every tile pools on the same grid as the whole
    image would: each prediction equals the valid prediction of any window aligned to that grid.
    """
    step = (out // g) * g
    shift = (-margin) % g  # first output start -shift makes the first input start -margin-shift divisible by g
    starts = [-shift + i * step for i in range(math.ceil((size + shift) / step))]
    return margin + shift, starts[-1] + out + margin - size, starts


@torch.no_grad()
def overlap_tile_predict(model: UNet, image: torch.Tensor, tile: int | tuple[int, int],
                         batch_size: int = 8) -> torch.Tensor:
    """Segment an (N, C, H, W) or (C, H, W) image of any size with a valid U-Net, one input tile
    of side ``tile`` (e.g. 572) at a time: the overlap-tile strategy of the paper.

    The image is mirrored at its borders so that border pixels get context; each tile predicts
    its central unet_output_size(tile) pixels and the tiles' outputs are put side by side. Tile
    inputs start on the 2^depth grid of the image, so the result equals, wherever both exist,
    the whole-image valid prediction ``model(image)`` (shifted by the margin) and does not depend
    on the tile size. Returns (N, num_classes, H, W) scores (no batch axis for a 3-D input).
    The model runs in the mode it is in: call ``model.eval()`` first for dropout and batch norm.
    """
    cfg = getattr(model, "cfg", None)
    if not isinstance(cfg, UNetConfig) or cfg.padding != "valid":
        got = type(model).__name__ + ("" if cfg is None else f" with padding={getattr(cfg, 'padding', None)!r}")
        raise UserError(f"overlap_tile_predict needs a U-Net with padding='valid'; received {got}")
    squeeze = image.dim() == 3
    x = image[None] if squeeze else image
    if x.dim() != 4:
        raise UserError(f"Received an image of shape {tuple(image.shape)}; expected (C, H, W) or (N, C, H, W).")
    sides = (tile, tile) if isinstance(tile, int) else tuple(tile)
    if batch_size < 1 or len(sides) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in sides):
        raise UserError(f"Received tile={tile!r}, batch_size={batch_size!r}; expected a tile side or (height, width) "
                        f"of valid U-Net input sizes and batch_size >= 1.")
    th, tw = sides
    g = 2**cfg.depth
    oh, ow = unet_output_size(th, cfg.depth), unet_output_size(tw, cfg.depth)
    if oh < g or ow < g:
        raise UserError(f"Received tile={tile!r}; its output ({oh}x{ow}) must be at least {g} pixels a side "
                        f"for depth {cfg.depth}, e.g. tile={valid_input_size(th + g, cfg.depth)}.")
    margin = (th - oh) // 2
    (top, bottom, rows), (left, right, cols) = (_tile_plan(x.shape[-2], oh, margin, g),
                                                _tile_plan(x.shape[-1], ow, margin, g))
    padded = mirror_pad(x, top, bottom, left, right)
    h, w = x.shape[-2:]
    result = x.new_zeros(x.shape[0], cfg.num_classes, h, w)
    boxes = [(r, c) for r in rows for c in cols]
    for i in range(0, len(boxes), batch_size):
        chunk = boxes[i:i + batch_size]
        # tile (r, c) reads padded[r + top - margin :, ...]; stack tiles of all images along the batch
        inputs = torch.cat([padded[..., r + top - margin:r + top - margin + th,
                                   c + left - margin:c + left - margin + tw] for r, c in chunk])
        outputs = model(inputs).split(x.shape[0])
        for (r, c), out in zip(chunk, outputs):
            r0, c0 = max(r, 0), max(c, 0)
            r1, c1 = min(r + oh, h), min(c + ow, w)
            result[..., r0:r1, c0:c1] = out[..., r0 - r:r1 - r, c0 - c:c1 - c]
    return result[0] if squeeze else result


def unet_weight_map(labels, w0: float = 10.0, sigma: float = 5.0, class_weights=None):
    """The paper's pixel-wise loss weights (its eq. 2):

        w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2)),

    d1 and d2 the distances to the nearest and second-nearest object, computed for background
    pixels (the separating borders the paper wants learned; object pixels get w_c alone, and so
    does every pixel when there are fewer than two objects). The paper uses w0 = 10, sigma ~ 5.

    ``labels`` is an (H, W) instance map (0 background, 1..K objects), as a NumPy array or a
    tensor; a boolean mask is split into connected components first. ``class_weights`` is
    w_c for (background, foreground): a pair, or None to balance the class frequencies
    (w_c = N / (2 * N_c), so each class carries half of the total weight). Returns float32
    weights of the same kind and shape as ``labels``.
    """
    from scipy import ndimage

    as_tensor = isinstance(labels, torch.Tensor)
    lab = labels.detach().cpu().numpy() if as_tensor else np.asarray(labels)
    if lab.ndim != 2:
        raise UserError(f"Received labels of shape {lab.shape}; expected an (H, W) instance map.")
    if lab.dtype == bool:
        lab = ndimage.label(lab)[0]
    elif not np.issubdtype(lab.dtype, np.integer):
        raise UserError(f"Received labels of dtype {lab.dtype}; expected integer instance ids "
                        f"(0 = background) or bool.")
    if sigma <= 0:
        raise UserError(f"Received sigma={sigma}; expected sigma > 0.")
    fg = lab > 0
    if class_weights is None:
        counts = np.array([(~fg).sum(), fg.sum()], dtype=np.float64)
        present = (counts > 0).sum()
        wc = np.where(counts > 0, lab.size / (present * np.maximum(counts, 1)), 0.0)
    else:
        wc = np.asarray(class_weights, dtype=np.float64)
        if wc.shape != (2,):
            raise UserError(f"Received class_weights={class_weights!r}; expected (background, foreground) "
                            f"weights or None.")
    weights = np.where(fg, wc[1], wc[0])
    ids = np.unique(lab[fg])
    if len(ids) >= 2:
        # distance from every pixel to each object; keep the two smallest per pixel
        d = np.stack([ndimage.distance_transform_edt(lab != i) for i in ids])
        d.partition(1, axis=0)
        border = w0 * np.exp(-((d[0] + d[1]) ** 2) / (2 * sigma**2))
        weights = weights + np.where(fg, 0.0, border)
    weights = weights.astype(np.float32)
    return torch.from_numpy(weights).to(labels.device) if as_tensor else weights


def _create_unet(variant: str, /, **kwargs) -> UNet:
    """``variant`` is "unet" or "unet-same"; keyword arguments override UNetConfig fields."""
    padding = "same" if variant == "unet-same" else "valid"
    return UNet(build_config(UNetConfig, variant, kwargs, fixed=dict(padding=padding)))


def unet(**kwargs) -> UNet:
    """The published U-Net: valid 3x3 convolutions, 572x572 -> 388x388 at base 64, depth 4 (31.0M
    parameters with one input channel and two classes)."""
    return _create_unet("unet", **kwargs)


def unet_same(**kwargs) -> UNet:
    """U-Net with padded ("same") 3x3 convolutions: output size = input size for sides divisible
    by 2^depth."""
    return _create_unet("unet-same", **kwargs)
