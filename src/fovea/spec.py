"""One-line architecture strings for sequential CNNs.

The tutorial's pattern INPUT -> [[CONV -> RELU]*N -> POOL?]*M -> [FC -> RELU]*K -> FC as one
comma-separated string, e.g. the worked example (64x64x3 input, 5 classes, 24,097 parameters)::

    conv5x5-10,relu,maxpool4,conv3x3-20,relu,conv1x1-40,relu,maxpool4,fc32,relu,fc5

Tokens (options follow a layer after ``/``, in any order):

    conv<K>x<K>-<N>   convolution, N filters of K x K ("same" padding unless told);
    conv<K>-<N>       the same, square. Options: s<S> stride, p<P> padding, valid, same,
                      d<D> dilation, g<G> groups, zeros|reflect|mirror|replicate|circular
                      padding mode, nobias.   e.g. conv3x3-64/s2/valid
    dwconv<K>x<K>     depthwise convolution (one filter per channel); same options
    sepconv<K>x<K>-<N> depthwise-separable convolution (depthwise K x K, then 1x1 to N)
    deconv<K>x<K>-<N> transposed convolution (options s<S>, p<P>)
    maxpool<K> avgpool<K> minpool<K>   pooling, stride K unless /s<S> (maxpool3/s2: overlapping)
    gap               global average pooling (flattens)
    relu tanh sigmoid leaky_relu lrelu prelu gelu identity
    bn lrn            batch norm, local response norm (AlexNet's constants)
    dropout[<P>]      dropout, P = 0.5 by default (dropout0.3)
    flatten           flattening (added before the first fc when missing)
    fc<N>             fully connected layer with N outputs; the last one is the classifier
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from fovea.errors import SpecError
from fovea.models.base import Classifier
from fovea.nn.act import ACT_NAMES, get_act
from fovea.nn.conv import SeparableConv, conv, conv_transpose
from fovea.nn.norm import LocalResponseNorm
from fovea.nn.pool import GlobalAvgPool, pool

_EXPECTED = ("conv<K>x<K>-<N>, dwconv<K>x<K>, sepconv<K>x<K>-<N>, deconv<K>x<K>-<N>, maxpool<K>, avgpool<K>, "
             "minpool<K>, gap, relu, tanh, sigmoid, leaky_relu, prelu, bn, lrn, dropout[<P>], flatten, fc<N>")
_CONV_RE = re.compile(r"^(conv|dwconv|sepconv|deconv)(\d+)(?:x(\d+))?(?:-(\d+))?$")
_POOL_RE = re.compile(r"^(max|avg|min)pool(\d+)$")
_FC_RE = re.compile(r"^fc(\d+)$")
_DROP_RE = re.compile(r"^dropout(0?\.\d+|[01](?:\.\d*)?)?$")
_PAD_MODES = ("zeros", "reflect", "mirror", "replicate", "circular")


@dataclass
class _Token:
    index: int  # 1-based position in the spec
    offset: int  # character offset in the spec string
    text: str


class SpecNet(Classifier):
    """A sequential network built from a spec string: ``features`` (up to the first flatten /
    gap / fc) and ``head`` (the rest; its last Linear is the classifier)."""

    torchvision_name = None

    def __init__(self, spec: str, features: nn.Sequential, head: nn.Sequential, out_channels: int,
                 feature_info: list[dict]):
        super().__init__()
        self.spec = spec
        self.features = features
        self.head = head
        last = head[-1] if len(head) else None
        self.num_classes = last.out_features if isinstance(last, (nn.Linear, nn.LazyLinear)) else 0
        self.out_channels = out_channels
        self.feature_info = feature_info

    @property
    def num_features(self) -> int:
        """Width of the pre-logits vector (0 until a lazy first fc has seen an input)."""
        if not self.num_classes:
            return self.out_channels
        last = self.head[-1]
        return 0 if isinstance(last, nn.LazyLinear) else last.in_features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        layers = list(self.head)
        if pre_logits and self.num_classes:
            layers = layers[:-1]
        for layer in layers:
            x = layer(x)
        return x

    def get_classifier(self) -> nn.Module:
        return self.head[-1] if self.num_classes else nn.Identity()

    def reset_classifier(self, num_classes: int) -> None:
        if not self.num_classes:
            raise ValueError(f"spec {self.spec!r} does not end with a fully connected layer")
        last = self.head[-1]
        name = list(self.head._modules)[-1]
        new = nn.Linear(last.in_features, num_classes) if num_classes else nn.Identity()
        self.head._modules[name] = new
        self.num_classes = num_classes


def _tokens(spec: str) -> list[_Token]:
    out, offset = [], 0
    for i, text in enumerate(spec.split(",")):
        out.append(_Token(i + 1, offset + len(text) - len(text.lstrip()), text.strip()))
        offset += len(text) + 1
    return out


def _fail(spec: str, tok: _Token, why: str) -> SpecError:
    return SpecError(f"spec token {tok.index} {tok.text!r} (at character {tok.offset}) {why}; in {spec!r}")


def _conv_options(spec: str, tok: _Token, opts: list[str]) -> dict:
    kw: dict = {}
    for o in opts:
        m = re.fullmatch(r"([spdg])(\d+)", o)
        if m:
            kw[{"s": "stride", "p": "padding", "d": "dilation", "g": "groups"}[m[1]]] = int(m[2])
        elif o in ("valid", "same"):
            kw["padding"] = o
        elif o in _PAD_MODES:
            kw["padding_mode"] = o
        elif o == "nobias":
            kw["bias"] = False
        else:
            raise _fail(spec, tok, f"has unknown option {o!r}; expected s<S>, p<P>, d<D>, g<G>, valid, same, "
                                   f"nobias or a padding mode ({', '.join(_PAD_MODES)})")
    return kw


def build_spec(spec: str, num_classes: int | None = None, in_channels: int = 3,
               input_size: int | tuple[int, int] | None = None, dim: int = 2) -> SpecNet:
    """Build a ``SpecNet`` from a spec string. ``num_classes`` replaces the width of the last
    fc; ``input_size`` (H, W) fixes the first fc's input width at once (otherwise it is set on
    the first forward pass)."""
    if not spec.strip():
        raise SpecError("empty architecture spec; expected comma-separated layers such as conv3x3-16,relu,fc10")
    toks = _tokens(spec)
    features, head = nn.Sequential(), nn.Sequential()
    ch, reduction, in_head, counts = in_channels, 1, False, {}
    feature_info: list[dict] = []
    fc_idx = [i for i, t in enumerate(toks) if _FC_RE.match(t.text.split("/")[0])]
    width = None  # features entering the next fc once flattened

    def add(kind: str, module: nn.Module) -> None:
        counts[kind] = counts.get(kind, 0) + 1
        (head if in_head else features).add_module(f"{kind}{counts[kind]}", module)

    for i, tok in enumerate(toks):
        if not tok.text:
            raise _fail(spec, tok, "is empty (two commas in a row?)")
        name, *opts = tok.text.split("/")
        lname = name.lower()
        m = _CONV_RE.match(lname)
        if m:
            if in_head:
                raise _fail(spec, tok, "is a convolution after the network was flattened")
            kind, k1, k2, n = m[1], int(m[2]), int(m[3] or m[2]), m[4]
            if kind == "dwconv":
                if n is not None:
                    raise _fail(spec, tok, "takes no filter count (a depthwise convolution keeps the channels)")
                n = ch
            elif n is None:
                raise _fail(spec, tok, f"lacks a filter count; expected {kind}{k1}x{k2}-<N>")
            n = int(n)
            kw = _conv_options(spec, tok, opts)
            stride = kw.get("stride", 1)
            try:
                if kind == "deconv":
                    module = conv_transpose(ch, n, (k1, k2), stride=stride, padding=kw.get("padding", 0)
                                            if isinstance(kw.get("padding", 0), int) else 0)
                    reduction = reduction / stride
                elif kind == "sepconv":
                    module = SeparableConv(ch, n, (k1, k2), **kw)
                else:
                    groups = ch if kind == "dwconv" else kw.pop("groups", 1)
                    kw.pop("groups", None)
                    module = conv(ch, n, (k1, k2), groups=groups, **kw)
            except ValueError as e:
                raise _fail(spec, tok, f"is invalid: {e}") from None
            if kind != "deconv":
                reduction *= stride
            add(kind, module)
            ch = n
            continue
        m = _POOL_RE.match(lname)
        if m:
            k = int(m[2])
            kw = _conv_options(spec, tok, opts)
            extra = set(kw) - {"stride", "padding"}
            if extra or isinstance(kw.get("padding", 0), str):
                raise _fail(spec, tok, "takes only the options s<S> and p<P>")
            s = kw.get("stride", k)
            add("pool", pool(m[1], k, s, kw.get("padding", 0), dim=dim))
            reduction *= s
            feature_info.append(dict(module=f"features.pool{counts['pool']}", num_chs=ch, reduction=reduction))
            continue
        if opts:
            raise _fail(spec, tok, "takes no options")
        m = _FC_RE.match(lname)
        if m:
            if not in_head:
                in_head = True
                add("flatten", nn.Flatten())
            n = int(m[1])
            if i == fc_idx[-1] and num_classes is not None:
                n = num_classes
            add("fc", nn.Linear(width, n) if width is not None else nn.LazyLinear(n))
            width = n
            ch = n
            continue
        if lname == "gap" or lname == "flatten":
            if in_head:
                raise _fail(spec, tok, "comes after the network was already flattened")
            in_head = True
            add(lname, GlobalAvgPool() if lname == "gap" else nn.Flatten())
            if lname == "gap":
                width = ch
            continue
        m = _DROP_RE.match(lname)
        if m:
            p = float(m[1]) if m[1] else 0.5
            if not 0 <= p < 1:
                raise _fail(spec, tok, "has a dropout probability outside [0, 1)")
            add("dropout", nn.Dropout(p))
            continue
        if lname == "bn":
            add("bn", nn.BatchNorm1d(ch) if in_head else nn.BatchNorm2d(ch))
            continue
        if lname == "lrn":
            add("lrn", LocalResponseNorm())
            continue
        if lname in ACT_NAMES:
            add(lname, get_act(lname))
            continue
        raise _fail(spec, tok, f"is not a layer; expected one of {_EXPECTED}")
    if num_classes is not None and not fc_idx:
        raise SpecError(f"spec {spec!r} must end with fc<N> to set num_classes={num_classes}")
    model = SpecNet(spec, features, head, ch, feature_info)
    if input_size is not None:
        hw = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        _materialize(model, (in_channels, *hw))
    return model


def _materialize(model: SpecNet, input_shape: tuple[int, ...]) -> None:
    """Run one dummy forward pass so lazy fc layers learn their input width."""
    if any(isinstance(m, nn.modules.lazy.LazyModuleMixin) for m in model.modules()):
        from fovea.arith import trace

        trace(model, input_shape)  # names the layer if the input is too small
