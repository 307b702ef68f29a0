"""Finite-difference gradient checks for any layer of ``fovea.scratch``."""

from __future__ import annotations

import numpy as np

from fovea.scratch.layers import Dropout, Layer


def numerical_gradient(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences (f(x + eps e_i) - f(x - eps e_i)) / 2 eps for every entry of x (changed
    in place and restored)."""
    grad = np.zeros_like(x, dtype=float)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        fp = f()
        flat[i] = old - eps
        fm = f()
        flat[i] = old
        gflat[i] = (fp - fm) / (2 * eps)
    return grad


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """||a - b|| / (||a|| + ||b||), 0 when both are 0."""
    den = np.linalg.norm(a) + np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / den) if den > 0 else 0.0


def gradient_check(layer: Layer, x: np.ndarray, train: bool = True, eps: float = 1e-6, seed: int = 0
                   ) -> dict[str, float]:
    """Relative error between the layer's backward pass and central differences, for the input and
    every parameter, on the scalar L = sum(layer(x) * r) with a fixed random r (so dL/dy = r).

    A dropout layer keeps the mask of its first forward pass during the check; a batch norm in
    training mode updates its running statistics at every forward pass of the check. Use float64."""
    x = np.array(x, dtype=np.float64)
    y = layer.forward(x, train)
    if isinstance(layer, Dropout) and train:
        layer.fixed_mask = layer.mask
    r = np.random.default_rng(seed).standard_normal(y.shape)

    def loss() -> float:
        return float((layer.forward(x, train) * r).sum())

    layer.forward(x, train)
    dx = layer.backward(r)
    analytic = {"input": dx, **{k: p.grad.copy() for k, p in layer.params.items()}}
    errors = {"input": relative_error(analytic["input"], numerical_gradient(loss, x, eps))}
    for k, p in layer.params.items():
        errors[k] = relative_error(analytic[k], numerical_gradient(loss, p.value, eps))
    if isinstance(layer, Dropout):
        layer.fixed_mask = None
    return errors


def loss_gradient_check(loss, logits: np.ndarray, labels: np.ndarray, eps: float = 1e-6) -> float:
    """Relative error of a loss's gradient with respect to the scores."""
    logits = np.array(logits, dtype=np.float64)
    loss.forward(logits, labels)
    analytic = loss.backward()
    return relative_error(analytic, numerical_gradient(lambda: loss.forward(logits, labels), logits, eps))
