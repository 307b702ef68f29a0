"""CNN arithmetic: output sizes, receptive fields, parameter and multiply-add counts.

The closed forms are the tutorial's:

    conv / pool:        o = floor((n + 2p - d(k-1) - 1) / s) + 1
    transposed conv:    o = (n - 1)s - 2p + d(k-1) + output_padding + 1
    receptive field:    r_l = r_{l-1} + d(k-1) j_{l-1},  j_l = j_{l-1} s,
                        start_l = start_{l-1} + (d(k-1)/2 - p) j_{l-1}
    parameters:         (k·k·m/g + 1)·n for an m -> n convolution with g groups and a bias

``trace(model, input_shape)`` measures all of them on a real forward pass: a
``TorchFunctionMode`` follows every tensor through the network, so branches, residual sums
and concatenations are handled (a sum or concatenation covers the union of its inputs'
receptive fields).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from fovea.errors import InputTooSmallError


def _floor_or_ceil(x: float, ceil_mode: bool) -> int:
    return math.ceil(x) if ceil_mode else math.floor(x)


def conv_output_size(n: int, k: int, p: int = 0, s: int = 1, d: int = 1) -> int:
    """Output length of a convolution along one axis: floor((n + 2p - d(k-1) - 1)/s) + 1."""
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def pool_output_size(n: int, k: int, p: int = 0, s: int | None = None, d: int = 1, ceil_mode: bool = False) -> int:
    """Output length of max / average pooling (stride defaults to the kernel size). With
    ``ceil_mode`` the last window may start in the padding but not beyond the input, as in PyTorch."""
    s = k if s is None else s
    o = _floor_or_ceil((n + 2 * p - d * (k - 1) - 1) / s, ceil_mode) + 1
    if ceil_mode and (o - 1) * s >= n + p:
        o -= 1
    return o


def conv_transpose_output_size(n: int, k: int, p: int = 0, s: int = 1, d: int = 1, output_padding: int = 0) -> int:
    """Output length of a transposed convolution: (n-1)s - 2p + d(k-1) + output_padding + 1."""
    return (n - 1) * s - 2 * p + d * (k - 1) + output_padding + 1


def conv_params(k: int | Sequence[int], m: int, n: int, groups: int = 1, bias: bool = True) -> int:
    """Parameters of an m -> n convolution with kernel k (an int for k x k): (k·k·m/g + 1)·n."""
    kk = math.prod(k) if isinstance(k, (tuple, list)) else k * k
    return (kk * m // groups + int(bias)) * n


def conv_macs(out_size: Sequence[int], k: int | Sequence[int], m: int, n: int, groups: int = 1) -> int:
    """Multiply-adds of one convolution for one image: every output value is a dot product of length k·k·m/g."""
    kk = math.prod(k) if isinstance(k, (tuple, list)) else k * k
    return math.prod(out_size) * n * kk * m // groups


def receptive_field(layers: Sequence[tuple[int, int] | tuple[int, int, int]]) -> list[tuple[int, int]]:
    """(receptive field, jump) after each of a stack of (kernel, stride[, dilation]) layers.

    >>> receptive_field([(3, 1), (3, 1)])[-1][0]   # two 3x3 convolutions see 5x5
    5
    """
    r, j, out = 1, 1, []
    for layer in layers:
        k, s, d = (*layer, 1)[:3]
        r, j = r + d * (k - 1) * j, j * s
        out.append((r, j))
    return out


@dataclass
class RF:
    """Receptive field of a tensor's units per spatial axis: size, jump (distance in input
    pixels between neighbouring units) and the centre of the first unit's field."""

    size: tuple[float, ...]
    jump: tuple[float, ...]
    start: tuple[float, ...]

    def through(self, k, s, p, d) -> "RF":
        return RF(tuple(r + di * (ki - 1) * j for r, j, ki, di in zip(self.size, self.jump, k, d)),
                  tuple(j * si for j, si in zip(self.jump, s)),
                  tuple(st + (di * (ki - 1) / 2 - pi) * j for st, j, ki, pi, di in zip(self.start, self.jump, k, p, d)))

    @staticmethod
    def union(rfs: list["RF"]) -> "RF":
        if len(rfs) == 1:
            return rfs[0]
        size, start = [], []
        for ax in range(len(rfs[0].size)):
            lo = min(r.start[ax] - (r.size[ax] - 1) / 2 for r in rfs)
            hi = max(r.start[ax] + (r.size[ax] - 1) / 2 for r in rfs)
            size.append(hi - lo + 1)
            start.append((lo + hi) / 2)
        return RF(tuple(size), rfs[0].jump, tuple(start))


@dataclass
class LayerInfo:
    name: str
    type: str
    output_shape: tuple[int, ...]
    params: int
    macs: int
    rf: int | None  # receptive field along the first spatial axis; None once the map is flattened
    trainable: int = 0  # parameters with requires_grad

    def as_dict(self) -> dict:
        return dict(name=self.name, type=self.type, output_shape=list(self.output_shape), params=self.params,
                    trainable=self.trainable, macs=self.macs, receptive_field=self.rf)


@dataclass
class Trace:
    input_shape: tuple[int, ...]
    layers: list[LayerInfo] = field(default_factory=list)
    total_params: int = 0
    trainable_params: int = 0
    total_macs: int = 0
    output_shape: tuple[int, ...] = ()

    def as_dict(self) -> dict:
        return dict(input_shape=list(self.input_shape), output_shape=list(self.output_shape),
                    total_params=self.total_params, trainable_params=self.trainable_params,
                    total_macs=self.total_macs, layers=[layer.as_dict() for layer in self.layers])


def _t(v, n: int) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


_CONVS = {torch.conv1d: 1, torch.conv2d: 2, torch.conv3d: 3}
_CONVT = {torch.conv_transpose1d: 1, torch.conv_transpose2d: 2, torch.conv_transpose3d: 3}
_POOLS = {F.max_pool1d: 1, F.max_pool2d: 2, F.max_pool3d: 3, F.avg_pool1d: 1, F.avg_pool2d: 2, F.avg_pool3d: 3,
          F.max_pool1d_with_indices: 1, F.max_pool2d_with_indices: 2, F.max_pool3d_with_indices: 3}
for _f in (F.max_pool1d, F.max_pool2d, F.max_pool3d):  # boolean_dispatch wrappers call these
    _POOLS[getattr(_f, "if_false", _f)] = _POOLS[_f]
    _POOLS[getattr(_f, "if_true", _f)] = _POOLS[_f]
_ADAPTIVE = {F.adaptive_avg_pool1d: 1, F.adaptive_avg_pool2d: 2, F.adaptive_avg_pool3d: 3,
             F.adaptive_max_pool1d: 1, F.adaptive_max_pool2d: 2, F.adaptive_max_pool3d: 3}
for _f in (F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d):
    _ADAPTIVE[getattr(_f, "if_false", _f)] = _ADAPTIVE[_f]
    _ADAPTIVE[getattr(_f, "if_true", _f)] = _ADAPTIVE[_f]
_ADAPTIVE[torch.adaptive_avg_pool1d] = 1


def _arg(args, kwargs, i, name, default):
    if len(args) > i:
        return args[i]
    return kwargs.get(name, default)


class _Tracer(TorchFunctionMode):
    """Follows tensors through torch calls: receptive fields, multiply-adds, size checks."""

    def __init__(self):
        super().__init__()
        self.rf: dict[int, RF] = {}
        self.alive: list[torch.Tensor] = []  # keeps traced tensors alive so ids stay unique
        self.macs = 0
        self.stack: list[str] = []

    def _get(self, t) -> RF | None:
        return self.rf.get(id(t)) if isinstance(t, torch.Tensor) else None

    def _set(self, t, rf: RF | None) -> None:
        if isinstance(t, torch.Tensor) and rf is not None:
            self.rf[id(t)] = rf
            self.alive.append(t)

    def _too_small(self, func_name: str, x: torch.Tensor, out_sizes: list[int]) -> None:
        where = self.stack[-1] if self.stack else "(top level)"
        raise InputTooSmallError(
            f"input too small: spatial size {tuple(x.shape[2:])} -> {tuple(out_sizes)} below 1 at layer "
            f"{where!r} ({func_name}); use a larger input")

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        x = args[0] if args else None
        rf_in = self._get(x)
        new_rf, macs = None, 0
        if func in _CONVS or func in _POOLS:
            n = _CONVS.get(func) or _POOLS[func]
            if func in _CONVS:
                w = _arg(args, kwargs, 1, "weight", None)
                k = tuple(w.shape[2:])
                s, d = _t(_arg(args, kwargs, 3, "stride", 1), n), _t(_arg(args, kwargs, 5, "dilation", 1), n)
                pad = _arg(args, kwargs, 4, "padding", 0)
                if pad == "same":  # stride 1 only; PyTorch puts the odd pixel of an even kernel on the right
                    p = tuple(di * (ki - 1) // 2 for ki, di in zip(k, d))
                    outs = list(x.shape[-n:])
                else:
                    p = (0,) * n if pad == "valid" else _t(pad, n)
                    outs = [conv_output_size(sz, ki, pi, si, di) for sz, ki, pi, si, di in zip(x.shape[-n:], k, p, s, d)]
            else:
                k = _t(_arg(args, kwargs, 1, "kernel_size", 1), n)
                s = _arg(args, kwargs, 2, "stride", None)
                s = k if s in (None, [], ()) else _t(s, n)
                p = _t(_arg(args, kwargs, 3, "padding", 0), n)
                is_max = "max" in getattr(func, "__name__", "")
                d = _t(_arg(args, kwargs, 4, "dilation", 1), n) if is_max else (1,) * n
                ceil = bool(_arg(args, kwargs, 5 if is_max else 4, "ceil_mode", False))
                outs = [pool_output_size(sz, ki, pi, si, di, ceil) for sz, ki, pi, si, di in zip(x.shape[-n:], k, p, s, d)]
            if min(outs) < 1:
                self._too_small(getattr(func, "__name__", str(func)), x, outs)
            if rf_in is not None:
                new_rf = rf_in.through(k, s, p, d)
        elif func in _CONVT:
            n = _CONVT[func]
            w = _arg(args, kwargs, 1, "weight", None)
            k = tuple(w.shape[2:])
            s = _t(_arg(args, kwargs, 3, "stride", 1), n)
            if rf_in is not None:
                # each output unit sees ceil(k/s) input units along an axis
                new_rf = RF(tuple(r + (math.ceil(ki / si) - 1) * j for r, j, ki, si in zip(rf_in.size, rf_in.jump, k, s)),
                            tuple(j / si for j, si in zip(rf_in.jump, s)), rf_in.start)
        elif func in _ADAPTIVE:
            n = _ADAPTIVE[func]
            o = _t(_arg(args, kwargs, 1, "output_size", 1), n)
            ins = x.shape[-n:]
            o = tuple(sz if oi is None else oi for oi, sz in zip(o, ins))
            k = tuple(math.ceil(sz / oi) for sz, oi in zip(ins, o))
            s = tuple(max(sz // oi, 1) for sz, oi in zip(ins, o))
            if rf_in is not None:
                new_rf = rf_in.through(k, s, (0,) * n, (1,) * n)
        elif func is F.pad and rf_in is not None:
            pad = _arg(args, kwargs, 1, "pad", ())
            n = len(rf_in.size)
            # F.pad lists (left, right) pairs from the last axis backwards
            lefts = [pad[2 * (n - 1 - ax)] if 2 * (n - 1 - ax) < len(pad) else 0 for ax in range(n)]
            new_rf = RF(rf_in.size, rf_in.jump, tuple(st - lp * j for st, lp, j in zip(rf_in.start, lefts, rf_in.jump)))

        out = func(*args, **kwargs)

        # the traced batch is one image (or clip), so every output value counts, also where a
        # model folds time into the batch (a per-frame CNN)
        if func in _CONVS:  # output values x (k·k·in/groups)
            macs = out.numel() * math.prod(_arg(args, kwargs, 1, "weight", None).shape[1:])
        elif func in _CONVT:  # every input value is spread over k·k·out/groups outputs
            macs = x.numel() * math.prod(_arg(args, kwargs, 1, "weight", None).shape[1:])
        elif func is F.linear or func is torch._C._nn.linear:
            w = _arg(args, kwargs, 1, "weight", None)
            rows = out.numel() // out.shape[-1] if out.dim() > 1 else 1
            macs = rows * w.shape[0] * w.shape[1]
        self.macs += macs

        if new_rf is None and isinstance(out, torch.Tensor) and func not in _CONVS:
            # shape-preserving ops (activations, norms, sums, concatenations) keep the union of
            # the fields of inputs with the same spatial shape
            srcs = [a for a in _tensors(args, kwargs) if id(a) in self.rf and a.dim() == out.dim() and a.dim() > 2
                    and a.shape[2:] == out.shape[2:]]
            if srcs:
                new_rf = RF.union([self.rf[id(a)] for a in srcs])
        if isinstance(out, tuple) and func in _POOLS:  # max_pool with indices
            self._set(out[0], new_rf)
        else:
            self._set(out, new_rf)
        return out


def _tensors(args, kwargs):
    for a in list(args) + list(kwargs.values()):
        if isinstance(a, torch.Tensor):
            yield a
        elif isinstance(a, (list, tuple)):
            yield from (t for t in a if isinstance(t, torch.Tensor))


_TRACING = [0]


def is_tracing() -> bool:
    return _TRACING[0] > 0


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def trace(model: nn.Module, input_shape: Sequence[int], device: str | torch.device = "cpu") -> Trace:
    """Run one image of shape ``input_shape`` (C x H x W, or C x T x H x W) through ``model``
    in eval mode and measure every leaf layer: output shape, parameters, multiply-adds and
    receptive field. Multiply-adds count convolutions (incl. transposed) and fully connected
    layers, one image, no bias additions, as torchvision's published figures do.

    Raises ``InputTooSmallError`` naming the layer where a spatial size drops below 1.
    """
    names = getattr(model, "layer_names", {})
    result = Trace(tuple(input_shape))
    tracer = _Tracer()
    handles = []

    def pre(name):
        def hook(mod, inputs):
            tracer.stack.append(names.get(name, name))
            if not any(True for _ in mod.children()):
                hook.macs0 = tracer.macs
        return hook

    def post(name, pre_hook):
        def hook(mod, inputs, output):
            tracer.stack.pop()
            if any(True for _ in mod.children()):
                return
            out = output[0] if isinstance(output, (tuple, list)) else output
            rf = tracer._get(out)
            result.layers.append(LayerInfo(
                name=names.get(name, name), type=type(mod).__name__,
                output_shape=tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else (),
                params=sum(p.numel() for p in mod.parameters(recurse=False)),
                trainable=sum(p.numel() for p in mod.parameters(recurse=False) if p.requires_grad),
                macs=tracer.macs - pre_hook.macs0,
                rf=int(round(rf.size[0])) if rf is not None and out.dim() > 2 else None))
        return hook

    for name, mod in model.named_modules():
        if not name:
            continue
        ph = pre(name)
        handles.append(mod.register_forward_pre_hook(ph))
        handles.append(mod.register_forward_hook(post(name, ph)))
    was_training = model.training
    model.eval()
    try:
        x = torch.zeros(1, *input_shape, device=device)
        n = x.dim() - 2
        _TRACING[0] += 1
        with tracer:
            tracer._set(x, RF((1.0,) * n, (1.0,) * n, (0.0,) * n))
            out = model(x)
    finally:
        _TRACING[0] -= 1
        for h in handles:
            h.remove()
        model.train(was_training)
    out = out[0] if isinstance(out, (tuple, list)) else out
    result.output_shape = tuple(out.shape[1:])
    result.total_params = count_params(model)
    result.trainable_params = count_params(model, trainable_only=True)
    result.total_macs = tracer.macs
    return result


def smallest_input(model: nn.Module, in_channels: int, limit: int = 1024) -> int:
    """The smallest square input side that ``model`` accepts: doubling from 8 until a trace
    succeeds, then bisecting (traces stay small, so this is cheap even for VGG)."""
    def fits(n: int) -> bool:
        try:
            trace(model, (in_channels, n, n))
            return True
        except InputTooSmallError:
            return False

    lo, hi = 1, 8
    while not fits(hi):
        lo, hi = hi + 1, hi * 2
        if hi > limit:
            raise InputTooSmallError(f"model accepts no square input up to {limit}x{limit}")
    while lo < hi:
        mid = (lo + hi) // 2
        if fits(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo
