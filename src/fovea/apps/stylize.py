"""Visual stylization by optimizing an image: neural style (Gatys, Ecker & Bethge 2016, "Image
Style Transfer Using Convolutional Neural Networks") and DeepDream (Mordvintsev, Olah & Tyka
2015, "Inceptionism").

**Neural style.** The image ``x`` is optimized, the network's weights fixed, to minimize

    L(x) = alpha L_content(p, x) + beta L_style(a, x) [+ tv TV(x)]

with ``L_content = 1/2 sum (F^l - P^l)^2`` on the content layer (default ``relu4_2``, the paper's
rectified conv4_2) and ``L_style = sum_l w_l E_l``, ``E_l = sum (G^l - A^l)^2 / (4 N_l^2 M_l^2)``
over Gram matrices of the style layers (default ``relu1_1 ... relu5_1``, ``w_l = 1/5``); the
formulas are :mod:`fovea.losses.style`'s. ``alpha = 1, beta = 100`` by default; the paper's
figures use ``alpha / beta`` from 1e-5 to 1e-2 (``content_weight=1, style_weight=1e3 .. 1e5``).
The targets ``P`` (photo) and ``A`` (artwork) are computed once per scale, and the network runs
only up to the deepest layer used (:class:`~fovea.losses.style.FeatureTap`). When the style
image's layer has ``M_s`` positions and the image's ``M``, ``A`` is scaled by ``M / M_s`` (a Gram
matrix sums over positions), which is the paper's loss when both have the same size.

Options: start from the photo plus white noise (``init="photo"``) or from uniform white noise
(``init="noise"``); L-BFGS-B (default: L-BFGS with the pixels bounded to [0, 1], :func:`lbfgs_b`)
or Adam (pixels clamped to [0, 1] after each step); coarse-to-fine scales (each scale starts from the
previous result, upsampled); colour preservation (Gatys, Ecker, Bethge, Hertzmann & Shechtman
2017, "Controlling Perceptual Factors in Neural Style Transfer"): ``"luminance"`` transfers style
on the luminance channel only (the style's luminance matched to the photo's mean and spread) and
keeps the photo's chrominance (YIQ); ``"histogram"`` first gives the style image the photo's
colour mean and covariance (``x' = C_c^1/2 C_s^-1/2 (x - mu_s) + mu_c``).

**DeepDream.** Gradient ascent on the pixels to raise a layer's mean squared (or mean)
activation, or a class score: the gradient is divided by its mean absolute value, the image is
shifted by a random jitter (roll) before each step and back after, and the work runs over octaves
(a pyramid of the image scaled down by ``octave_scale``), small to large, the detail added at each
octave carried up to the next.

Images are (C, H, W) or (1, C, H, W) floats in [0, 1]; networks take normalized pixels, and the
``normalize`` module in front of them maps [0, 1] pixels to what they expect.
"""

from __future__ import annotations

import difflib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fovea.errors import UserError
from fovea.losses.style import FeatureTap, content_loss, gram_matrix, style_layer_loss, total_variation

__all__ = [
    "DreamConfig", "DreamResult", "GATYS_CONTENT", "GATYS_STYLE", "Normalize", "OnPixels", "StyleConfig", "StyleLoss",
    "StyleResult", "calibrate_batchnorm", "deep_dream", "lbfgs_b", "load_classifier_net", "load_vgg", "luminance",
    "match_color", "resize_long_side", "resolve_module",
    "stylize",
]

GATYS_CONTENT = ("relu4_2",)
GATYS_STYLE = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
OPTIMIZERS = ("lbfgs", "adam")
INITS = ("photo", "noise")
PRESERVE = (None, "luminance", "histogram")


class OnPixels(nn.Module):
    """``net(normalize(x))``: a network that takes [0, 1] pixels (``.net`` is the network)."""

    def __init__(self, net: nn.Module, normalize: nn.Module):
        super().__init__()
        self.net, self.normalize = net, normalize

    def forward(self, x: Tensor):
        return self.net(self.normalize(x))


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel: [0, 1] pixels to a network's input."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


# ---------------------------------------------------------------------------- networks


def _random(name: str, seed: int) -> nn.Module:
    from fovea.models.registry import create_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return create_model(name)


def load_classifier_net(model: str, weights: str | None, seed: int = 0) -> tuple[nn.Module, nn.Module, str]:
    """``(net, normalize, description)`` for a registered model name with ``weights``
    ``"torchvision"`` (ImageNet), ``"random"`` (initialized with ``seed``) or a weights file, or
    for a fovea classification run directory (its network and fitted pre-processing)."""
    from fovea.apps.explain import load_subject

    if Path(model).is_dir() or weights != "random":
        try:
            subject = load_subject(model, None if Path(model).is_dir() else (weights or "torchvision"))
        except UserError as e:
            if "not available offline" in str(e):
                raise UserError(f"{e}; or pass --weights random (random features)") from None
            raise
        wrapper = subject.model
        net = wrapper.net
        normalize = getattr(wrapper, "preprocess", None)
        if normalize is None:  # a registry model behind explain's normalization
            normalize = Normalize(wrapper.mean.flatten().tolist(), wrapper.std.flatten().tolist())
        if subject.in_channels != 3:
            raise UserError(f"{model!r} takes {subject.in_channels}-channel images; "
                            "stylization needs a colour (3-channel) network")
        kind = getattr(normalize, "kind", "zscore")
        if kind not in ("none", "zscore"):
            raise UserError(f"run {model!r} was trained with {kind!r} pre-processing, which is tied to its image size; "
                            "use a run trained with zscore or none")
        source = "run " + model if Path(model).is_dir() else f"{model} ({weights} weights)"
        return net.eval(), normalize.eval(), source
    from fovea.models.registry import list_models

    if model not in list_models():
        close = difflib.get_close_matches(model, list_models(), n=5, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UserError(f"{model!r} is neither a run directory nor a registered model name{hint}")
    return _random(model, seed).eval(), Normalize(), f"{model} (random weights, seed {seed})"


def load_vgg(weights: str = "torchvision", model: str = "vgg19", seed: int = 0) -> tuple[nn.Module, nn.Module, str]:
    """The loss network of neural style: a VGG (``layer_names`` and ``features``) with
    ``weights`` ``"torchvision"``, ``"random"``, a weights file or a fovea run directory (then
    ``model`` is ignored); returns ``(net, normalize, description)``."""
    if weights is not None and Path(str(weights)).is_dir():
        net, normalize, source = load_classifier_net(str(weights), None, seed)
    elif weights not in (None, "torchvision", "random") and not Path(str(weights)).is_file():
        raise UserError(f"--weights {weights!r}: expected torchvision, random, a weights file or a run directory")
    else:
        net, normalize, source = load_classifier_net(model, weights or "torchvision", seed)
    if not isinstance(getattr(net, "layer_names", None), dict) or not isinstance(getattr(net, "features", None),
                                                                                  nn.Sequential):
        raise UserError(f"{source} is a {type(net).__name__}; neural style needs a VGG (vgg19, vgg16, ...)")
    return net, normalize, source


# ---------------------------------------------------------------------------- images


def _batch(x: Tensor) -> Tensor:
    if x.dim() == 3:
        x = x[None]
    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(f"expected one image (C, H, W) or (1, C, H, W), got shape {tuple(x.shape)}")
    return x.float()


def resize_long_side(x: Tensor, size: int) -> Tensor:
    """``x`` (1, C, H, W) resized (bilinear, antialiased) so that its longer side is ``size``."""
    h, w = x.shape[-2:]
    scale = size / max(h, w)
    hw = (max(1, round(h * scale)), max(1, round(w * scale)))
    if hw == (h, w):
        return x
    return F.interpolate(x, size=hw, mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)


_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def _to_yiq(x: Tensor) -> Tensor:
    return torch.einsum("ij,bjhw->bihw", _YIQ.to(x), x)


def _from_yiq(x: Tensor) -> Tensor:
    return torch.einsum("ij,bjhw->bihw", torch.linalg.inv(_YIQ).to(x), x)


def luminance(x: Tensor) -> Tensor:
    """The Y of YIQ (ITU-R 601 luma) of an RGB batch, (B, 1, H, W)."""
    return _to_yiq(x)[:, :1]


def _sqrtm(c: Tensor, inverse: bool = False) -> Tensor:
    vals, vecs = torch.linalg.eigh(c)
    vals = vals.clamp(min=1e-8)
    return (vecs * (vals.rsqrt() if inverse else vals.sqrt())) @ vecs.T


def match_color(style: Tensor, content: Tensor) -> Tensor:
    """The style image recoloured to the content's RGB mean and covariance (Gatys et al. 2017,
    section 5.2, with the symmetric matrix square roots of Image Analogies' transfer)."""
    s, c = style.flatten(2)[0].double(), content.flatten(2)[0].double()  # (3, M)
    mu_s, mu_c = s.mean(1, keepdim=True), c.mean(1, keepdim=True)
    eye = 1e-5 * torch.eye(3, dtype=torch.float64)
    cov_s, cov_c = torch.cov(s) + eye, torch.cov(c) + eye
    a = _sqrtm(cov_c) @ _sqrtm(cov_s, inverse=True)
    out = a @ (s - mu_s) + mu_c
    return out.view_as(style[0])[None].to(style.dtype).clamp(0, 1)


def _match_luminance(style_y: Tensor, content_y: Tensor) -> Tensor:
    """``sigma_c / sigma_s (L_s - mu_s) + mu_c`` (Gatys et al. 2017, section 5.1)."""
    return ((style_y - style_y.mean()) * (content_y.std() / style_y.std().clamp(min=1e-6)) + content_y.mean())


# ---------------------------------------------------------------------------- neural style


@dataclass
class StyleConfig:
    """Settings of :func:`stylize`; the defaults are the paper's, with ``alpha, beta`` from SCOPE."""

    content_layers: tuple[str, ...] = GATYS_CONTENT
    style_layers: tuple[str, ...] = GATYS_STYLE
    style_layer_weights: tuple[float, ...] | None = None  # w_l; None: 1 / len(style_layers) each
    content_weight: float = 1.0  # alpha
    style_weight: float = 100.0  # beta
    tv_weight: float = 0.0  # times total_variation(x, power=2) on [0, 1] pixels
    steps: int = 300  # optimizer steps at each scale
    optimizer: str = "lbfgs"
    lr: float | None = None  # Adam's step size (default 0.02, pixels in [0, 1]); L-BFGS-B needs none
    init: str = "photo"
    init_noise: float = 0.1  # standard deviation of the white noise added to the photo
    sizes: tuple[int, ...] = (256,)  # longer side of the result at each scale, coarse to fine
    preserve_color: str | None = None
    channels_last: bool = True
    history_size: int = 20  # L-BFGS-B memory (correction pairs)
    seed: int = 0

    def check(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise UserError(f"optimizer {self.optimizer!r}: expected one of {', '.join(OPTIMIZERS)}")
        if self.init not in INITS:
            raise UserError(f"init {self.init!r}: expected one of {', '.join(INITS)}")
        if self.preserve_color not in PRESERVE:
            raise UserError(f"preserve_color {self.preserve_color!r}: expected luminance or histogram")
        if self.steps < 1:
            raise UserError(f"steps {self.steps}: expected at least 1")
        if not self.sizes or any(int(s) < 1 for s in self.sizes):
            raise UserError(f"sizes {list(self.sizes)}: expected positive pixel sizes")
        if self.style_layer_weights is not None and len(self.style_layer_weights) != len(self.style_layers):
            raise UserError(f"{len(self.style_layer_weights)} style layer weights for {len(self.style_layers)} "
                            f"style layers ({', '.join(self.style_layers)}); give one weight per layer")
        for name in ("content_weight", "style_weight", "tv_weight", "init_noise"):
            if not getattr(self, name) >= 0:
                raise UserError(f"{name} {getattr(self, name)}: expected a number >= 0")
        if self.lr is not None and not self.lr > 0:
            raise UserError(f"lr {self.lr}: expected a number > 0")


class StyleLoss(nn.Module):
    """``alpha L_content + beta sum_l w_l E_l + tv TV`` of an image against targets set once by
    :meth:`set_targets`; the network runs only to the deepest layer used. ``forward(x)`` returns
    ``(loss, parts)`` with parts ``content``, ``style`` and ``tv`` (unweighted) as tensors."""

    def __init__(self, net: nn.Module, normalize: nn.Module, cfg: StyleConfig):
        super().__init__()
        self.tap = FeatureTap(net, [*cfg.content_layers, *cfg.style_layers])
        self.normalize = normalize
        self.content_layers, self.style_layers = tuple(cfg.content_layers), tuple(cfg.style_layers)
        w = cfg.style_layer_weights or [1.0 / len(self.style_layers)] * len(self.style_layers)
        self.style_layer_weights = dict(zip(self.style_layers, map(float, w)))
        self.alpha, self.beta, self.tv = cfg.content_weight, cfg.style_weight, cfg.tv_weight
        self.memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.content_targets: dict[str, Tensor] = {}
        self.style_targets: dict[str, Tensor] = {}  # Gram matrices divided by the style layer's positions
        self.evaluations = 0

    @property
    def min_size(self) -> int:
        """The smallest image side for which the deepest layer used has a pixel."""
        return 2 ** sum(isinstance(m, nn.MaxPool2d) for m in self.tap.body)

    def features(self, x: Tensor) -> dict[str, Tensor]:
        if min(x.shape[-2:]) < self.min_size:
            raise UserError(f"image of {x.shape[-1]}x{x.shape[-2]} pixels is too small for layer "
                            f"{list(self.tap.at.values())[-1]}; expected at least {self.min_size} pixels a side")
        if x.shape[1] == 1:  # a luminance image (colour preservation): the network sees it as grey RGB
            x = x.expand(-1, 3, -1, -1)
        z = self.normalize(x).contiguous(memory_format=self.memory_format)
        return self.tap(z)

    @torch.no_grad()
    def set_targets(self, content: Tensor, style: Tensor) -> None:
        """``P^l`` of the photo and ``A^l`` of the artwork, computed once."""
        fc = self.features(content)
        self.content_targets = {name: fc[name].detach() for name in self.content_layers}
        del fc
        fs = self.features(style)
        self.style_targets = {}
        for name in self.style_layers:
            f = fs[name]
            self.style_targets[name] = gram_matrix(f) / (f.shape[-2] * f.shape[-1])

    def forward(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        if not self.content_targets and not self.style_targets:
            raise RuntimeError("StyleLoss needs set_targets(content, style) first")
        self.evaluations += 1
        feats = self.features(x)
        zero = x.new_zeros(())
        lc = sum((content_loss(feats[n], self.content_targets[n]) for n in self.content_layers), zero)
        ls = zero
        for name in self.style_layers:
            f = feats[name]
            n, m = f.shape[1], f.shape[-2] * f.shape[-1]
            e = style_layer_loss(gram_matrix(f), self.style_targets[name] * m, n, m)
            ls = ls + self.style_layer_weights[name] * e
        tv = total_variation(x) if self.tv else zero
        loss = self.alpha * lc + self.beta * ls + self.tv * tv
        return loss, {"content": lc.detach(), "style": ls.detach(), "tv": tv.detach()}


@dataclass
class StyleResult:
    image: Tensor  # (3, H, W) in [0, 1]
    losses: list[float]  # total loss at each evaluation, all scales in order
    final_loss: float  # total loss of the returned (unclamped) image at the last scale
    parts: dict[str, float]  # its content, style and tv terms (unweighted)
    evaluations: int  # forward + backward passes of the image (targets not counted)
    iterations: list[int]  # optimizer steps run at each scale
    seconds: float
    sizes: list[tuple[int, int]] = field(default_factory=list)  # (H, W) of each scale


def _prepare(content: Tensor, style: Tensor, size: int, cfg: StyleConfig) -> tuple[Tensor, Tensor, Tensor | None]:
    """Content and style at this scale, in the colours optimization works on, and the content's
    YIQ (for putting the chrominance back) when preserving luminance."""
    c = resize_long_side(content, size)
    s = resize_long_side(style, size)
    if cfg.preserve_color == "histogram":
        s = match_color(s, c)
    if cfg.preserve_color == "luminance":
        yiq = _to_yiq(c)
        s_y = _match_luminance(luminance(s), yiq[:, :1])
        return yiq[:, :1], s_y, yiq
    return c, s, None


def stylize(content: Tensor, style: Tensor, net: nn.Module, normalize: nn.Module | None = None,
            cfg: StyleConfig | None = None,
            on_step: Callable[[int, int, Tensor, float], None] | None = None) -> StyleResult:
    """Neural style: an image with ``content``'s content and ``style``'s style (both (3, H, W) or
    (1, 3, H, W) in [0, 1]) through the VGG ``net`` (``normalize`` in front, ImageNet's by
    default). ``on_step(scale_index, step, image, loss)`` is called after every step with the
    current (1, 3, H, W) image in RGB (luminance runs: with the content's chrominance)."""
    cfg = cfg or StyleConfig()
    cfg.check()
    normalize = normalize if normalize is not None else Normalize()
    device = next(net.parameters()).device
    content, style = _batch(content).to(device), _batch(style).to(device)
    normalize = normalize.to(device)
    loss_fn = StyleLoss(net, normalize, cfg)
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    losses: list[float] = []
    sizes: list[tuple[int, int]] = []
    iterations: list[int] = []
    start = time.perf_counter()
    x: Tensor | None = None
    yiq = None
    for k, size in enumerate(cfg.sizes):
        c, s, yiq = _prepare(content, style, int(size), cfg)
        loss_fn.set_targets(c, s)
        if x is None:
            if cfg.init == "photo":
                x = c + cfg.init_noise * torch.randn(c.shape, generator=gen).to(device)
            else:
                x = torch.rand(c.shape, generator=gen).to(device)
        else:
            x = F.interpolate(x, size=c.shape[-2:], mode="bilinear", align_corners=False)
        sizes.append(tuple(c.shape[-2:]))
        show = None
        if on_step is not None:
            def show(step: int, img: Tensor, loss: float, k=k, yiq=yiq) -> None:
                on_step(k, step, _to_rgb(img, yiq), loss)
        x, done = _optimize(loss_fn, x, cfg, losses, show)
        iterations.append(done)
    with torch.no_grad():
        final, parts = loss_fn(x)
        loss_fn.evaluations -= 1
    return StyleResult(_to_rgb(x, yiq)[0].clamp(0, 1).cpu(), losses, float(final),
                       {k: float(v) for k, v in parts.items()}, loss_fn.evaluations, iterations,
                       time.perf_counter() - start, sizes)


def _to_rgb(x: Tensor, yiq: Tensor | None) -> Tensor:
    """An optimized luminance image (1 channel) back to colour with the content's I and Q."""
    if yiq is None:
        return x.detach()
    return _from_yiq(torch.cat([x.detach(), yiq[:, 1:]], 1)).clamp(0, 1)


def _optimize(loss_fn: StyleLoss, x0: Tensor, cfg: StyleConfig, losses: list[float],
              on_step: Callable[[int, Tensor, float], None] | None) -> tuple[Tensor, int]:
    if cfg.optimizer == "lbfgs":
        return lbfgs_b(lambda x: loss_fn(x)[0], x0, cfg.steps, cfg.history_size, losses, on_step)
    x = x0.detach().clone().clamp(0, 1).requires_grad_(True)
    opt = torch.optim.Adam([x], lr=cfg.lr or 0.02)
    for step in range(1, cfg.steps + 1):
        opt.zero_grad(set_to_none=False)
        loss, _ = loss_fn(x)
        loss.backward()
        losses.append(float(loss.detach()))
        if not math.isfinite(losses[-1]):
            raise UserError(f"the loss became {losses[-1]} at step {step}; lower --lr or the weights")
        opt.step()
        with torch.no_grad():
            x.clamp_(0, 1)  # projected: pixels stay in [0, 1]
        if on_step is not None:
            on_step(step, x.detach(), losses[-1])
    return x.detach(), cfg.steps


def lbfgs_b(loss: Callable[[Tensor], Tensor], x0: Tensor, steps: int, history: int = 20,
            losses: list[float] | None = None, on_step: Callable[[int, Tensor, float], None] | None = None,
            lower: float = 0.0, upper: float = 1.0) -> tuple[Tensor, int]:
    """``steps`` iterations of L-BFGS-B (Byrd, Lu, Nocedal & Zhu 1995; scipy's) minimizing
    ``loss(x)`` with every pixel kept in ``[lower, upper]``; the loss and its gradient come from
    torch (float32), the optimizer works in float64. Unconstrained L-BFGS lets pixels drift far
    outside [0, 1] (to [-1, 2] for random-feature texture synthesis), and clamping the result
    afterwards undoes much of what was optimized; clamping between iterations breaks L-BFGS's
    curvature pairs. Every evaluation's loss is appended to ``losses``; fewer than ``steps``
    iterations run only when the line search cannot make progress. Returns ``(x, iterations)``."""
    import numpy as np
    from scipy.optimize import Bounds, minimize

    shape, device = x0.shape, x0.device
    losses = losses if losses is not None else []
    n = x0.numel()

    def fun(z: np.ndarray) -> tuple[float, np.ndarray]:
        x = torch.from_numpy(z).view(shape).to(device, torch.float32).requires_grad_(True)
        value = loss(x)
        (grad,) = torch.autograd.grad(value, x)
        losses.append(float(value.detach()))
        if not math.isfinite(losses[-1]):
            raise UserError(f"the loss became {losses[-1]} after {len(losses)} evaluations; lower the weights")
        return losses[-1], grad.detach().double().cpu().numpy().ravel()

    step = [0]

    def callback(z: np.ndarray) -> None:
        step[0] += 1
        if on_step is not None:
            on_step(step[0], torch.from_numpy(z).view(shape).to(device, torch.float32), losses[-1])

    start = x0.detach().double().clamp(lower, upper).cpu().numpy().ravel()
    result = minimize(fun, start, jac=True, method="L-BFGS-B", callback=callback,
                      bounds=Bounds(np.full(n, lower), np.full(n, upper)),
                      options=dict(maxiter=steps, maxcor=history, maxfun=4 * steps + 20, ftol=0.0, gtol=0.0))
    return torch.from_numpy(result.x).view(shape).to(device, torch.float32), int(result.nit)


# ---------------------------------------------------------------------------- DeepDream


class _Enough(Exception):
    """Raised by a hook once the dreamed layer has run: the rest of the network is not needed."""


def _stop(module: nn.Module, inputs, output) -> None:
    raise _Enough


def resolve_module(net: nn.Module, layer: str) -> str:
    """The ``named_modules`` name for ``layer``: a module name (``inception4c``,
    ``features.20``) or, on a VGG, a paper name (``relu4_1``)."""
    modules = dict(net.named_modules())
    if layer in modules and layer:
        return layer
    paper = {v: k for k, v in (getattr(net, "layer_names", None) or {}).items()}
    if layer in paper:
        return paper[layer]
    names = [n for n in modules if n] + list(paper)
    close = difflib.get_close_matches(layer, names, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    top = [n for n in modules if n and "." not in n]
    raise UserError(f"layer {layer!r} is not in {type(net).__name__}; expected a module name such as "
                    f"{', '.join(top[:12])}{hint}")


@torch.no_grad()
def calibrate_batchnorm(net: nn.Module, x: Tensor) -> int:
    """Set every batch norm's running statistics to those of ``net``'s activations on ``x``
    (one forward). A randomly initialized network's running statistics (mean 0, variance 1) do
    not fit its activations, which then fade layer by layer (GoogLeNet's to ~1e-9 at
    inception4c); measured statistics make random features usable. Returns how many were set."""
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m, m.momentum, m.training) for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: one batch sets them exactly
        m.train()
    try:
        (getattr(net, "forward_features", None) or net)(x)
    finally:
        for m, momentum, training in saved:
            m.momentum, m.training = momentum, training
    return len(norms)


@dataclass
class DreamConfig:
    layer: str | None = "inception4c"  # None: the class score of ``target``
    target: int | None = None
    objective: str = "mean_square"  # or "mean"
    octaves: int = 4
    octave_scale: float = 1.4
    steps: int = 10  # gradient steps per octave
    lr: float = 0.01  # step along the gradient normalized to mean |g| = 1, in [0, 1] pixel units
    jitter: int = 32  # largest random shift, pixels
    seed: int = 0

    def check(self) -> None:
        if self.objective not in ("mean_square", "mean"):
            raise UserError(f"objective {self.objective!r}: expected mean_square or mean")
        if self.layer is None and self.target is None:
            raise UserError("DeepDream needs a layer or a class")
        if self.octaves < 1 or self.steps < 1 or not self.octave_scale > 1 or not self.lr > 0 or self.jitter < 0:
            raise UserError(f"DeepDream needs octaves >= 1, steps >= 1, octave scale > 1, lr > 0 and jitter >= 0; "
                            f"received {self.octaves}, {self.steps}, {self.octave_scale}, {self.lr}, {self.jitter}")


@dataclass
class DreamResult:
    image: Tensor  # (C, H, W) in [0, 1]
    start_objective: float  # of the input at full size
    final_objective: float  # of the result
    seconds: float


def _dream_objective(model: nn.Module, net: nn.Module, module: str | None,
                     cfg: DreamConfig) -> Callable[[Tensor], Tensor]:
    from fovea.apps.explain import tap
    from fovea.models.base import model_logits

    def objective(x: Tensor) -> Tensor:
        if module is None:
            logits = model_logits(model, x)
            if not 0 <= cfg.target < logits.shape[1]:
                raise UserError(f"class {cfg.target} is out of range; the model has {logits.shape[1]} classes")
            return logits[0, cfg.target]
        with tap(net, [module]) as acts:
            handle = dict(net.named_modules())[module].register_forward_hook(_stop)
            try:
                model(x)
            except _Enough:
                pass
            finally:
                handle.remove()
        a = acts[module].float()
        return a.pow(2).mean() if cfg.objective == "mean_square" else a.mean()
    return objective


def deep_dream(model: nn.Module, image: Tensor, cfg: DreamConfig | None = None,
               on_octave: Callable[[int, Tensor], None] | None = None) -> DreamResult:
    """DeepDream ``image`` ((C, H, W) or (1, C, H, W) in [0, 1]) through ``model`` (taking
    [0, 1] pixels; layer names refer to ``model.net`` when it has one)."""
    cfg = cfg or DreamConfig()
    cfg.check()
    from fovea.apps.explain import backbone
    from fovea.models.base import eval_mode

    net = backbone(model)
    module = resolve_module(net, cfg.layer) if cfg.layer is not None else None
    device = next(model.parameters()).device
    base = _batch(image).to(device)
    objective = _dream_objective(model, net, module, cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    h, w = base.shape[-2:]
    shapes = [(h, w)]
    for _ in range(cfg.octaves - 1):
        nh, nw = round(shapes[-1][0] / cfg.octave_scale), round(shapes[-1][1] / cfg.octave_scale)
        if min(nh, nw) < 16:
            break
        shapes.append((nh, nw))
    start = time.perf_counter()
    with torch.enable_grad(), eval_mode(model):
        with torch.no_grad():
            start_obj = float(objective(base))
        detail = torch.zeros_like(base[..., :shapes[-1][0], :shapes[-1][1]])
        for k, shape in enumerate(reversed(shapes)):
            octave_base = base if shape == (h, w) else F.interpolate(base, size=shape, mode="bilinear",
                                                                     align_corners=False, antialias=True)
            detail = F.interpolate(detail, size=shape, mode="bilinear", align_corners=False)
            x = octave_base + detail
            for _ in range(cfg.steps):
                dy, dx = (torch.randint(-cfg.jitter, cfg.jitter + 1, (2,), generator=gen).tolist()
                          if cfg.jitter else (0, 0))
                shifted = torch.roll(x, (dy, dx), (-2, -1)).requires_grad_(True)
                (g,) = torch.autograd.grad(objective(shifted), shifted)
                g = torch.roll(g, (-dy, -dx), (-2, -1))
                x = (x + cfg.lr * g / g.abs().mean().clamp(min=1e-12)).clamp(0, 1).detach()
            detail = x - octave_base
            if on_octave is not None:
                on_octave(k, x)
        with torch.no_grad():
            final_obj = float(objective(x))
    return DreamResult(x[0].cpu(), start_obj, final_obj, time.perf_counter() - start)
