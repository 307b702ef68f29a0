"""Optimizers exactly as the survey writes them (section III-I), with L2 regularization (III-H).

Notation: W the parameters, grad = dL/dW at W_t, eta the learning rate. Every optimizer updates
``param.value`` in place from ``param.grad``.

* SGD:       W_{t+1} = W_t - eta grad
* Momentum:  W_{t+1} = W_t + a (W_t - W_{t-1}) + (1 - a)(-eta grad),   W_{-1} = W_0
* AdaGrad:   g_{t+1} = g_t + grad^2;  W_{t+1} = W_t - eta grad / (sqrt(g_{t+1}) + eps)
* RMSProp:   g_{t+1} = gamma g_t + (1 - gamma) grad^2;
             W_{t+1} = W_t + a (W_t - W_{t-1}) + (1 - a)(-eta grad / (sqrt(g_{t+1}) + eps))
* Adam:      m_{t+1} = a m_t + (1 - a) grad,  m_hat = m_{t+1} / (1 - a^{t+1})
             g_{t+1} = gamma g_t + (1 - gamma) grad^2,  g_hat = g_{t+1} / (1 - gamma^{t+1})
             W_{t+1} = W_t - eta m_hat / (sqrt(g_hat) + eps)
* L2:        L(W) = data loss + lambda sum W^2, so grad += 2 lambda W (for parameters with
             ``decay``: weights of convolutions and fully connected layers).

Two readings of the survey's typeset formulas: its AdaGrad numerator "eta grad^2" is read as
eta grad (a squared numerator would not have the units of W), and eps is added after the square
root, as PyTorch does.

The same rules in PyTorch's parametrization (float64 trajectories agree; tests/scratch):

* Momentum(lr, a) == torch.optim.SGD(lr, momentum=a, dampening=a) whose momentum buffer starts
  at zero. With buf_t = a buf_{t-1} + (1 - a) grad and W_{t+1} = W_t - lr buf_t, the step
  W_{t+1} - W_t = -lr buf_t = a (W_t - W_{t-1}) + (1 - a)(-lr grad), the survey's rule. PyTorch
  starts the buffer at the first gradient undamped (its first step is -lr grad, the survey's is
  -(1 - a) lr grad, since W_{-1} = W_0), so the reference seeds ``state["momentum_buffer"]`` with
  zeros; from then on the two are the same recursion.
* RMSProp(lr, gamma, a, eps) == torch.optim.RMSprop(lr=(1 - a) lr, alpha=gamma, momentum=a, eps):
  PyTorch's buf = a buf + grad / (sqrt(g) + eps), W -= lr' buf, so its step is
  a (W_t - W_{t-1}) - lr' grad / (sqrt(g) + eps).
* AdaGrad == torch.optim.Adagrad(lr, eps=eps); Adam(lr, a, gamma) == torch.optim.Adam(lr,
  betas=(a, gamma), eps=eps); L2 lambda == weight_decay = 2 lambda on the decayed parameters.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from fovea.scratch.layers import Param


class Optimizer:
    def __init__(self, params: Iterable[Param], lr: float, l2: float = 0.0):
        self.params = list(params)
        if lr <= 0:
            raise ValueError(f"Received lr={lr}, expected a positive learning rate")
        self.lr, self.l2 = lr, l2
        self.t = 0  # steps taken

    def _grad(self, p: Param) -> np.ndarray:
        """dL/dW of the regularized loss: the data gradient plus 2 lambda W for decayed weights."""
        return p.grad + 2.0 * self.l2 * p.value if self.l2 and p.decay else p.grad

    def step(self) -> None:
        for i, p in enumerate(self.params):
            if p.grad is not None:
                self._update(i, p, self._grad(p))
        self.t += 1

    def _update(self, i: int, p: Param, grad: np.ndarray) -> None:
        raise NotImplementedError


class SGD(Optimizer):
    """W_{t+1} = W_t - eta grad."""

    def _update(self, i, p, grad):
        p.value -= self.lr * grad


class Momentum(Optimizer):
    """W_{t+1} = W_t + a (W_t - W_{t-1}) + (1 - a)(-eta grad); the first step has W_{-1} = W_0."""

    def __init__(self, params, lr: float, momentum: float = 0.9, l2: float = 0.0):
        super().__init__(params, lr, l2)
        self.momentum = momentum
        self.delta = [np.zeros_like(p.value) for p in self.params]  # W_t - W_{t-1}

    def _update(self, i, p, grad):
        a = self.momentum
        self.delta[i] = a * self.delta[i] + (1.0 - a) * (-self.lr * grad)
        p.value += self.delta[i]


class AdaGrad(Optimizer):
    """g_{t+1} = g_t + grad^2; W_{t+1} = W_t - eta grad / (sqrt(g_{t+1}) + eps)."""

    def __init__(self, params, lr: float = 0.01, eps: float = 1e-10, l2: float = 0.0):
        super().__init__(params, lr, l2)
        self.eps = eps
        self.g = [np.zeros_like(p.value) for p in self.params]

    def _update(self, i, p, grad):
        self.g[i] += grad ** 2
        p.value -= self.lr * grad / (np.sqrt(self.g[i]) + self.eps)


class RMSProp(Optimizer):
    """g_{t+1} = gamma g_t + (1 - gamma) grad^2;
    W_{t+1} = W_t + a (W_t - W_{t-1}) + (1 - a)(-eta grad / (sqrt(g_{t+1}) + eps))."""

    def __init__(self, params, lr: float = 0.01, gamma: float = 0.99, momentum: float = 0.9, eps: float = 1e-8,
                 l2: float = 0.0):
        super().__init__(params, lr, l2)
        self.gamma, self.momentum, self.eps = gamma, momentum, eps
        self.g = [np.zeros_like(p.value) for p in self.params]
        self.delta = [np.zeros_like(p.value) for p in self.params]

    def _update(self, i, p, grad):
        a = self.momentum
        self.g[i] = self.gamma * self.g[i] + (1.0 - self.gamma) * grad ** 2
        self.delta[i] = a * self.delta[i] + (1.0 - a) * (-self.lr * grad / (np.sqrt(self.g[i]) + self.eps))
        p.value += self.delta[i]


class Adam(Optimizer):
    """First and second moments with decays a and gamma, bias-corrected by 1 - a^{t+1} and
    1 - gamma^{t+1}; W_{t+1} = W_t - eta m_hat / (sqrt(g_hat) + eps)."""

    def __init__(self, params, lr: float = 1e-3, alpha: float = 0.9, gamma: float = 0.999, eps: float = 1e-8,
                 l2: float = 0.0):
        super().__init__(params, lr, l2)
        self.alpha, self.gamma, self.eps = alpha, gamma, eps
        self.m = [np.zeros_like(p.value) for p in self.params]
        self.g = [np.zeros_like(p.value) for p in self.params]

    def _update(self, i, p, grad):
        t = self.t + 1
        self.m[i] = self.alpha * self.m[i] + (1.0 - self.alpha) * grad
        self.g[i] = self.gamma * self.g[i] + (1.0 - self.gamma) * grad ** 2
        m_hat = self.m[i] / (1.0 - self.alpha ** t)
        g_hat = self.g[i] / (1.0 - self.gamma ** t)
        p.value -= self.lr * m_hat / (np.sqrt(g_hat) + self.eps)


OPTIMIZERS = {"sgd": SGD, "momentum": Momentum, "adagrad": AdaGrad, "rmsprop": RMSProp, "adam": Adam}


def l2_penalty(params: Iterable[Param], l2: float) -> float:
    """lambda R(W) = lambda sum W^2 over the decayed parameters (the term the optimizers' l2 adds)."""
    return l2 * float(sum((p.value ** 2).sum() for p in params if p.decay))
