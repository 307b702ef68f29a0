"""Classification losses with their gradients (the survey, III-H), averaged over the batch."""

from __future__ import annotations

import numpy as np


class SoftmaxCrossEntropy:
    """l_j = -log(e^{f_{y_j}} / sum_k e^{f_k}), averaged over the batch; the gradient with respect to
    the scores is (softmax(f) - onehot(y)) / N."""

    def forward(self, logits: np.ndarray, labels: np.ndarray) -> float:
        z = logits - logits.max(axis=1, keepdims=True)  # shift for stability: softmax is unchanged
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        self._p, self._y = np.exp(logp), np.asarray(labels)
        return float(-logp[np.arange(len(logits)), self._y].mean())

    __call__ = forward

    def backward(self) -> np.ndarray:
        g = self._p.copy()
        g[np.arange(len(g)), self._y] -= 1.0
        return g / len(g)


class MulticlassHinge:
    """The hinge (max-margin) loss of the SVM: l_j = sum_{c != y_j} max(0, f_c - f_{y_j} + delta),
    averaged over the batch. (PyTorch's multi_margin_loss divides each l_j by the number of classes
    as well.)"""

    def __init__(self, margin: float = 1.0):
        self.margin = margin

    def forward(self, logits: np.ndarray, labels: np.ndarray) -> float:
        n = len(logits)
        self._y = np.asarray(labels)
        m = logits - logits[np.arange(n), self._y][:, None] + self.margin
        m[np.arange(n), self._y] = 0.0
        self._active = m > 0
        return float(np.maximum(m, 0.0).sum() / n)

    __call__ = forward

    def backward(self) -> np.ndarray:
        n = len(self._active)
        g = self._active.astype(float)
        g[np.arange(n), self._y] = -g.sum(axis=1)
        return g / n
