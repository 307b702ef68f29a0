"""Convolution from scratch, in the three forms the lecture derives (NumPy only).

Shapes follow PyTorch: inputs (N, C, H, W), weights (C_out, C_in / groups, kh, kw).

* ``conv2d_direct_*``: the filter slides over the input, one output value at a time (the
  definition: x^l_{ij} = sum_m sum_n w_{mn} o^{l-1}_{i+m, j+n} + b). Its backward pass treats the
  filter at every position as a distinct copy and sums the partial derivatives of all copies of
  a shared weight (lecture, "Backpropagating through Convolutions").
* ``conv2d_im2col_*``: every receptive field becomes a column of a matrix, so the whole layer is
  one matrix product per group (forward: W @ cols; backward: dW = G @ cols^T, dcols = W^T @ G,
  scattered back by ``col2im``).
* ``conv_matrix``: the explicit sparse matrix C with C x = conv(x); its transpose gives the input
  gradient, C^T g, which equals ``input_grad_full_conv``: a full convolution of the (stride-
  dilated) output gradient with the filter flipped horizontally and vertically.

Output size (the formula of ``fovea.arith.conv_output_size``, kept here because fovea.arith
imports torch): o = floor((n + 2p - d(k-1) - 1) / s) + 1.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

IntPair = int | Sequence[int]


def pair(v: IntPair) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        a, b = v
        return int(a), int(b)
    return int(v), int(v)


def conv_output_size(n: int, k: int, p: int = 0, s: int = 1, d: int = 1) -> int:
    """floor((n + 2p - d(k-1) - 1) / s) + 1."""
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def _check(x: np.ndarray, w: np.ndarray, groups: int) -> None:
    if x.ndim != 4:
        raise ValueError(f"conv2d expects an (N, C, H, W) input, received shape {x.shape}")
    if x.shape[1] != w.shape[1] * groups:
        raise ValueError(f"Received groups={groups} and a weight of shape {w.shape}, but the input has "
                         f"{x.shape[1]} channels (expected {w.shape[1] * groups})")
    if w.shape[0] % groups:
        raise ValueError(f"Received groups={groups}, but the {w.shape[0]} output channels are not divisible by it")


def _geometry(shape, kernel, stride, padding, dilation):
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = map(pair, (kernel, stride, padding, dilation))
    h, w = shape[-2:]
    oh, ow = conv_output_size(h, kh, ph, sh, dh), conv_output_size(w, kw, pw, sw, dw)
    if oh < 1 or ow < 1:
        raise ValueError(f"input {h}x{w} is too small for kernel {kh}x{kw} (padding {ph}x{pw}, dilation {dh}x{dw})")
    return (kh, kw), (sh, sw), (ph, pw), (dh, dw), (oh, ow)


def im2col(x: np.ndarray, kernel: IntPair, stride: IntPair = 1, padding: IntPair = 0, dilation: IntPair = 1,
           pad_value: float = 0.0) -> np.ndarray:
    """The receptive fields of ``x`` (N, C, H, W) as an array (C, kh, kw, N, oh, ow): reshaped to
    (C·kh·kw, N·oh·ow), column q is the (flattened) patch that output position q sees."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw), (oh, ow) = _geometry(x.shape, kernel, stride, padding, dilation)
    xt = x.transpose(1, 0, 2, 3)
    if ph or pw:
        xt = np.pad(xt, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=pad_value)
    cols = np.empty((x.shape[1], kh, kw, x.shape[0], oh, ow), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, i, j] = xt[:, :, i * dh:i * dh + sh * (oh - 1) + 1:sh, j * dw:j * dw + sw * (ow - 1) + 1:sw]
    return cols


def col2im(cols: np.ndarray, x_shape: tuple[int, ...], kernel: IntPair, stride: IntPair = 1, padding: IntPair = 0,
           dilation: IntPair = 1) -> np.ndarray:
    """The adjoint of ``im2col``: adds every column back onto the input positions it was read from
    (overlapping receptive fields sum), giving an (N, C, H, W) array."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw), (oh, ow) = _geometry(x_shape, kernel, stride, padding, dilation)
    n, c, h, w = x_shape
    dxp = np.zeros((c, n, h + 2 * ph, w + 2 * pw), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            dxp[:, :, i * dh:i * dh + sh * (oh - 1) + 1:sh, j * dw:j * dw + sw * (ow - 1) + 1:sw] += cols[:, i, j]
    return dxp[:, :, ph:ph + h, pw:pw + w].transpose(1, 0, 2, 3)


# -- im2col + matrix product ------------------------------------------------------------------------------------------

def conv2d_im2col_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, stride: IntPair = 1,
                          padding: IntPair = 0, dilation: IntPair = 1, groups: int = 1):
    """y = W_g @ cols_g for every group g, plus the bias. Returns (y, cache for the backward pass)."""
    _check(x, w, groups)
    cols = im2col(x, w.shape[2:], stride, padding, dilation)
    c, kh, kw, n, oh, ow = cols.shape
    co = w.shape[0]
    y = np.matmul(w.reshape(groups, co // groups, -1), cols.reshape(groups, -1, n * oh * ow))
    y = y.reshape(co, n, oh, ow).transpose(1, 0, 2, 3)
    if b is not None:
        y = y + b.reshape(1, -1, 1, 1)
    return np.ascontiguousarray(y), (x.shape, w, cols, stride, padding, dilation, groups, b is not None)


def conv2d_im2col_backward(g: np.ndarray, cache):
    """dW = G @ cols^T (the sum over every position where a shared weight was used), db = sum of
    G, dx = col2im(W^T @ G). Returns (dx, dw, db)."""
    x_shape, w, cols, stride, padding, dilation, groups, has_bias = cache
    co = w.shape[0]
    n, _, oh, ow = g.shape
    gm = g.transpose(1, 0, 2, 3).reshape(groups, co // groups, n * oh * ow)
    colsm = cols.reshape(groups, -1, n * oh * ow)
    dw = np.matmul(gm, colsm.transpose(0, 2, 1)).reshape(w.shape)
    dcols = np.matmul(w.reshape(groups, co // groups, -1).transpose(0, 2, 1), gm).reshape(cols.shape)
    dx = col2im(dcols, x_shape, w.shape[2:], stride, padding, dilation)
    db = g.sum(axis=(0, 2, 3)) if has_bias else None
    return np.ascontiguousarray(dx), dw, db


# -- direct loops -----------------------------------------------------------------------------------------------------

def conv2d_direct_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, stride: IntPair = 1,
                          padding: IntPair = 0, dilation: IntPair = 1, groups: int = 1):
    """The definition, one output value at a time (loops over image, output channel, row, column):
    y[n, o, r, c] = sum over the group's input channels and the kernel of
    w[o, :, i, j] * x[n, :, r*s + i*d - p, c*s + j*d - p] (+ b[o])."""
    _check(x, w, groups)
    (kh, kw), (sh, sw), (ph, pw), (dh, dw), (oh, ow) = _geometry(x.shape, w.shape[2:], stride, padding, dilation)
    n = x.shape[0]
    co, cig = w.shape[:2]
    cog = co // groups
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    y = np.zeros((n, co, oh, ow), dtype=np.result_type(x, w))
    for ni in range(n):
        for o in range(co):
            xg, wo = xp[ni, o // cog * cig:(o // cog + 1) * cig], w[o]
            for r in range(oh):
                for q in range(ow):
                    patch = xg[:, r * sh:r * sh + dh * (kh - 1) + 1:dh, q * sw:q * sw + dw * (kw - 1) + 1:dw]
                    y[ni, o, r, q] = np.sum(wo * patch)
    if b is not None:
        y += b.reshape(1, -1, 1, 1)
    return y, (x, w, stride, padding, dilation, groups, b is not None)


def conv2d_direct_backward(g: np.ndarray, cache):
    """Per output value, as the lecture writes it: the copy of the filter used there gets
    dL/dw += g[n,o,r,c] * patch (the partial derivatives of all copies of a shared weight are
    summed), and the patch it read gets g[n,o,r,c] * w[o]."""
    x, w, stride, padding, dilation, groups, has_bias = cache
    (kh, kw), (sh, sw), (ph, pw), (dh, dw), (oh, ow) = _geometry(x.shape, w.shape[2:], stride, padding, dilation)
    n = x.shape[0]
    co, cig = w.shape[:2]
    cog = co // groups
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    dxp = np.zeros_like(xp, dtype=np.result_type(x, g))
    dw_ = np.zeros_like(w, dtype=np.result_type(x, g))
    for ni in range(n):
        for o in range(co):
            cs = slice(o // cog * cig, (o // cog + 1) * cig)
            xg, dxg, wo = xp[ni, cs], dxp[ni, cs], w[o]
            for r in range(oh):
                for q in range(ow):
                    rs = slice(r * sh, r * sh + dh * (kh - 1) + 1, dh)
                    qs = slice(q * sw, q * sw + dw * (kw - 1) + 1, dw)
                    go = g[ni, o, r, q]
                    dw_[o] += go * xg[:, rs, qs]
                    dxg[:, rs, qs] += go * wo
    dx = dxp[:, :, ph:ph + x.shape[2], pw:pw + x.shape[3]]
    db = g.sum(axis=(0, 2, 3)) if has_bias else None
    return np.ascontiguousarray(dx), dw_, db


# -- the convolution as a matrix, and the flipped filter ------------------------------------------------------------

def conv_matrix(w: np.ndarray, input_shape: tuple[int, int, int], stride: IntPair = 1, padding: IntPair = 0,
                dilation: IntPair = 1, groups: int = 1) -> np.ndarray:
    """The matrix C (rows: the C_out·oh·ow outputs, columns: the C·H·W inputs) with
    C @ x.ravel() == conv2d(x).ravel() for one image x of shape ``input_shape`` (no bias).

    The lecture's construction: row q holds the filter's values at the input positions that
    output q sees and 0 everywhere else (zero padding contributes nothing), so C is sparse; it is
    returned dense, which is fine for the small inputs it is meant to illustrate."""
    c, h, wd = input_shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw), (oh, ow) = _geometry((h, wd), w.shape[2:], stride, padding, dilation)
    co, cig = w.shape[:2]
    cog = co // groups
    mat = np.zeros((co, oh, ow, c, h, wd), dtype=w.dtype)
    r, q = np.meshgrid(np.arange(oh), np.arange(ow), indexing="ij")
    for o in range(co):
        gi = o // cog
        for ci in range(cig):
            for i in range(kh):
                for j in range(kw):
                    yy, xx = r * sh - ph + i * dh, q * sw - pw + j * dw
                    inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < wd)
                    mat[o, r[inside], q[inside], gi * cig + ci, yy[inside], xx[inside]] += w[o, ci, i, j]
    return mat.reshape(co * oh * ow, c * h * wd)


def input_grad_full_conv(g: np.ndarray, w: np.ndarray, input_hw: tuple[int, int], stride: IntPair = 1,
                         padding: IntPair = 0, dilation: IntPair = 1, groups: int = 1) -> np.ndarray:
    """dL/dx as a *full* convolution of the output gradient with the flipped filter.

    With stride 1 and no padding this is the lecture's statement exactly: pad g by d(k-1) on every
    side and convolve with w rotated by 180 degrees (input and output channels swapped). A stride s
    first spreads g out with s-1 zeros between its entries; padding p crops p from each border of
    the result; rows and columns the last window never reached get zero gradient."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw), (oh, ow) = _geometry(input_hw, w.shape[2:], stride, padding, dilation)
    n, co = g.shape[:2]
    cig = w.shape[1]
    gd = np.zeros((n, co, (oh - 1) * sh + 1, (ow - 1) * sw + 1), dtype=g.dtype)
    gd[:, :, ::sh, ::sw] = g
    # (C_out, C_in/g, kh, kw) -> per group swap in/out -> (C_in, C_out/g, kh, kw), flipped in both axes
    wt = w.reshape(groups, co // groups, cig, kh, kw).transpose(0, 2, 1, 3, 4)
    wt = wt.reshape(groups * cig, co // groups, kh, kw)
    wflip = np.ascontiguousarray(wt[:, :, ::-1, ::-1])
    full, _ = conv2d_im2col_forward(gd, wflip, None, 1, (dh * (kh - 1), dw * (kw - 1)), (dh, dw), groups)
    hp, wp = input_hw[0] + 2 * ph, input_hw[1] + 2 * pw
    full = np.pad(full, ((0, 0), (0, 0), (0, hp - full.shape[2]), (0, wp - full.shape[3])))
    return full[:, :, ph:ph + input_hw[0], pw:pw + input_hw[1]]
