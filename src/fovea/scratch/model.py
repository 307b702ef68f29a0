"""A small Sequential model, the plain training loop, and LeNet-5 (NumPy only)."""

from __future__ import annotations

import time
from typing import Callable, Iterable

import numpy as np

from fovea.scratch.layers import (AvgPool2d, Conv2d, Flatten, Layer, Linear, MaxPool2d, Param, ReLU, Sigmoid, Tanh)


class Sequential(Layer):
    """Layers applied in order; backward runs them in reverse (the chain rule)."""

    def __init__(self, *layers: Layer):
        super().__init__()
        self.layers = list(layers)

    def __repr__(self) -> str:
        return "Sequential(\n" + "\n".join(f"  ({i}) {layer!r}" for i, layer in enumerate(self.layers)) + "\n)"

    def forward(self, x, train=True):
        for layer in self.layers:
            x = layer.forward(x, train)
        return x

    def backward(self, g):
        for layer in reversed(self.layers):
            g = layer.backward(g)
        return g

    def parameters(self) -> list[Param]:
        return [p for layer in self.layers for p in (layer.parameters() if isinstance(layer, Sequential)
                                                     else layer.params.values())]

    def named_parameters(self) -> list[tuple[str, Param]]:
        """("index.name", parameter) pairs, in the order of ``parameters()``."""
        return [(f"{i}.{k}", p) for i, layer in enumerate(self.layers)
                for k, p in (layer.named_parameters() if isinstance(layer, Sequential) else layer.params.items())]


def lenet5(num_classes: int = 10, in_channels: int = 1, act: str = "relu", pool: str = "max", seed: int = 0,
           method: str = "im2col") -> Sequential:
    """LeNet-5 (LeCun et al. 1998) for 32x32 inputs: conv5x5-6, pool2, conv5x5-16, pool2, conv5x5-120
    (1x1 output, i.e. fully connected to the 16x5x5 maps), fc84, fc num_classes.

    The original used scaled tanh and trainable average subsampling, and a sparse C3 connection
    table; here C3 is fully connected and ``act`` ("relu", "tanh", "sigmoid") and ``pool``
    ("max", "avg") are chosen by the caller."""
    acts = {"relu": ReLU, "tanh": Tanh, "sigmoid": Sigmoid}
    pools = {"max": MaxPool2d, "avg": AvgPool2d}
    if act not in acts or pool not in pools:
        raise ValueError(f"Received act={act!r}, pool={pool!r}; "
                         f"expected act in {sorted(acts)}, pool in {sorted(pools)}")
    gain = 2.0 if act == "relu" else 1.0
    A, P = acts[act], pools[pool]
    return Sequential(
        Conv2d(in_channels, 6, 5, gain=gain, seed=seed, method=method), A(), P(2),
        Conv2d(6, 16, 5, gain=gain, seed=seed + 1, method=method), A(), P(2),
        Conv2d(16, 120, 5, gain=gain, seed=seed + 2, method=method), A(), Flatten(),
        Linear(120, 84, gain=gain, seed=seed + 3), A(),
        Linear(84, num_classes, gain=1.0, seed=seed + 4),
    )


def batches(n: int, batch_size: int, rng: np.random.Generator | None) -> Iterable[np.ndarray]:
    """Indices of mini-batches; shuffled when ``rng`` is given."""
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for i in range(0, n, batch_size):
        yield order[i:i + batch_size]


def predict(model: Sequential, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Scores for every row of x, in evaluation mode."""
    return np.concatenate([model.forward(x[idx], train=False) for idx in batches(len(x), batch_size, None)])


def accuracy(model: Sequential, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> float:
    return float((predict(model, x, batch_size).argmax(1) == y).mean())


def fit(model: Sequential, loss, optimizer, x: np.ndarray, y: np.ndarray, epochs: int, batch_size: int = 32,
        seed: int = 0, x_test: np.ndarray | None = None, y_test: np.ndarray | None = None,
        schedule: Callable[[int], float] | None = None, augment: Callable | None = None,
        log: Callable[[str], None] | None = None) -> list[dict]:
    """The tutorial's loop: for each mini-batch, query the model, compute the loss and its gradient,
    backpropagate, step the optimizer. ``schedule(epoch)`` multiplies the base learning rate;
    ``augment(x_batch, rng)`` returns an augmented copy of a training batch.
    Returns one record per epoch (mean training loss, training and test accuracy, seconds)."""
    rng = np.random.default_rng(seed)
    base_lr, history = optimizer.lr, []
    for epoch in range(epochs):
        optimizer.lr = base_lr * (schedule(epoch) if schedule else 1.0)
        t0, total, correct = time.perf_counter(), 0.0, 0
        for idx in batches(len(x), batch_size, rng):
            xb = augment(x[idx], rng) if augment else x[idx]
            scores = model.forward(xb, train=True)
            total += loss.forward(scores, y[idx]) * len(idx)
            correct += int((scores.argmax(1) == y[idx]).sum())
            model.backward(loss.backward())
            optimizer.step()
        rec = dict(epoch=epoch + 1, loss=total / len(x), train_acc=correct / len(x),
                   seconds=time.perf_counter() - t0)
        if x_test is not None:
            rec["test_acc"] = accuracy(model, x_test, y_test)
        history.append(rec)
        if log:
            log(" ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in rec.items()))
    optimizer.lr = base_lr
    return history
