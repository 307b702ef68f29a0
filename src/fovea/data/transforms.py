"""Batched data augmentation and fitted pre-processing.

Augmentation runs on a whole batch at once, on the training device, without a
Python loop over samples: crops and flips are index operations, the geometric
ops (rotation, shear, translation, random-resized crop) are per-sample affine
matrices fused into one ``F.grid_sample``, elastic warping is a smoothed random
displacement field sampled the same way, and the photometric ops are broadcast
arithmetic. The same :class:`BatchAugment` serves an in-memory dataset (one
uint8 tensor on the device, augmented a batch at a time) and a DataLoader that
yields uint8 batches.

Augmentation strings (``parse_augment``), comma separated, ``:`` between values::

    crop[:PADDING[:zero|reflect]]  random crop of the same size after padding (4, zero)
    rrc[:MIN_SCALE]                random-resized crop, area scale (MIN_SCALE, 1) (0.08),
                                   aspect ratio (3/4, 4/3), resized back to the input size
    hflip[:P], vflip[:P]           flip with probability P (0.5)
    rotate:DEG                     rotation by an angle uniform in [-DEG, DEG]
    shear:DEG                      x-shear by an angle uniform in [-DEG, DEG]
    translate:FRAC                 shift by whole pixels, up to FRAC of the width / height
    elastic[:ALPHA[:SIGMA]]        Simard et al. (2003) local warping (34, 4)
    noise:STD                      additive Gaussian noise
    jitter:S                       brightness, contrast and saturation factors in [1-S, 1+S]
    fancy-pca[:STD]                AlexNet's PCA lighting noise (0.1); needs ``fit``
    none                           no augmentation

Pre-processing (:class:`Preprocess`) is fitted on the training split and kept
as buffers, so it travels with the model's state dict.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fovea.errors import UserError

__all__ = ["BatchAugment", "Preprocess", "parse_augment", "to_float", "torchvision_pipeline"]


# ---------------------------------------------------------------- the grammar


class _Param(NamedTuple):
    name: str
    kind: type  # int, float or str
    default: Any  # _REQUIRED when the value must be given
    check: Callable[[Any], bool]
    expected: str


_REQUIRED = object()
_PROB = ("p", float, 0.5, lambda v: 0.0 <= v <= 1.0, "a probability in [0, 1]")
_OPS: dict[str, tuple[_Param, ...]] = {
    "crop": (
        _Param("padding", int, 4, lambda v: v >= 0, "an integer >= 0"),
        _Param("mode", str, "zero", lambda v: v in ("zero", "reflect"), "zero or reflect"),
    ),
    "rrc": (_Param("min_scale", float, 0.08, lambda v: 0.0 < v <= 1.0, "a number in (0, 1]"),),
    "hflip": (_Param(*_PROB),),
    "vflip": (_Param(*_PROB),),
    "rotate": (_Param("degrees", float, _REQUIRED, lambda v: 0.0 <= v <= 180.0, "degrees in [0, 180]"),),
    "shear": (_Param("degrees", float, _REQUIRED, lambda v: 0.0 <= v < 90.0, "degrees in [0, 90)"),),
    "translate": (_Param("fraction", float, _REQUIRED, lambda v: 0.0 <= v <= 1.0, "a fraction in [0, 1]"),),
    "elastic": (
        _Param("alpha", float, 34.0, lambda v: v >= 0.0, "a number >= 0 (pixels)"),
        _Param("sigma", float, 4.0, lambda v: v > 0.0, "a number > 0 (pixels)"),
    ),
    "noise": (_Param("std", float, _REQUIRED, lambda v: v >= 0.0, "a standard deviation >= 0"),),
    "jitter": (_Param("strength", float, _REQUIRED, lambda v: v >= 0.0, "a strength >= 0"),),
    "fancy-pca": (_Param("std", float, 0.1, lambda v: v >= 0.0, "a standard deviation >= 0"),),
    "none": (),
}
GRAMMAR = (
    "crop[:PADDING[:zero|reflect]], rrc[:MIN_SCALE], hflip[:P], vflip[:P], rotate:DEG, shear:DEG, "
    "translate:FRAC, elastic[:ALPHA[:SIGMA]], noise:STD, jitter:S, fancy-pca[:STD], none"
)


def _convert(op: str, param: _Param, value: Any, token: str) -> Any:
    try:
        if param.kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
        v = param.kind(value.strip() if isinstance(value, str) else value)
        ok = (isinstance(v, str) or math.isfinite(v)) and param.check(v)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise UserError(
            f"Bad value {value!r} for {op} {param.name} in augmentation {token!r}: "
            f"expected {param.expected}. Valid ops: {GRAMMAR}."
        )
    return v


def _spec(name: str, token: str) -> tuple[_Param, ...]:
    key = name.strip().lower().replace("_", "-")
    if key not in _OPS:
        raise UserError(f"Unknown augmentation {name!r} in {token!r}. Valid ops: {GRAMMAR}.")
    return _OPS[key]


def parse_augment(text: str | None) -> list[tuple[str, dict]]:
    """Parse ``"crop:4,hflip,rotate:15,noise:0.05"`` into ``[("crop", {"padding": 4}), ...]``.

    Only the values written appear in each dict; defaults are filled in by
    :class:`BatchAugment`. ``None``, ``""`` and ``"none"`` give an empty list.
    """
    if text is None or not text.strip():
        return []
    ops: list[tuple[str, dict]] = []
    for token in text.split(","):
        name, *values = token.strip().split(":")
        if not name:
            raise UserError(f"Empty augmentation in {text!r}. Valid ops: {GRAMMAR}.")
        params = _spec(name, token)
        key = name.strip().lower().replace("_", "-")
        if len(values) > len(params):
            raise UserError(
                f"Too many values in augmentation {token!r}: {key} takes at most {len(params)}. "
                f"Valid ops: {GRAMMAR}."
            )
        missing = [p.name for p in params[len(values):] if p.default is _REQUIRED]
        if missing:
            raise UserError(f"Augmentation {token!r} needs a value for {missing[0]}. Valid ops: {GRAMMAR}.")
        if key != "none":
            ops.append((key, {p.name: _convert(key, p, v, token) for p, v in zip(params, values)}))
    return ops


def _resolve(ops: list[tuple[str, dict]] | str | None) -> list[tuple[str, dict]]:
    """Validate an op list and fill in the defaults."""
    if ops is None or isinstance(ops, str):
        ops = parse_augment(ops)
    resolved = []
    for name, given in ops:
        token = f"{name}:{given}"
        params = _spec(name, token)
        known = {p.name for p in params}
        unknown = sorted(set(given) - known)
        if unknown:
            raise UserError(f"Augmentation {name!r} has no parameter {unknown[0]!r}; it takes {sorted(known)}.")
        full = {}
        for p in params:
            if p.name in given:
                full[p.name] = _convert(name, p, given[p.name], token)
            elif p.default is _REQUIRED:
                raise UserError(f"Augmentation {name!r} needs a value for {p.name}. Valid ops: {GRAMMAR}.")
            else:
                full[p.name] = p.default
        key = name.strip().lower().replace("_", "-")
        if key != "none":
            resolved.append((key, full))
    return resolved


# ---------------------------------------------------------------- randomness


def _rand(shape: tuple[int, ...], gen: torch.Generator | None, device: torch.device) -> Tensor:
    """Uniform [0, 1) draws from ``gen`` (on its own device) or the global RNG of ``device``."""
    if gen is None:
        return torch.rand(shape, device=device)
    return torch.rand(shape, generator=gen, device=gen.device).to(device, non_blocking=True)


def _randn(shape: tuple[int, ...], gen: torch.Generator | None, device: torch.device) -> Tensor:
    if gen is None:
        return torch.randn(shape, device=device)
    return torch.randn(shape, generator=gen, device=gen.device).to(device, non_blocking=True)


def _uniform(n: int, lo: float, hi: float, gen, device) -> Tensor:
    return _rand((n,), gen, device).mul_(hi - lo).add_(lo)


def _randint(n: int, high: int, gen, device) -> Tensor:
    if gen is None:
        return torch.randint(high, (n,), device=device)
    return torch.randint(high, (n,), generator=gen, device=gen.device).to(device, non_blocking=True)


# ---------------------------------------------------------------- geometric ops
# Each affine op returns the inverse map (output pixel -> input pixel) as an
# (N, 3, 3) matrix in pixel coordinates centred on the image, y pointing down.
# Consecutive affine ops multiply into one matrix and cost one grid_sample.


def _affine(a: Tensor, b: Tensor, c: Tensor, d: Tensor, tx: Tensor, ty: Tensor) -> Tensor:
    zero, one = torch.zeros_like(a), torch.ones_like(a)
    return torch.stack([a, b, tx, c, d, ty, zero, zero, one], 1).view(-1, 3, 3)


def _rotate_matrix(n, h, w, gen, device, degrees):
    # Counter-clockwise on screen for positive angles, as torchvision's rotate.
    angle = torch.deg2rad(_uniform(n, -degrees, degrees, gen, device))
    cos, sin, zero = angle.cos(), angle.sin(), torch.zeros_like(angle)
    return _affine(cos, -sin, sin, cos, zero, zero)


def _shear_matrix(n, h, w, gen, device, degrees):
    # torchvision's forward x-shear is [[1, -tan s], [0, 1]]; this is its inverse.
    tan = torch.deg2rad(_uniform(n, -degrees, degrees, gen, device)).tan()
    one, zero = torch.ones_like(tan), torch.zeros_like(tan)
    return _affine(one, tan, zero, one, zero, zero)


def _translate_matrix(n, h, w, gen, device, fraction):
    # Whole pixels, as torchvision's RandomAffine, so a pure shift does not blur.
    tx = _uniform(n, -fraction * w, fraction * w, gen, device).round_()
    ty = _uniform(n, -fraction * h, fraction * h, gen, device).round_()
    one, zero = torch.ones_like(tx), torch.zeros_like(tx)
    return _affine(one, zero, zero, one, -tx, -ty)


def _rrc_matrix(n, h, w, gen, device, min_scale):
    # Inception-style crop (Szegedy et al. 2015). Crops that would not fit are
    # clamped to the image instead of re-drawn as torchvision does.
    area = _uniform(n, min_scale, 1.0, gen, device) * (h * w)
    ratio = _uniform(n, math.log(3 / 4), math.log(4 / 3), gen, device).exp_()
    cw = (area * ratio).sqrt_().clamp_(max=w)
    ch = (area / ratio).sqrt_().clamp_(max=h)
    # Offsets keep the outermost output samples on or inside the outermost input
    # pixel centres (hence the (w - 1) / w), so no zero fill leaks in at the border.
    ox = (_rand((n,), gen, device) - 0.5) * (w - cw) * ((w - 1) / w)
    oy = (_rand((n,), gen, device) - 0.5) * (h - ch) * ((h - 1) / h)
    zero = torch.zeros_like(cw)
    return _affine(cw / w, zero, zero, ch / h, ox, oy)


_AFFINE = {"rotate": _rotate_matrix, "shear": _shear_matrix, "translate": _translate_matrix, "rrc": _rrc_matrix}


def _warp_affine(x: Tensor, m: Tensor) -> Tensor:
    """Resample ``x`` through per-sample inverse maps ``m`` (N, 3, 3), bilinear, zero fill."""
    n, _, h, w = x.shape
    # Centred pixels -> affine_grid's normalised coordinates: theta = S^-1 M S, S = diag(w/2, h/2).
    theta = m[:, :2, :].clone()
    theta[:, 0, 1] *= h / w
    theta[:, 1, 0] *= w / h
    theta[:, 0, 2] *= 2 / w
    theta[:, 1, 2] *= 2 / h
    grid = F.affine_grid(theta.to(x.dtype), [n, 1, h, w], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False).clamp_(0, 1)


def _crop(x: Tensor, gen, padding: int, mode: str) -> Tensor:
    if padding == 0:
        return x
    n, c, h, w = x.shape
    xp = F.pad(x, (padding,) * 4, mode="constant" if mode == "zero" else "reflect")
    hp, wp = h + 2 * padding, w + 2 * padding
    dy = _randint(n, 2 * padding + 1, gen, x.device)
    dx = _randint(n, 2 * padding + 1, gen, x.device)
    rows = dy[:, None] + torch.arange(h, device=x.device)
    cols = dx[:, None] + torch.arange(w, device=x.device)
    index = (rows[:, :, None] * wp + cols[:, None, :]).view(n, 1, h * w).expand(n, c, h * w)
    return xp.reshape(n, c, hp * wp).gather(2, index).view(n, c, h, w)


def _flip(x: Tensor, gen, p: float, dim: int) -> Tensor:
    flip = _rand((x.shape[0],), gen, x.device) < p
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(dim), x)


def _gaussian_kernel(sigma: float, device: torch.device) -> Tensor:
    size = int(8 * sigma + 1) | 1  # odd, as torchvision's ElasticTransform
    t = torch.arange(size, device=device, dtype=torch.float32) - size // 2
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def _elastic(x: Tensor, gen, alpha: float, sigma: float) -> Tensor:
    """Simard, Steinkraus & Platt (2003): a uniform(-1, 1) displacement field per
    pixel and axis, smoothed by a Gaussian of width ``sigma`` and scaled by
    ``alpha``, both in pixels; the image is resampled bilinearly at the displaced
    positions."""
    n, _, h, w = x.shape
    field = _rand((2 * n, 1, h, w), gen, x.device).mul_(2).sub_(1)
    k = _gaussian_kernel(sigma, x.device)
    pad = k.numel() // 2
    mode = "reflect" if pad < min(h, w) else "replicate"
    field = F.conv2d(F.pad(field, (0, 0, pad, pad), mode=mode), k.view(1, 1, -1, 1))
    field = F.conv2d(F.pad(field, (pad, pad, 0, 0), mode=mode), k.view(1, 1, 1, -1))
    field = field.view(n, 2, h, w).permute(0, 2, 3, 1)
    scale = torch.tensor([2 * alpha / w, 2 * alpha / h], device=x.device)  # pixels -> normalised
    ys = torch.linspace((1 - h) / h, (h - 1) / h, h, device=x.device)
    xs = torch.linspace((1 - w) / w, (w - 1) / w, w, device=x.device)
    base = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)  # (h, w, 2) as (x, y)
    grid = (base + field * scale).to(x.dtype)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False).clamp_(0, 1)


# ---------------------------------------------------------------- photometric ops


def _noise(x: Tensor, gen, std: float) -> Tensor:
    return (x + std * _randn(tuple(x.shape), gen, x.device).to(x.dtype)).clamp_(0, 1)


def _gray(x: Tensor) -> Tensor:
    if x.shape[1] == 3:  # ITU-R 601-2 luma, the weights torchvision uses
        return (0.2989 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
    return x.mean(1, keepdim=True)


def _jitter(x: Tensor, gen, strength: float) -> Tensor:
    # Brightness, then contrast, then saturation (torchvision's ColorJitter picks a random order).
    lo = max(0.0, 1.0 - strength)
    f = (_rand((x.shape[0], 3), gen, x.device) * (1.0 + strength - lo) + lo).to(x.dtype)
    b, c, s = (f[:, i].view(-1, 1, 1, 1) for i in range(3))
    x = (x * b).clamp_(0, 1)
    m = _gray(x).mean((1, 2, 3), keepdim=True)
    x = (c * x + (1 - c) * m).clamp_(0, 1)
    if x.shape[1] == 3:
        x = (s * x + (1 - s) * _gray(x)).clamp_(0, 1)
    return x


def _fancy_pca_shift(alpha: Tensor, eigvals: Tensor, eigvecs: Tensor) -> Tensor:
    """The per-image colour shift [p1 ... pC] [a1 s1 ... aC sC]^T (N, C), s_i = sqrt(lambda_i)."""
    return (alpha * eigvals.clamp(min=0).sqrt()) @ eigvecs.T


_APPLY = {
    "crop": _crop,
    "hflip": lambda x, gen, p: _flip(x, gen, p, -1),
    "vflip": lambda x, gen, p: _flip(x, gen, p, -2),
    "elastic": _elastic,
    "noise": _noise,
    "jitter": _jitter,
}


class _FittedBuffers(nn.Module):
    """Buffers whose shapes are known only after ``fit``: loading a state dict
    resizes them first, so a fresh, unfitted module restores a fitted one."""

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name, buf in self._buffers.items():
            key = prefix + name
            if buf is not None and key in state_dict and state_dict[key].shape != buf.shape:
                self._buffers[name] = torch.empty(state_dict[key].shape, dtype=buf.dtype, device=buf.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def _pixels_device(t: Tensor) -> torch.device:
    return torch.device("cpu") if t.device.type == "mps" else t.device  # MPS has no float64


class BatchAugment(_FittedBuffers):
    """Random augmentation of a float batch (N, C, H, W) in [0, 1], vectorized over the batch.

    Active in training mode only; in eval mode ``forward`` returns its input.
    All randomness comes from ``generator`` when given (draws happen on the
    generator's device and are moved to the batch's device, so give one on the
    training device), else from the global RNG of the batch's device: a run
    that restores its RNG state reproduces the same augmentations.
    """

    def __init__(self, ops: list[tuple[str, dict]] | str | None):
        super().__init__()
        self.ops = _resolve(ops)
        # Fancy PCA statistics (Krizhevsky et al. 2012): eigenvalues (descending)
        # and eigenvectors (columns) of the training pixels' channel covariance.
        self.register_buffer("eigvals", torch.empty(0))
        self.register_buffer("eigvecs", torch.empty(0, 0))

    @property
    def needs_fit(self) -> bool:
        return any(name == "fancy-pca" for name, _ in self.ops)

    @torch.no_grad()
    def fit(self, images_uint8: Tensor, chunk: int = 4096) -> BatchAugment:
        """Compute the Fancy PCA statistics from the training images; a no-op without fancy-pca."""
        if not self.needs_fit:
            return self
        c = images_uint8.shape[1]
        device = _pixels_device(images_uint8)
        total, s1, s2 = 0, torch.zeros(c, device=device, dtype=torch.float64), None
        for start in range(0, images_uint8.shape[0], chunk):
            px = to_float(images_uint8[start : start + chunk]).to(device, torch.float64)
            px = px.transpose(0, 1).reshape(c, -1)
            total += px.shape[1]
            s1 += px.sum(1)
            s2 = px @ px.T if s2 is None else s2 + px @ px.T
        mean = s1 / total
        cov = (s2 - total * torch.outer(mean, mean)) / max(total - 1, 1)
        vals, vecs = torch.linalg.eigh(cov)
        self.eigvals = vals.flip(0).clamp(min=0).to(self.eigvals.device, torch.float32)
        self.eigvecs = vecs.flip(1).to(self.eigvals.device, torch.float32)
        return self

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if not self.training or not self.ops:
            return x
        if x.dim() != 4 or not x.is_floating_point():
            raise TypeError(f"BatchAugment expects a float batch (N, C, H, W), got {x.dtype} {tuple(x.shape)}")
        n, _, h, w = x.shape
        pending = None  # fused inverse affine map of consecutive geometric ops
        for name, params in self.ops:
            if name in _AFFINE:
                m = _AFFINE[name](n, h, w, generator, x.device, **params)
                pending = m if pending is None else pending @ m
                continue
            if pending is not None:
                x, pending = _warp_affine(x, pending), None
            if name == "fancy-pca":
                x = self._fancy_pca(x, generator, **params)
            else:
                x = _APPLY[name](x, generator, **params)
        if pending is not None:
            x = _warp_affine(x, pending)
        return x

    def _fancy_pca(self, x: Tensor, gen, std: float) -> Tensor:
        if self.eigvals.numel() == 0:
            raise RuntimeError("fancy-pca needs BatchAugment.fit(train_images) before use")
        if self.eigvals.numel() != x.shape[1]:
            raise UserError(f"fancy-pca was fitted on {self.eigvals.numel()}-channel images, got {x.shape[1]}")
        alpha = _randn((x.shape[0], x.shape[1]), gen, x.device) * std
        shift = _fancy_pca_shift(alpha, self.eigvals.to(x.device), self.eigvecs.to(x.device))
        return (x + shift.to(x.dtype)[:, :, None, None]).clamp_(0, 1)

    def extra_repr(self) -> str:
        return ", ".join(name + "".join(f":{v}" for v in p.values()) for name, p in self.ops) or "none"


# ---------------------------------------------------------------- pre-processing


class Preprocess(_FittedBuffers):
    """Input normalization fitted on the training split (survey, "Pre-processing").

    - ``mean-image``: subtract the per-pixel mean image.
    - ``zscore``: per-channel ``(x - mean) / std``.
    - ``pca-whiten``: ``y = diag(1 / sqrt(l + eps)) U^T (x - mean)`` over the
      flattened C*H*W vector, components in descending order of eigenvalue,
      reshaped back to (N, C, H, W). The survey says "divide by the
      eigenvalue"; dividing by its square root is what makes the covariance the
      identity, and is what we do.
    - ``zca-whiten``: ``y = U diag(1 / sqrt(l + eps)) U^T (x - mean)``, the
      symmetric whitening closest to the input (Bell & Sejnowski 1997).

    ``eps`` regularizes whitening: it is added to every eigenvalue, in units of
    variance of [0, 1] pixels. Directions whose variance is well below ``eps``
    (mostly noise) are damped instead of blown up; ``eps -> 0`` whitens exactly.

    Statistics are buffers, so they are saved in the state dict; loading that
    state dict into a fresh ``Preprocess(kind)`` restores them whatever their shape.
    """

    KINDS = ("none", "mean-image", "zscore", "pca-whiten", "zca-whiten")
    MAX_WHITEN_DIMS = 8192  # whitening holds a D x D matrix; 3x32x32 = 3072 fits easily

    def __init__(self, kind: str = "zscore", eps: float = 1e-2):
        super().__init__()
        if kind not in self.KINDS:
            raise UserError(f"Unknown pre-processing {kind!r}; expected one of {', '.join(self.KINDS)}.")
        if not eps >= 0:
            raise UserError(f"Whitening eps must be >= 0, got {eps!r}.")
        self.kind, self.eps = kind, float(eps)
        if kind != "none":
            self.register_buffer("mean", torch.empty(0))
        if kind == "zscore":
            self.register_buffer("std", torch.empty(0))
        if kind.endswith("whiten"):
            self.register_buffer("eigvals", torch.empty(0))
            self.register_buffer("whitening", torch.empty(0, 0))

    @property
    def fitted(self) -> bool:
        return self.kind == "none" or self.mean.numel() > 0

    @torch.no_grad()
    def fit(self, images_uint8_or_float: Tensor, max_samples: int = 10000) -> Preprocess:
        """Fit on up to ``max_samples`` evenly spaced training images (no RNG is consumed)."""
        if self.kind == "none":
            return self
        x = images_uint8_or_float
        if x.shape[0] > max_samples:
            x = x[torch.linspace(0, x.shape[0] - 1, max_samples, device=x.device).long()]
        x = to_float(x).to(_pixels_device(x), torch.float64)
        n, c, h, w = x.shape
        dev = self.mean.device
        if self.kind == "zscore":
            mean = x.mean((0, 2, 3))
            std = x.transpose(0, 1).reshape(c, -1).std(1)
            std = torch.where(std > 1e-8, std, torch.ones_like(std))  # constant channel: only centre it
            self.mean = mean.view(1, c, 1, 1).to(dev, torch.float32)
            self.std = std.view(1, c, 1, 1).to(dev, torch.float32)
            return self
        mean = x.mean(0, keepdim=True)
        self.mean = mean.to(dev, torch.float32)
        if self.kind == "mean-image":
            return self
        d = c * h * w
        if d > self.MAX_WHITEN_DIMS:
            raise UserError(
                f"{self.kind} on {c}x{h}x{w} images needs a {d}x{d} matrix (limit "
                f"{self.MAX_WHITEN_DIMS} dims); use zscore or mean-image, or smaller images."
            )
        xc = (x - mean).reshape(n, d)
        cov = xc.T @ xc / max(n - 1, 1)
        vals, vecs = torch.linalg.eigh(cov)
        vals, vecs = vals.flip(0).clamp(min=0), vecs.flip(1)
        scale = (vals + self.eps).rsqrt()
        if self.kind == "pca-whiten":
            white = scale[:, None] * vecs.T
        else:
            white = (vecs * scale) @ vecs.T
            white = (white + white.T) / 2  # exactly symmetric after rounding
        self.eigvals = vals.to(dev, torch.float32)
        self.whitening = white.to(dev, torch.float32)
        return self

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "none":
            return x
        if not self.fitted:
            raise RuntimeError(f"Preprocess({self.kind!r}) needs fit(train_images) before use")
        x = to_float(x)
        expected = self.mean.shape[1:] if self.kind != "zscore" else self.mean.shape[1:2]
        if x.shape[1 : 1 + len(expected)] != expected or x.dim() != 4:
            shape = "x".join(map(str, expected))
            raise UserError(f"Preprocess({self.kind!r}) was fitted on {shape} inputs, got {tuple(x.shape[1:])}")
        if self.kind == "zscore":
            return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        x = x - self.mean.to(x.dtype)
        if self.kind == "mean-image":
            return x
        return (x.flatten(1) @ self.whitening.to(x.dtype).T).view(x.shape)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}" + (f", eps={self.eps}" if self.kind.endswith("whiten") else "")


def to_float(x_uint8: Tensor) -> Tensor:
    """uint8 [0, 255] -> float32 [0, 1] (one new tensor, as torchvision's ToDtype(scale=True));
    a float tensor is returned unchanged."""
    if x_uint8.is_floating_point():
        return x_uint8
    return x_uint8.to(torch.float32).mul_(1.0 / 255)


# ---------------------------------------------------------------- the per-sample baseline


class _FancyPCASample(nn.Module):
    """Per-sample Fancy PCA for torchvision pipelines (float (C, H, W) in [0, 1])."""

    def __init__(self, std: float, eigvals: Tensor, eigvecs: Tensor):
        super().__init__()
        self.std, self.eigvals, self.eigvecs = std, eigvals.cpu(), eigvecs.cpu()

    def forward(self, img: Tensor) -> Tensor:
        alpha = torch.randn(1, self.eigvals.numel()) * self.std
        return (img + _fancy_pca_shift(alpha, self.eigvals, self.eigvecs).view(-1, 1, 1)).clamp_(0, 1)


def torchvision_pipeline(ops: list[tuple[str, dict]] | str | BatchAugment | None, image_size: int | tuple[int, int]):
    """The per-sample torchvision v2 equivalent of ``ops``, the benchmark's baseline.

    Input: a PIL image or a (C, H, W) uint8 tensor; output: float32 in [0, 1].
    Follows torchvision's recommended order: ``ToImage``, the ops on uint8,
    ``ToDtype(float32, scale=True)`` (moved before the first op that needs
    floats: noise, fancy-pca). Pass a fitted :class:`BatchAugment` to use its
    Fancy PCA statistics.

    Where it is only approximately the batched version: bilinear ops on uint8
    round to whole levels; ``rrc`` re-draws crops that do not fit (here they are
    clamped) and uses integer crop boxes; ``jitter`` applies brightness,
    contrast and saturation in random order (here in that fixed order);
    consecutive geometric ops interpolate once here, once per op there;
    ``elastic`` passes ``alpha * 2`` because torchvision's alpha is in half-pixels.
    """
    from torchvision.transforms import InterpolationMode, v2

    augment = ops if isinstance(ops, BatchAugment) else None
    resolved = augment.ops if augment is not None else _resolve(ops)
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    bilinear = InterpolationMode.BILINEAR
    steps: list[Any] = [v2.ToImage()]
    is_float = False
    for name, p in resolved:
        if name in ("noise", "fancy-pca") and not is_float:
            steps.append(v2.ToDtype(torch.float32, scale=True))
            is_float = True
        if name == "crop":
            mode = "constant" if p["mode"] == "zero" else "reflect"
            steps.append(v2.RandomCrop(size, padding=p["padding"], fill=0, padding_mode=mode))
        elif name == "rrc":
            steps.append(v2.RandomResizedCrop(size, scale=(p["min_scale"], 1.0), interpolation=bilinear))
        elif name == "hflip":
            steps.append(v2.RandomHorizontalFlip(p["p"]))
        elif name == "vflip":
            steps.append(v2.RandomVerticalFlip(p["p"]))
        elif name == "rotate":
            steps.append(v2.RandomRotation(p["degrees"], interpolation=bilinear))
        elif name == "shear":
            steps.append(v2.RandomAffine(0, shear=p["degrees"], interpolation=bilinear))
        elif name == "translate":
            steps.append(v2.RandomAffine(0, translate=(p["fraction"], p["fraction"]), interpolation=bilinear))
        elif name == "elastic":
            steps.append(v2.ElasticTransform(alpha=2 * p["alpha"], sigma=p["sigma"], interpolation=bilinear))
        elif name == "noise":
            steps.append(v2.GaussianNoise(sigma=p["std"], clip=True))
        elif name == "jitter":
            s = p["strength"]
            steps.append(v2.ColorJitter(brightness=s, contrast=s, saturation=s))
        elif name == "fancy-pca":
            if augment is None or augment.eigvals.numel() == 0:
                raise UserError("fancy-pca needs fitted statistics: pass a fitted BatchAugment to torchvision_pipeline")
            steps.append(_FancyPCASample(p["std"], augment.eigvals, augment.eigvecs))
    if not is_float:
        steps.append(v2.ToDtype(torch.float32, scale=True))
    return v2.Compose(steps)
