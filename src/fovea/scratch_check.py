"""Checks of ``fovea.scratch`` (NumPy) against PyTorch autograd and finite differences.

For every layer: the same input and parameters in float64 go through the scratch layer and the
PyTorch function it reimplements; the forward outputs are compared, then a random upstream
gradient g is pushed back through both (scratch ``backward(g)`` against ``y.backward(g)``) and the
gradients for the input, the weight and the bias are compared; finally the layer's backward pass
is compared with central finite differences (``fovea.scratch.gradient_check``).

This module imports torch; ``fovea.scratch`` itself never does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from fovea import scratch as S

TOL = 1e-6  # max abs difference with PyTorch, float64
GRAD_TOL = 1e-6  # relative error with finite differences


def _t(a: np.ndarray, grad: bool = False) -> torch.Tensor:
    return torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=grad)


def torch_forward(layer: S.Layer, x: torch.Tensor, p: dict[str, torch.Tensor], train: bool,
                  state: dict[str, torch.Tensor]) -> torch.Tensor:
    """The PyTorch function each scratch layer reimplements (``state``: batch-norm running stats,
    updated in place by PyTorch)."""
    if isinstance(layer, S.Conv2d):
        return F.conv2d(x, p["weight"], p.get("bias"), layer.stride, layer.padding, layer.dilation, layer.groups)
    if isinstance(layer, S.Linear):
        return F.linear(x, p["weight"], p.get("bias"))
    if isinstance(layer, S.Flatten):
        return x.flatten(1)
    if isinstance(layer, S.ReLU):
        return F.relu(x)
    if isinstance(layer, S.LeakyReLU):
        return F.leaky_relu(x, layer.negative_slope)
    if isinstance(layer, S.PReLU):
        return F.prelu(x, p["weight"])
    if isinstance(layer, S.Sigmoid):
        return torch.sigmoid(x)
    if isinstance(layer, S.Tanh):
        return torch.tanh(x)
    if isinstance(layer, S.MaxPool2d):
        return F.max_pool2d(x, layer.kernel, layer.stride, layer.padding)
    if isinstance(layer, S.AvgPool2d):
        return F.avg_pool2d(x, layer.kernel, layer.stride, layer.padding, count_include_pad=True)
    if isinstance(layer, S.GlobalAvgPool2d):
        return F.adaptive_avg_pool2d(x, 1).flatten(1)
    if isinstance(layer, S.Dropout):  # PyTorch draws its own mask: apply the scratch layer's (scaled) one
        return x * _t(layer.mask) if train and layer.mask is not None else x
    if isinstance(layer, S.BatchNorm):
        return F.batch_norm(x, state["running_mean"], state["running_var"], p["weight"], p["bias"], training=train,
                            momentum=layer.momentum, eps=layer.eps)
    if isinstance(layer, S.LocalResponseNorm):
        return F.local_response_norm(x, layer.size, layer.alpha, layer.beta, layer.k)
    raise TypeError(f"no PyTorch reference for {type(layer).__name__}")


@dataclass
class Row:
    """One line of the check table (None: not applicable)."""

    name: str
    forward: float | None
    grad_input: float | None
    grad_weight: float | None
    grad_bias: float | None
    gradcheck: float | None

    @property
    def passed(self) -> bool:
        diffs = [d for d in (self.forward, self.grad_input, self.grad_weight, self.grad_bias) if d is not None]
        return max(diffs) <= TOL and (self.gradcheck is None or self.gradcheck <= GRAD_TOL)

    def as_dict(self) -> dict:
        return dict(layer=self.name, forward=self.forward, grad_input=self.grad_input, grad_weight=self.grad_weight,
                    grad_bias=self.grad_bias, gradcheck=self.gradcheck, passed=self.passed)


def _maxdiff(a, b) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max()) if np.size(a) else 0.0


def compare_layer(name: str, layer: S.Layer, x: np.ndarray, train: bool = True, seed: int = 0,
                  gradcheck: bool = True) -> Row:
    """Forward and backward of ``layer`` on ``x`` against PyTorch, then the finite-difference check."""
    rng = np.random.default_rng(seed + 1)
    state = {}
    if isinstance(layer, S.BatchNorm):
        state = {"running_mean": _t(layer.running_mean), "running_var": _t(layer.running_var)}
    y = layer.forward(x, train)
    g = rng.standard_normal(y.shape)
    dx = layer.backward(g)
    xt = _t(x, grad=True)
    pt = {k: _t(p.value, grad=True) for k, p in layer.params.items()}
    yt = torch_forward(layer, xt, pt, train, state)
    yt.backward(_t(g))
    fwd = _maxdiff(y, yt.detach().numpy())
    for k, v in state.items():  # the running statistics must follow PyTorch's too
        fwd = max(fwd, _maxdiff(getattr(layer, k), v.numpy()))
    grads = {k: _maxdiff(p.grad, pt[k].grad.numpy()) for k, p in layer.params.items()}
    grad_w = grads.pop("weight", None)
    grad_b = grads.pop("bias", None)
    rel = None
    if gradcheck:
        errors = S.gradient_check(layer, x, train=train, seed=seed)
        rel = max(errors.values())
    return Row(name, fwd, _maxdiff(dx, xt.grad.numpy()), grad_w, grad_b, rel)


def compare_loss(name: str, loss, logits: np.ndarray, labels: np.ndarray, gradcheck: bool = True) -> Row:
    """A loss and its gradient with respect to the scores against PyTorch (multi_margin_loss
    divides by the number of classes, so it is multiplied back)."""
    value = loss.forward(logits, labels)
    dx = loss.backward()
    lt, yt = _t(logits, grad=True), torch.tensor(labels)
    if isinstance(loss, S.SoftmaxCrossEntropy):
        ref = F.cross_entropy(lt, yt)
    else:
        ref = F.multi_margin_loss(lt, yt, margin=loss.margin) * logits.shape[1]
    ref.backward()
    rel = S.loss_gradient_check(loss, logits, labels) if gradcheck else None
    return Row(name, abs(value - ref.item()), _maxdiff(dx, lt.grad.numpy()), None, None, rel)


def compare_conv_matrix(w: np.ndarray, x: np.ndarray, stride=1, padding=0, dilation=1, groups=1, seed: int = 0
                        ) -> tuple[Row, Row]:
    """Rows for the sparse matrix C (C x against F.conv2d; C^T g against autograd's input gradient)
    and for the flipped-filter full convolution (against autograd's input gradient)."""
    xt = _t(x, grad=True)
    yt = F.conv2d(xt, _t(w), None, stride, padding, dilation, groups)
    g = np.random.default_rng(seed + 1).standard_normal(yt.shape)
    yt.backward(_t(g))
    ref_dx = xt.grad.numpy()
    c = S.conv_matrix(w, x.shape[1:], stride, padding, dilation, groups)
    cx = np.stack([c @ xi.ravel() for xi in x]).reshape(yt.shape)
    ctg = np.stack([c.T @ gi.ravel() for gi in g]).reshape(x.shape)
    flip = S.input_grad_full_conv(g, w, x.shape[2:], stride, padding, dilation, groups)
    return (Row("conv as matrix: C x, C^T g", _maxdiff(cx, yt.detach().numpy()), _maxdiff(ctg, ref_dx), None, None,
                None),
            Row("input grad = full conv, flipped filter", None, _maxdiff(flip, ref_dx), None, None, None))


def default_cases(seed: int = 0) -> list[tuple[str, Callable[[], S.Layer], tuple[int, ...], bool]]:
    """(name, layer factory, input shape, train) for the table of ``fovea scratch check``."""
    return [
        ("conv2d im2col k3 s2 p1 d1 g2", lambda: S.Conv2d(4, 6, 3, 2, 1, 1, 2, seed=seed), (2, 4, 7, 7), True),
        ("conv2d im2col k3 s1 p2 d2 g1", lambda: S.Conv2d(3, 4, 3, 1, 2, 2, 1, seed=seed), (2, 3, 6, 6), True),
        ("conv2d direct k3 s2 p1 d1 g2", lambda: S.Conv2d(4, 6, 3, 2, 1, 1, 2, method="direct", seed=seed),
         (2, 4, 7, 7), True),
        ("conv2d direct k2x3 s1 p0 d2 g1", lambda: S.Conv2d(3, 4, (2, 3), 1, 0, 2, 1, method="direct", seed=seed),
         (2, 3, 6, 7), True),
        ("linear", lambda: S.Linear(12, 7, seed=seed), (5, 12), True),
        ("flatten", S.Flatten, (2, 3, 4, 4), True),
        ("relu", S.ReLU, (2, 3, 5, 5), True),
        ("leaky relu 0.01", S.LeakyReLU, (2, 3, 5, 5), True),
        ("prelu per channel", lambda: S.PReLU(3, 0.2), (2, 3, 5, 5), True),
        ("prelu shared", lambda: S.PReLU(1, 0.2), (4, 6), True),
        ("sigmoid", S.Sigmoid, (2, 3, 5, 5), True),
        ("tanh", S.Tanh, (2, 3, 5, 5), True),
        ("max pool 2x2 s2", lambda: S.MaxPool2d(2), (2, 3, 6, 6), True),
        ("max pool 3x3 s2 p1", lambda: S.MaxPool2d(3, 2, 1), (2, 3, 7, 7), True),
        ("avg pool 2x2 s2", lambda: S.AvgPool2d(2), (2, 3, 6, 6), True),
        ("avg pool 3x3 s2 p1", lambda: S.AvgPool2d(3, 2, 1), (2, 3, 7, 7), True),
        ("global avg pool", S.GlobalAvgPool2d, (2, 3, 5, 5), True),
        ("dropout p=0.5 (mask shared)", lambda: S.Dropout(0.5, seed=seed), (2, 3, 5, 5), True),
        ("batch norm 2d train", lambda: S.BatchNorm(3), (4, 3, 4, 4), True),
        ("batch norm 2d eval", lambda: _trained_bn(3, (4, 3, 4, 4), seed), (4, 3, 4, 4), False),
        ("batch norm 1d train", lambda: S.BatchNorm(5), (6, 5), True),
        ("lrn n=5 (AlexNet k=2)", lambda: S.LocalResponseNorm(5, 1e-2, 0.75, 2.0), (2, 7, 4, 4), True),
        ("lrn n=4 (even window)", lambda: S.LocalResponseNorm(4, 0.1, 0.75, 1.0), (2, 6, 3, 3), True),
    ]


def _trained_bn(c: int, shape, seed: int) -> S.BatchNorm:
    """A batch norm with non-trivial running statistics and affine parameters, for eval checks."""
    rng = np.random.default_rng(seed + 7)
    bn = S.BatchNorm(c)
    for _ in range(3):
        bn.forward(rng.standard_normal(shape) * 2 + 1, train=True)
    bn.params["weight"].value = rng.standard_normal(c)
    bn.params["bias"].value = rng.standard_normal(c)
    return bn


def _randomize_params(layer: S.Layer, rng: np.random.Generator) -> None:
    """Non-zero biases and non-unit scales, so that their gradients are tested with real values."""
    for k, p in layer.params.items():
        if k == "bias" or (isinstance(layer, S.BatchNorm) and k == "weight"):
            p.value = rng.standard_normal(p.value.shape)


def run_checks(seed: int = 0) -> list[Row]:
    """Every row of the table of ``fovea scratch check``."""
    rng = np.random.default_rng(seed)
    rows = []
    for name, make, shape, train in default_cases(seed):
        layer = make()
        if not isinstance(layer, S.BatchNorm) or train:
            _randomize_params(layer, rng)
        rows.append(compare_layer(name, layer, rng.standard_normal(shape), train=train, seed=seed))
    w, x = rng.standard_normal((4, 2, 3, 3)), rng.standard_normal((2, 4, 6, 6))
    rows.extend(compare_conv_matrix(w, x, stride=2, padding=1, dilation=1, groups=2, seed=seed))
    logits, labels = rng.standard_normal((6, 5)), rng.integers(0, 5, 6)
    rows.append(compare_loss("softmax cross-entropy", S.SoftmaxCrossEntropy(), logits, labels))
    rows.append(compare_loss("multiclass hinge (margin 1)", S.MulticlassHinge(1.0), logits, labels))
    return rows


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.1e}"


def format_table(rows: list[Row]) -> str:
    """The markdown table printed by ``fovea scratch check``."""
    head = ("| layer | forward vs torch | d input vs torch | d weight vs torch | d bias vs torch | "
            "grad-check rel. error | pass |")
    lines = [head, "|" + "---|" * 7]
    for r in rows:
        lines.append(f"| {r.name} | {_fmt(r.forward)} | {_fmt(r.grad_input)} | {_fmt(r.grad_weight)} | "
                     f"{_fmt(r.grad_bias)} | {_fmt(r.gradcheck)} | {'yes' if r.passed else 'NO'} |")
    return "\n".join(lines)
