"""Seeing inside a classifier: filters, feature maps, class activation maps, Grad-CAM, occlusion
sensitivity, gradient saliency and class-model visualization.

Every method works on a model that takes pixels in [0, 1] (a fovea run's
:class:`~fovea.tasks.classify.ImageClassifier`, or a registry model wrapped with its weights'
normalization by :func:`load_subject`) and reaches inside its backbone (``model.net``) with one
generic tool, forward hooks on modules named as ``net.named_modules()`` names them
(:func:`tap`). Nothing is written per architecture.

- **filters**: the weights of the first convolution, one tile per filter, each scaled to its own
  min..max (Zeiler & Fergus 2014, "Visualizing and Understanding Convolutional Networks").
- **featuremaps**: the activations ``A^k`` of a layer for one image, one tile per channel.
- **cam**, class activation maps (Zhou et al. 2016, "Learning Deep Features for Discriminative
  Localization"): for a network whose last maps are globally average-pooled into a linear
  classifier, ``M_c(x, y) = sum_k w_k^c A^k(x, y)``.
- **gradcam** (Selvaraju et al. 2017): ``alpha_k^c = mean_ij d y^c / d A^k_ij`` and
  ``L^c = ReLU(sum_k alpha_k^c A^k)``, on any layer with spatial maps; ``y^c`` is the class
  score before the softmax.
- **occlusion** (Zeiler & Fergus 2014): slide a grey (0.5) square over the image and record the
  drop ``p_c(x) - p_c(x occluded)`` of the class probability; each pixel gets the mean drop over
  the placements that cover it.
- **saliency** (Simonyan, Vedaldi & Zisserman 2014, "Deep Inside Convolutional Networks"):
  ``max_channels |d y^c / d x|``.
- **classmodel** (Simonyan et al. 2014): ``argmax_x y^c(x) - lambda ||x - x0||_2^2`` by gradient
  ascent (Adam steps) from the uniform grey image ``x0``; with ``layer`` and ``unit`` it maximizes
  the mean activation of one channel instead.

The default layer is the last module whose output is a spatial map (N, C, H, W larger than 1x1),
found by a dry run with hooks: the map global pooling reads. Models run in eval mode; every
module gets its mode back afterwards, and gradients are taken with ``torch.autograd.grad``, so no
parameter's ``.grad`` is touched.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fovea.errors import UserError
from fovea.models.base import eval_mode
from fovea.models.base import model_logits as _logits

__all__ = [
    "METHODS", "Explanation", "LayerRecord", "Subject", "class_activation_map", "class_model",
    "default_layer", "explain", "feature_maps", "first_layer_filters", "grad_cam", "gradient_saliency",
    "load_subject", "map_layers", "occlusion_sensitivity", "quadrant_masses", "resolve_layer",
    "resolve_target", "save_explanation", "save_overlay", "save_tiles", "tap", "tile_images", "upsample",
]

METHODS = ("filters", "featuremaps", "cam", "gradcam", "occlusion", "saliency", "classmodel")
GREY = 0.5  # occluder and class-model start: mid-grey in [0, 1] pixels
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


# ---------------------------------------------------------------------------- hooks


def backbone(model: nn.Module) -> nn.Module:
    """The network whose modules layer names refer to: ``model.net`` when the model carries its
    pre-processing in front (ImageClassifier), else the model itself."""
    return getattr(model, "net", model)




@contextmanager
def tap(net: nn.Module, names: Sequence[str]) -> Iterator[dict[str, Tensor]]:
    """Forward hooks on the named modules of ``net``: the dict fills with each module's output
    (the last call wins when a module runs more than once).

    The recorded tensor stays in the autograd graph, so ``torch.autograd.grad(score, out[name])``
    is the gradient with respect to that layer. The hook passes a copy on to the rest of the
    network, so a later in-place op (``ReLU(inplace=True)``) cannot change what was recorded.
    """
    modules = dict(net.named_modules())
    outputs: dict[str, Tensor] = {}

    def hook_for(name: str):
        def hook(module, inputs, output):
            if isinstance(output, Tensor):
                outputs[name] = output
                return output.clone()
            return None
        return hook

    handles = [modules[n].register_forward_hook(hook_for(n)) for n in names]
    try:
        yield outputs
    finally:
        for h in handles:
            h.remove()


@dataclass
class LayerRecord:
    """One module with a spatial output in a dry run: name, output shape (C, H, W), how many
    times it ran, and when it last finished (modules finish after their children)."""

    name: str
    shape: tuple[int, ...]
    calls: int
    order: int
    before_head: bool = True  # finished before the classifier started
    _out: Tensor | None = field(default=None, repr=False)
    _version: int = field(default=0, repr=False)


def map_layers(model: nn.Module, x: Tensor) -> list[LayerRecord]:
    """Dry run: every module of the backbone whose output is a 4-D map, in the order they finish."""
    net = backbone(model)
    records: dict[str, LayerRecord] = {}
    counter = iter(range(1 << 62))
    head_started = []

    def hook_for(name: str):
        def hook(module, inputs, output):
            if isinstance(output, Tensor) and output.dim() == 4:
                calls = records[name].calls + 1 if name in records else 1
                # the tensor and its version tell apart a conv output from the in-place ReLU after it
                records[name] = LayerRecord(name, tuple(output.shape[1:]), calls, next(counter), not head_started,
                                            output, output._version)
        return hook

    handles = [m.register_forward_hook(hook_for(n)) for n, m in net.named_modules() if n]
    head = _classifier(net)
    if head is not None:
        handles.append(head.register_forward_pre_hook(lambda m, inputs: head_started.append(True)))
    try:
        with torch.no_grad(), eval_mode(model):
            model(x)
    finally:
        for h in handles:
            h.remove()
    return sorted(records.values(), key=lambda r: r.order)


def default_layer(records: list[LayerRecord]) -> str:
    """The last map before global pooling: the last spatial output larger than 1x1, named by the
    deepest module that produced exactly that tensor and ran once."""
    if not records:
        raise UserError("the model has no layer with a spatial (N, C, H, W) output to explain")
    body = [r for r in records if r.before_head] or records  # a 1x1-conv classifier's maps are scores, not features
    spatial = [r for r in body if r.shape[1] * r.shape[2] > 1] or body
    last = spatial[-1]
    same = [r for r in records if r._out is last._out and r._version == last._version and r.calls == 1]
    return min(same, key=lambda r: r.order).name if same else last.name


def _name_list(names: Sequence[str], wanted: str) -> str:
    close = difflib.get_close_matches(wanted, names, n=5, cutoff=0.4)
    return ", ".join(close + [n for n in names if n not in close])


def resolve_layer(records: list[LayerRecord], name: str | None) -> str:
    """``name`` if it is a layer with spatial maps, the default layer for ``None``, else a
    UserError listing the valid names, close matches first."""
    if name is None:
        return default_layer(records)
    names = [r.name for r in records]
    if name in names:
        return name
    raise UserError(f"unknown layer {name!r}; layers with spatial maps are: {_name_list(names, name)}")


def resolve_target(target: int | str | None, classes: Sequence[str], default: int | None = None) -> int:
    """A class index from an index or a class name; ``None`` gives ``default``."""
    k = len(classes)
    if target is None or (isinstance(target, str) and not target.strip()):
        if default is None:
            raise UserError("no target class; pass --target CLASS (an index or a class name)")
        return default
    if isinstance(target, str) and target in classes:
        return list(classes).index(target)
    try:
        index = int(target)
    except (TypeError, ValueError):
        shown = ", ".join(map(str, classes[:10])) + (", ..." if k > 10 else "")
        raise UserError(f"target {target!r} is neither a class index in 0..{k - 1} nor a class name ({shown})") from None
    if not 0 <= index < k:
        raise UserError(f"target {index} is out of range; the model has {k} classes, expected 0..{k - 1}")
    return index


# ---------------------------------------------------------------------------- methods


def first_layer_filters(model: nn.Module, layer: str | None = None) -> tuple[str, Tensor]:
    """``(name, weights)`` of the first convolution (or of the convolution named ``layer``):
    a ``(filters, in_channels, kh, kw)`` tensor."""
    convs = [(n, m) for n, m in backbone(model).named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise UserError("the model has no 2-D convolution whose filters could be shown")
    if layer is None:
        name, conv = convs[0]
    else:
        found = dict(convs).get(layer)
        if found is None:
            names = [n for n, _ in convs]
            raise UserError(f"unknown convolution {layer!r}; convolutions are: {_name_list(names, layer)}")
        name, conv = layer, found
    return name, conv.weight.detach().float().cpu()


def feature_maps(model: nn.Module, x: Tensor, layer: str) -> Tensor:
    """Activations ``(C, h, w)`` of ``layer`` for the image ``x`` (1, C, H, W)."""
    with torch.no_grad(), eval_mode(model), tap(backbone(model), [layer]) as acts:
        model(x)
    return acts[layer][0].detach().float()


def _classifier(net: nn.Module) -> nn.Module | None:
    """The output layer: ``get_classifier()`` where the model has the common surface, else its last Linear."""
    try:
        fc = net.get_classifier()
    except (AttributeError, NotImplementedError):
        fc = None
    if fc is None or isinstance(fc, nn.Identity):
        linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
        fc = linears[-1] if linears else None
    return fc


def _classifier_weight(net: nn.Module) -> tuple[nn.Module, Tensor]:
    fc = _classifier(net)
    if isinstance(fc, nn.Linear):
        return fc, fc.weight
    if isinstance(fc, nn.Conv2d) and fc.kernel_size == (1, 1) and fc.groups == 1:
        return fc, fc.weight.flatten(1)  # a 1x1 convolution classifier (SqueezeNet) before the pooling
    raise UserError(f"cam needs a linear (or 1x1 convolution) classifier; this model's is "
                    f"{type(fc).__name__}; use --method gradcam")


def _feeds_classifier(a: Tensor, fc_in: Tensor, fc: nn.Module) -> bool:
    pooled = a if isinstance(fc, nn.Conv2d) else a.mean((1, 2))
    tol = 1e-4 * (1 + float(fc_in.abs().max()))
    return pooled.shape == fc_in.shape and torch.allclose(pooled, fc_in, rtol=1e-3, atol=tol)


def class_activation_map(model: nn.Module, x: Tensor, target: int, layer: str) -> Tensor:
    """CAM (Zhou et al. 2016): ``sum_k w_k^c A^k`` at the layer's resolution ``(h, w)``.

    Checks that ``layer`` really is the map the classifier reads through global average pooling
    (its spatial mean equals the classifier's input); otherwise the weights mean nothing there.
    """
    net = backbone(model)
    fc, weight = _classifier_weight(net)
    seen: dict[str, Tensor] = {}
    handle = fc.register_forward_pre_hook(lambda m, inputs: seen.__setitem__("in", inputs[0]))
    try:
        with torch.no_grad(), eval_mode(model), tap(net, [layer]) as acts:
            model(x)
    finally:
        handle.remove()
    a, fc_in = acts[layer][0].float(), seen["in"][0].float()
    if not _feeds_classifier(a, fc_in, fc):
        found = [r.name for r in map_layers(model, x)  # skip maps changed in place after they were recorded
                 if r._out._version == r._version and _feeds_classifier(r._out[0].float(), fc_in, fc)]
        hint = f"that is {found[0]!r}" if found else "this model has none (it is not globally average-pooled)"
        raise UserError(f"cam needs the map that global average pooling feeds to the classifier, and layer {layer!r} "
                        f"is not it ({hint}); --method gradcam works on any layer of any model")
    return torch.einsum("c,chw->hw", weight[target].detach().float(), a)


def grad_cam(model: nn.Module, x: Tensor, target: int, layer: str) -> Tensor:
    """Grad-CAM (Selvaraju et al. 2017): ``ReLU(sum_k alpha_k A^k)``, ``alpha_k`` the spatial mean
    of ``d y^c / d A^k``; returned at the layer's resolution ``(h, w)``."""
    x = x.detach().clone().requires_grad_(True)  # so every activation is in the graph, frozen weights or not
    with torch.enable_grad(), eval_mode(model), tap(backbone(model), [layer]) as acts:
        score = _logits(model, x)[0, target]
        (grad,) = torch.autograd.grad(score, acts[layer])
    a, g = acts[layer][0].detach().float(), grad[0].float()
    return F.relu((g.mean((1, 2))[:, None, None] * a).sum(0))


def _positions(size: int, patch: int, stride: int) -> list[int]:
    starts = list(range(0, max(size - patch, 0) + 1, stride))
    if starts[-1] != max(size - patch, 0):
        starts.append(size - patch)  # the last placement reaches the border
    return starts


@torch.no_grad()
def occlusion_sensitivity(model: nn.Module, x: Tensor, target: int, patch: int | None = None,
                          stride: int | None = None, fill: float = GREY, batch_size: int = 32) -> Tensor:
    """Occlusion sensitivity (Zeiler & Fergus 2014): mean drop of ``p_target`` over the placements
    of a ``patch`` x ``patch`` square of value ``fill`` covering each pixel; ``(H, W)``.

    Defaults: ``patch`` = a sixth of the shorter side, ``stride`` = half the patch."""
    h, w = x.shape[-2:]
    patch = patch or max(1, round(min(h, w) / 6))
    stride = stride or max(1, patch // 2)
    if patch < 1 or stride < 1:
        raise UserError(f"occlusion patch and stride must be at least 1; received patch={patch}, stride={stride}")
    patch = min(patch, h, w)
    boxes = [(i, j) for i in _positions(h, patch, stride) for j in _positions(w, patch, stride)]
    with eval_mode(model):
        p0 = _logits(model, x).softmax(1)[0, target]
        drops = []
        for start in range(0, len(boxes), batch_size):
            chunk = boxes[start:start + batch_size]
            batch = x.repeat(len(chunk), 1, 1, 1)
            for k, (i, j) in enumerate(chunk):
                batch[k, :, i:i + patch, j:j + patch] = fill
            drops.append(p0 - _logits(model, batch).softmax(1)[:, target])
    drops = torch.cat(drops).cpu()
    heat, count = torch.zeros(h, w), torch.zeros(h, w)
    for (i, j), d in zip(boxes, drops):
        heat[i:i + patch, j:j + patch] += d
        count[i:i + patch, j:j + patch] += 1
    return heat / count.clamp(min=1)


def gradient_saliency(model: nn.Module, x: Tensor, target: int) -> Tensor:
    """Saliency (Simonyan et al. 2014): ``max_channels |d y^c / d x|``, ``(H, W)``, with respect to
    the [0, 1] pixels (before the model's own normalization)."""
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad(), eval_mode(model):
        (grad,) = torch.autograd.grad(_logits(model, x)[0, target], x)
    return grad[0].abs().amax(0).float()


@dataclass
class ClassModel:
    image: Tensor  # (C, H, W) optimized pixels, not clipped
    start_score: float
    final_score: float


def class_model(model: nn.Module, target: int, shape: tuple[int, int, int], steps: int = 200, lr: float = 0.05,
                l2: float = 0.1, layer: str | None = None, unit: int | None = None) -> ClassModel:
    """Class-model visualization (Simonyan et al. 2014): gradient ascent on
    ``y^c(x) - l2 * ||x - x0||^2`` from the grey image ``x0``. With ``layer`` and ``unit`` the
    objective is the mean activation of channel ``unit`` of that layer instead of ``y^c``."""
    if steps < 1 or not lr > 0 or not l2 >= 0:
        raise UserError(f"classmodel needs steps >= 1, lr > 0 and l2 >= 0; received steps={steps}, lr={lr}, l2={l2}")
    net = backbone(model)
    device = next(model.parameters()).device
    x0 = torch.full((1, *shape), GREY, device=device)

    def objective(x: Tensor) -> Tensor:
        if layer is None:
            return _logits(model, x)[0, target]
        with tap(net, [layer]) as acts:
            model(x)
        out = acts[layer]
        if not 0 <= unit < out.shape[1]:
            raise UserError(f"unit {unit} is out of range; layer {layer!r} has {out.shape[1]} channels, "
                            f"expected 0..{out.shape[1] - 1}")
        return out[0, unit].float().mean()

    delta = torch.zeros_like(x0, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=lr)
    with torch.enable_grad(), eval_mode(model):
        start = float(objective(x0).detach())
        for _ in range(steps):
            loss = -(objective(x0 + delta) - l2 * delta.pow(2).sum())
            (grad,) = torch.autograd.grad(loss, delta)
            delta.grad = grad
            opt.step()
        with torch.no_grad():
            final = float(objective(x0 + delta))
    return ClassModel((x0 + delta).detach()[0].cpu(), start, final)


def upsample(heat: Tensor, size: tuple[int, int]) -> Tensor:
    """A (h, w) map resized bilinearly to ``size`` (H, W)."""
    if tuple(heat.shape[-2:]) == tuple(size):
        return heat
    return F.interpolate(heat[None, None].float(), size=tuple(size), mode="bilinear", align_corners=False)[0, 0]


def quadrant_masses(heat: Tensor) -> Tensor:
    """Share of a map's positive mass in each quadrant: (top-left, top-right, bottom-left, bottom-right)."""
    h, w = heat.shape
    pos = heat.clamp(min=0)
    q = torch.stack([pos[:h // 2, :w // 2].sum(), pos[:h // 2, w // 2:].sum(),
                     pos[h // 2:, :w // 2].sum(), pos[h // 2:, w // 2:].sum()])
    return q / q.sum().clamp(min=1e-12)


# ---------------------------------------------------------------------------- what to explain


@dataclass
class Subject:
    """A classifier taking [0, 1] pixels, with its class names and how its images are prepared:
    resized to ``input_size`` (H, W), or for ImageNet-style weights, shorter side resized to
    ``resize`` and centre-cropped to ``input_size``."""

    model: nn.Module
    classes: list[str]
    in_channels: int
    input_size: tuple[int, int]
    resize: int | None = None
    name: str = ""

    def load_image(self, path: str | Path) -> tuple[Tensor, str | None]:
        """``(x, note)``: the image as a (1, C, H, W) float tensor in [0, 1], and a note when its
        channels were converted to the model's."""
        from fovea.data.decode import load_image, probe_image

        p = Path(path)
        if not p.is_file():
            raise UserError(f"image {str(p)!r} not found")
        _, colour = probe_image(p)
        note = None
        if colour and self.in_channels == 1:
            note = f"{p.name} is in colour; converted to grayscale (ITU-R 601 luma) for this 1-channel model"
        elif not colour and self.in_channels == 3:
            note = f"{p.name} is grayscale; its channel repeated 3 times for this 3-channel model"
        if self.resize is None:
            img = load_image(p, channels=self.in_channels, size=self.input_size)
            x = img.float().div(255)
        else:
            from torchvision.transforms.v2 import functional as TF

            x = load_image(p, channels=self.in_channels).float().div(255)
            x = TF.center_crop(TF.resize(x, [self.resize], antialias=True), list(self.input_size)).clamp(0, 1)
        return x[None], note


class _Normalized(nn.Module):
    """A registry model behind its weights' normalization: [0, 1] pixels in, logits out."""

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: Tensor):
        return self.net((x - self.mean) / self.std)


def _shape_from_state_dict(sd: dict[str, Tensor]) -> tuple[int, int]:
    """``(num_classes, in_channels)`` read off a state dict: the last weight with >= 2 dims is the
    classifier, the first 4-D weight the first convolution."""
    tensors = [v for k, v in sd.items() if k.endswith("weight")]
    head = [v for v in tensors if v.dim() >= 2]
    first = [v for v in tensors if v.dim() == 4]
    if not head or not first:
        raise UserError("the weights file holds no convolution and classifier weights")
    return int(head[-1].shape[0]), int(first[0].shape[1])


def load_subject(source: str | Path, weights: str | Path | None = None) -> Subject:
    """A run directory (its trained classifier), or a registered model name with ``weights``:
    ``"torchvision"`` (ImageNet weights, categories and transforms from torchvision) or a weights
    file (classes and input channels read off the file; torchvision's categories and transforms
    when the model has a torchvision counterpart and 1000 classes, else class indices and ImageNet
    normalization at the model's published input size)."""
    from fovea.models.registry import create_model, list_models

    text = str(source)
    if Path(text).is_dir():
        from fovea.tasks.classify import load_classifier

        if weights is not None:
            raise UserError(f"--weights is for model names; {text!r} is a run directory, which has its own weights")
        model, info = load_classifier(text)
        return Subject(model, [str(c) for c in info["classes"]], int(info["in_channels"]),
                       tuple(info["image_size"]), None, text)
    names = list_models()
    if text not in names:
        close = difflib.get_close_matches(text, names, n=5, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UserError(f"{text!r} is neither a run directory nor a registered model name{hint}")
    if weights is None:
        raise UserError(f"model {text!r} needs --weights torchvision or --weights FILE (a run directory needs neither)")
    if str(weights) == "torchvision":
        net = create_model(text, weights="torchvision")
    else:
        from fovea.models.weights import load_into, read_weights_file

        sd = read_weights_file(weights)
        num_classes, in_channels = _shape_from_state_dict(sd)
        net = create_model(text, num_classes=num_classes, **({"in_channels": in_channels} if in_channels != 3 else {}))
        try:
            missing = load_into(net, sd)
        except ValueError as e:
            raise UserError(f"weights {str(weights)!r} do not fit model {text!r}: {e}") from None
        if missing:
            raise UserError(f"weights {str(weights)!r} leave {text!r}'s classifier unset ({', '.join(missing[:3])})")
    net.eval()
    in_channels = int(getattr(net, "default_input_size", (3,))[0])
    tv_name, num_classes = getattr(net, "torchvision_name", None), getattr(net, "num_classes", None)
    if tv_name and num_classes == 1000 and in_channels == 3:
        import torchvision

        meta = torchvision.models.get_model_weights(tv_name).DEFAULT
        tf = meta.transforms()
        crop = tf.crop_size[0]
        return Subject(_Normalized(net, tf.mean, tf.std).eval(), list(meta.meta["categories"]), 3, (crop, crop),
                       tf.resize_size[0], text)
    side = int(getattr(net, "canonical_size", 224))
    mean, std = (_IMAGENET_MEAN, _IMAGENET_STD) if in_channels == 3 else ((0.449,) * in_channels, (0.226,) * in_channels)
    classes = [str(i) for i in range(num_classes or 0)]
    return Subject(_Normalized(net, mean, std).eval(), classes, in_channels, (side, side), math.ceil(side * 8 / 7), text)


# ---------------------------------------------------------------------------- one call


@dataclass
class Explanation:
    """What one method produced. ``raw`` is the map as computed (layer or image resolution;
    filters and feature maps as (N, C, h, w) / (C, h, w); the class model as pixels)."""

    method: str
    raw: Tensor
    image: Tensor | None = None  # (C, H, W) in [0, 1]
    layer: str | None = None
    target: int | None = None
    prob: float | None = None
    title: str = ""
    scores: tuple[float, float] | None = None  # class model: objective at the start and the end


def explain(subject: Subject, method: str, x: Tensor | None = None, layer: str | None = None,
            target: int | str | None = None, unit: int | None = None, patch: int | None = None,
            stride: int | None = None, steps: int = 200, lr: float = 0.05, l2: float = 0.1) -> Explanation:
    """Run one method on one image ``x`` (1, C, H, W in [0, 1]; ``None`` is allowed for
    ``filters`` and, with a target, ``classmodel``)."""
    if method not in METHODS:
        raise UserError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    model, classes = subject.model, subject.classes
    if method == "filters":
        name, w = first_layer_filters(model, layer)
        shape = "x".join(map(str, w.shape[1:]))
        return Explanation(method, w, layer=name, title=f"filters of {name} ({w.shape[0]} x {shape})")
    pred = None
    if x is not None:
        with torch.no_grad(), eval_mode(model):
            probs = _logits(model, x).softmax(1)[0]
        pred = int(probs.argmax())
    elif method != "classmodel":
        raise UserError(f"--method {method} needs an IMAGE")
    if method == "classmodel":
        if layer is not None and unit is None:
            raise UserError("classmodel with --layer needs --unit K (the channel to maximize)")
        if layer is not None:
            layer = resolve_layer(map_layers(model, torch.full((1, subject.in_channels, *subject.input_size), GREY)), layer)
            t = None
            what = f"unit {unit} of {layer}"
        else:
            t = resolve_target(target, classes, pred)
            what = f"class {t} {classes[t]!r}"
        cm = class_model(model, t, (subject.in_channels, *subject.input_size), steps, lr, l2, layer, unit)
        return Explanation(method, cm.image, layer=layer, target=t, scores=(cm.start_score, cm.final_score),
                           title=f"class model of {what}: score {cm.start_score:.2f} -> {cm.final_score:.2f}")
    t = resolve_target(target, classes, pred)
    prob = float(probs[t])
    image = x[0].detach().cpu()
    about = f"class {t} {classes[t]!r} (p={prob:.2f})"
    if method in ("featuremaps", "cam", "gradcam"):
        layer = resolve_layer(map_layers(model, x), layer)
    if method == "featuremaps":
        raw = feature_maps(model, x, layer)
        return Explanation(method, raw, image, layer, t, prob, f"feature maps of {layer} ({raw.shape[0]} channels)")
    if method == "cam":
        raw, title = class_activation_map(model, x, t, layer), f"CAM at {layer}, {about}"
    elif method == "gradcam":
        raw, title = grad_cam(model, x, t, layer), f"Grad-CAM at {layer}, {about}"
    elif method == "occlusion":
        raw, title = occlusion_sensitivity(model, x, t, patch, stride), f"occlusion: drop of p, {about}"
    else:
        raw, title = gradient_saliency(model, x, t), f"saliency |dy/dx|, {about}"
    return Explanation(method, raw.detach().cpu(), image, layer, t, prob, title)


# ---------------------------------------------------------------------------- pictures


def _unit_range(t: Tensor) -> Tensor:
    lo, hi = t.min(), t.max()
    return (t - lo) / (hi - lo) if hi > lo else torch.full_like(t, 0.5)


def tile_images(tiles: Tensor | np.ndarray, ncols: int | None = None, scale: int | None = None,
                gap: int = 2) -> tuple[np.ndarray, tuple[int, int]]:
    """``(N, C, h, w)`` tiles (C = 1 or 3, values in [0, 1]) in a white-separated mosaic, each
    magnified by ``scale`` (default: to at least 32 pixels). Returns ``(H x W x 3 uint8, (rows, cols))``."""
    t = torch.as_tensor(tiles).float().clamp(0, 1)
    n, c, h, w = t.shape
    cols = ncols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    s = scale or max(1, math.ceil(32 / max(h, w)))
    t = t.repeat_interleave(s, 2).repeat_interleave(s, 3)
    if c == 1:
        t = t.expand(n, 3, h * s, w * s)
    th, tw = h * s, w * s
    out = np.full((rows * (th + gap) + gap, cols * (tw + gap) + gap, 3), 255, np.uint8)
    pix = (t.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    for i in range(n):
        r, q = divmod(i, cols)
        y, xx = gap + r * (th + gap), gap + q * (tw + gap)
        out[y:y + th, xx:xx + tw] = pix[i]
    return out, (rows, cols)


def save_tiles(tiles: Tensor, path: str | Path, **kwargs) -> tuple[int, int]:
    from PIL import Image

    mosaic, layout = tile_images(tiles, **kwargs)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mosaic).save(path, format="PNG", optimize=True)
    return layout


def _filter_tiles(w: Tensor) -> Tensor:
    """Each filter scaled to its own min..max; filters over other than 1 or 3 input channels are
    shown as their mean over the input channels."""
    if w.shape[1] not in (1, 3):
        w = w.mean(1, keepdim=True)
    return torch.stack([_unit_range(f) for f in w])


def _map_tiles(maps: Tensor, limit: int) -> Tensor:
    """Feature maps coloured with viridis on one scale for the whole layer (a dead channel is dark)."""
    from matplotlib import colormaps

    maps = _unit_range(maps[:limit].float())
    rgb = colormaps["viridis"](maps.numpy())[..., :3]
    return torch.from_numpy(rgb).permute(0, 3, 1, 2).float()


def save_overlay(image: Tensor, heat: Tensor, path: str | Path, title: str = "") -> Path:
    """Two panels: the image, and the map (bilinearly upsampled to the image, scaled to its own
    range) over it in the ``jet`` colormap."""
    from fovea.report.plots import _figure, _save, _text

    img = image.float().clamp(0, 1).permute(1, 2, 0).numpy()
    heat = _unit_range(upsample(heat.float(), image.shape[-2:])).numpy()
    fig = _figure(5.2, 2.5)
    for k in range(2):
        ax = fig.add_subplot(1, 2, k + 1)
        ax.axis("off")
        ax.imshow(img[..., 0] if img.shape[2] == 1 else img, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        if k == 1:
            shown = ax.imshow(heat, cmap="jet", alpha=0.5, vmin=0, vmax=1, interpolation="bilinear")
            fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
    if title:
        fig.suptitle(_text(title), fontsize=8)
    return _save(fig, path)


def _save_class_model(image: Tensor, path: str | Path, title: str) -> Path:
    from fovea.report.plots import _figure, _save, _text

    img = _unit_range(image.float()).permute(1, 2, 0).numpy()
    fig = _figure(3.0, 3.2)
    ax = fig.add_subplot()
    ax.axis("off")
    ax.imshow(img[..., 0] if img.shape[2] == 1 else img, cmap="gray", interpolation="nearest")
    ax.set_title(_text(title), fontsize=7)
    return _save(fig, path)


def save_explanation(e: Explanation, out: str | Path, npy: str | Path | None = None, max_maps: int = 64) -> list[Path]:
    """Write the picture of ``e`` to ``out`` (PNG) and, with ``npy``, its raw map as a .npy file."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if e.method == "filters":
        save_tiles(_filter_tiles(e.raw), out)
    elif e.method == "featuremaps":
        save_tiles(_map_tiles(e.raw, max_maps), out)
    elif e.method == "classmodel":
        _save_class_model(e.raw, out, e.title)
    else:
        save_overlay(e.image, e.raw, out, e.title)
    written = [out]
    if npy is not None:
        npy = Path(npy)
        npy.parent.mkdir(parents=True, exist_ok=True)
        np.save(npy, e.raw.detach().cpu().numpy())
        written.append(npy)
    return written
