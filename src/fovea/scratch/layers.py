"""Layers with a hand-written forward and backward pass (NumPy only).

Every layer keeps what its backward pass needs from the last ``forward`` call; ``backward(g)``
takes dL/d(output) and returns dL/d(input), writing dL/d(parameter) into ``param.grad`` (the
gradient of the last call, not accumulated). Parameters are ``Param`` objects; optimizers update
``param.value`` in place, so a layer always sees its current weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fovea.scratch import conv as C


@dataclass(eq=False)
class Param:
    """A learnable array and its gradient. ``decay``: whether L2 regularization applies (weights
    of convolutions and fully connected layers; not biases, PReLU slopes or batch-norm scales)."""

    value: np.ndarray
    grad: np.ndarray | None = None
    decay: bool = False


class Layer:
    """Base: no parameters. ``forward(x, train)``; ``backward(g) -> dx``."""

    def __init__(self):
        self.params: dict[str, Param] = {}

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        raise NotImplementedError

    def backward(self, g: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        return self.forward(x, train)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"

    def extra_repr(self) -> str:
        return ""


def _he_normal(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int, gain: float) -> np.ndarray:
    """N(0, sqrt(gain / n_l)): the survey's initialization (III-J) with gain 2 for rectifiers
    (He et al.); gain 1 is LeCun's, for tanh."""
    return rng.normal(0.0, np.sqrt(gain / fan_in), size=shape)


class Conv2d(Layer):
    """2-d convolution with stride, padding, dilation and groups; ``method`` "im2col" (matrix
    product) or "direct" (one output value at a time), see ``fovea.scratch.conv``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, method: str = "im2col", gain: float = 2.0, seed: int = 0):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"Received groups={groups}, but in_channels={in_channels} and "
                             f"out_channels={out_channels} must both be divisible by it")
        if method not in ("im2col", "direct"):
            raise ValueError(f"Received method={method!r}, expected 'im2col' or 'direct'")
        kh, kw = C.pair(kernel_size)
        self.stride, self.padding, self.dilation = C.pair(stride), C.pair(padding), C.pair(dilation)
        self.groups = groups
        self.method = method
        rng = np.random.default_rng(seed)
        fan_in = in_channels // groups * kh * kw
        self.params["weight"] = Param(_he_normal(rng, (out_channels, in_channels // groups, kh, kw), fan_in, gain),
                                      decay=True)
        if bias:
            self.params["bias"] = Param(np.zeros(out_channels))

    def extra_repr(self) -> str:
        o, i, kh, kw = self.params["weight"].value.shape
        return (f"{i * self.groups}, {o}, kernel=({kh}, {kw}), stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, groups={self.groups}, method={self.method!r}")

    def forward(self, x, train=True):
        b = self.params["bias"].value if "bias" in self.params else None
        fwd = C.conv2d_im2col_forward if self.method == "im2col" else C.conv2d_direct_forward
        y, self._cache = fwd(x, self.params["weight"].value, b, self.stride, self.padding, self.dilation, self.groups)
        return y

    def backward(self, g):
        bwd = C.conv2d_im2col_backward if self.method == "im2col" else C.conv2d_direct_backward
        dx, dw, db = bwd(g, self._cache)
        self.params["weight"].grad = dw
        if "bias" in self.params:
            self.params["bias"].grad = db
        return dx


class Linear(Layer):
    """Fully connected: y = x W^T + b, W of shape (out, in) as in PyTorch."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, gain: float = 2.0, seed: int = 0):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.params["weight"] = Param(_he_normal(rng, (out_features, in_features), in_features, gain), decay=True)
        if bias:
            self.params["bias"] = Param(np.zeros(out_features))

    def extra_repr(self) -> str:
        o, i = self.params["weight"].value.shape
        return f"{i}, {o}"

    def forward(self, x, train=True):
        self._x = x
        y = x @ self.params["weight"].value.T
        return y + self.params["bias"].value if "bias" in self.params else y

    def backward(self, g):
        self.params["weight"].grad = g.T @ self._x
        if "bias" in self.params:
            self.params["bias"].grad = g.sum(0)
        return g @ self.params["weight"].value


class Flatten(Layer):
    """(N, C, H, W) -> (N, C·H·W)."""

    def forward(self, x, train=True):
        self._shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, g):
        return g.reshape(self._shape)


# -- activations ------------------------------------------------------------------------------------------------------

class ReLU(Layer):
    """max(0, x); passes the gradient only where the input was positive."""

    def forward(self, x, train=True):
        self._mask = x > 0
        return np.where(self._mask, x, 0.0)

    def backward(self, g):
        return np.where(self._mask, g, 0.0)


class LeakyReLU(Layer):
    """x for x > 0, a·x otherwise, with a fixed a (0.01: the survey's Leaky ReLU)."""

    def __init__(self, negative_slope: float = 0.01):
        super().__init__()
        self.negative_slope = negative_slope

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"

    def forward(self, x, train=True):
        self._mask = x > 0
        return np.where(self._mask, x, self.negative_slope * x)

    def backward(self, g):
        return np.where(self._mask, g, self.negative_slope * g)


class PReLU(Layer):
    """Leaky ReLU whose slope a is learned (He et al. 2015): one per channel, or one shared."""

    def __init__(self, num_parameters: int = 1, init: float = 0.25):
        super().__init__()
        self.params["weight"] = Param(np.full(num_parameters, init))

    def _a(self, x):
        a = self.params["weight"].value
        return a.reshape((1, -1) + (1,) * (x.ndim - 2)) if a.size > 1 else a.reshape(())

    def forward(self, x, train=True):
        self._x = x
        return np.where(x > 0, x, self._a(x) * x)

    def backward(self, g):
        x = self._x
        da = np.where(x > 0, 0.0, g * x)
        axes = tuple(i for i in range(x.ndim) if i != 1) if self.params["weight"].value.size > 1 else None
        self.params["weight"].grad = np.atleast_1d(da.sum(axis=axes))
        return np.where(x > 0, g, self._a(x) * g)


class Sigmoid(Layer):
    """1 / (1 + e^-x); dy/dx = y(1 - y)."""

    def forward(self, x, train=True):
        self._y = 0.5 * (1.0 + np.tanh(0.5 * x))  # the same function, without overflow for large |x|
        return self._y

    def backward(self, g):
        return g * self._y * (1.0 - self._y)


class Tanh(Layer):
    """tanh(x); dy/dx = 1 - y^2."""

    def forward(self, x, train=True):
        self._y = np.tanh(x)
        return self._y

    def backward(self, g):
        return g * (1.0 - self._y ** 2)


# -- pooling ----------------------------------------------------------------------------------------------------------

class _Pool2d(Layer):
    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel = C.pair(kernel_size)
        self.stride = C.pair(stride) if stride is not None else self.kernel
        self.padding = C.pair(padding)

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}, stride={self.stride}, padding={self.padding}"

    def _windows(self, x, pad_value):
        n, c, h, w = x.shape
        cols = C.im2col(x.reshape(n * c, 1, h, w), self.kernel, self.stride, self.padding, 1, pad_value)
        kh, kw = self.kernel
        return cols.reshape(kh * kw, n, c, *cols.shape[-2:])

    def _scatter(self, dcols, x_shape):
        n, c, h, w = x_shape
        kh, kw = self.kernel
        dcols = dcols.reshape(1, kh, kw, n * c, *dcols.shape[-2:])
        return C.col2im(dcols, (n * c, 1, h, w), self.kernel, self.stride, self.padding).reshape(x_shape)


class MaxPool2d(_Pool2d):
    """The maximum of every window (padding counts as -inf). Backward routes the gradient to the
    winning unit only (the first maximum in row-major window order on ties, as PyTorch does)."""

    def forward(self, x, train=True):
        win = self._windows(x, -np.inf)
        self._arg = win.argmax(axis=0)
        self._shape = x.shape
        return np.take_along_axis(win, self._arg[None], axis=0)[0]

    def backward(self, g):
        dcols = np.zeros((self.kernel[0] * self.kernel[1],) + g.shape, dtype=g.dtype)
        np.put_along_axis(dcols, self._arg[None], g[None], axis=0)
        return self._scatter(dcols, self._shape)


class AvgPool2d(_Pool2d):
    """The mean of every window, zero padding included in the count (PyTorch's default
    count_include_pad=True). Backward gives every unit of the window g / (kh·kw)."""

    def forward(self, x, train=True):
        self._shape = x.shape
        return self._windows(x, 0.0).mean(axis=0)

    def backward(self, g):
        k = self.kernel[0] * self.kernel[1]
        return self._scatter(np.broadcast_to(g / k, (k,) + g.shape), self._shape)


class GlobalAvgPool2d(Layer):
    """(N, C, H, W) -> (N, C): the mean of each feature map."""

    def forward(self, x, train=True):
        self._shape = x.shape
        return x.mean(axis=(2, 3))

    def backward(self, g):
        n, c, h, w = self._shape
        return np.broadcast_to(g[:, :, None, None] / (h * w), self._shape).copy()


# -- regularization and normalization ----------------------------------------------------------------------------------

class Dropout(Layer):
    """Inverted dropout: in training each unit is kept with probability 1 - p and scaled by
    1/(1 - p), so evaluation is the identity. ``mask`` holds the last scaled mask; set
    ``fixed_mask`` to reuse one (gradient checks)."""

    def __init__(self, p: float = 0.5, seed: int = 0):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Received p={p}, expected 0 <= p < 1")
        self.p = p
        self.rng = np.random.default_rng(seed)
        self.fixed_mask: np.ndarray | None = None

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def forward(self, x, train=True):
        if not train or self.p == 0.0:
            self.mask = None
            return x
        if self.fixed_mask is not None:
            self.mask = self.fixed_mask
        else:
            self.mask = (self.rng.random(x.shape) >= self.p) / (1.0 - self.p)
        return x * self.mask

    def backward(self, g):
        return g if self.mask is None else g * self.mask


class BatchNorm(Layer):
    """Batch normalization (Ioffe & Szegedy 2015) over (N, C) or (N, C, H, W) inputs.

    Training: normalize with the batch mean and biased variance, y = gamma x_hat + beta, and update
    the running statistics as PyTorch does (running = (1 - m) running + m batch, the variance
    unbiased). Evaluation: normalize with the running statistics (an affine map)."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.params["weight"] = Param(np.ones(num_features))
        self.params["bias"] = Param(np.zeros(num_features))
        self.running_mean = np.zeros(num_features)
        self.running_var = np.ones(num_features)

    def extra_repr(self) -> str:
        return f"{self.running_mean.size}, eps={self.eps}, momentum={self.momentum}"

    def forward(self, x, train=True):
        axes = (0,) if x.ndim == 2 else (0, 2, 3)
        shape = (1, -1) + (1,) * (x.ndim - 2)
        if train:
            mean, var = x.mean(axis=axes), x.var(axis=axes)
            m = x.size // x.shape[1]
            self.running_mean = (1 - self.momentum) * self.running_mean + self.momentum * mean
            self.running_var = (1 - self.momentum) * self.running_var + self.momentum * var * m / max(m - 1, 1)
        else:
            mean, var = self.running_mean, self.running_var
        self._train, self._axes, self._shape = train, axes, shape
        self._inv_std = 1.0 / np.sqrt(var + self.eps)
        self._xhat = (x - mean.reshape(shape)) * self._inv_std.reshape(shape)
        return self.params["weight"].value.reshape(shape) * self._xhat + self.params["bias"].value.reshape(shape)

    def backward(self, g):
        axes, shape, xhat = self._axes, self._shape, self._xhat
        self.params["weight"].grad = (g * xhat).sum(axis=axes)
        self.params["bias"].grad = g.sum(axis=axes)
        dxhat = g * self.params["weight"].value.reshape(shape)
        inv_std = self._inv_std.reshape(shape)
        if not self._train:
            return dxhat * inv_std
        # x_hat depends on x through the batch mean and variance too
        return inv_std * (dxhat - dxhat.mean(axis=axes, keepdims=True)
                          - xhat * (dxhat * xhat).mean(axis=axes, keepdims=True))


class LocalResponseNorm(Layer):
    """Local response normalization across channels (AlexNet; the survey, III-E), in PyTorch's form:
    b_c = a_c / (k + alpha/n · sum_{c' in W(c)} a_{c'}^2)^beta, W(c) = [c - n//2, c + (n-1)//2]."""

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0):
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def extra_repr(self) -> str:
        return f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"

    @staticmethod
    def _window_sum(a, before, after):
        """sum_{c'=c-before}^{c+after} a[:, c'] (zero outside the channels), by a cumulative sum."""
        pad = [(0, 0)] * a.ndim
        pad[1] = (before + 1, after)
        cs = np.cumsum(np.pad(a, pad), axis=1)
        n = before + after + 1
        return cs[:, n:] - cs[:, :-n]

    def forward(self, x, train=True):
        s = self._window_sum(x * x, self.size // 2, (self.size - 1) // 2)
        self._x, self._d = x, self.k + self.alpha / self.size * s
        return x * self._d ** -self.beta

    def backward(self, g):
        x, d = self._x, self._d
        h = g * x * (-self.beta) * d ** (-self.beta - 1.0) * (self.alpha / self.size)
        # x_j appears in the window of every c with j in W(c): c in [j - (n-1)//2, j + n//2]
        t = self._window_sum(h, (self.size - 1) // 2, self.size // 2)
        return g * d ** -self.beta + 2.0 * x * t
