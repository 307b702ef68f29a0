"""scikit-learn's handwritten digits (1,797 8x8 images, shipped with the package, offline) as
LeNet-5 inputs: each image is resized to 28x28 by bilinear interpolation and zero-padded to 32x32,
the way LeNet-5 saw 28x28 MNIST digits in a 32x32 field."""

from __future__ import annotations

import numpy as np


def bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """R (n_out x n_in) with R @ v the bilinear (align_corners=False) resampling of v."""
    pos = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    pos = np.clip(pos, 0, n_in - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = pos - lo
    r = np.zeros((n_out, n_in))
    r[np.arange(n_out), lo] += 1 - frac
    r[np.arange(n_out), hi] += frac
    return r


def load_digits32(test_fraction: float = 0.25, seed: int = 0):
    """(x_train, y_train, x_test, y_test): float64 images (N, 1, 32, 32) in [0, 1] and int labels.
    The split is stratified by class with ``seed`` (sklearn's train_test_split): 1,347 training and
    450 test images at the default 25%."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    r = bilinear_matrix(8, 28)
    img = np.einsum("ij,njk,lk->nil", r, d.images / 16.0, r)
    img = np.pad(img, ((0, 0), (2, 2), (2, 2)))[:, None]
    xtr, xte, ytr, yte = train_test_split(img, d.target, test_size=test_fraction, stratify=d.target,
                                          random_state=seed)
    return xtr, ytr, xte, yte


def random_shift(x: np.ndarray, rng: np.random.Generator, max_shift: int = 2) -> np.ndarray:
    """Each image moved by up to ``max_shift`` pixels in each direction (the 2-pixel zero border of
    the 32x32 field is what moves in, so no part of a digit wraps around)."""
    out = np.empty_like(x)
    shifts = rng.integers(-max_shift, max_shift + 1, size=(len(x), 2))
    for i, (dy, dx) in enumerate(shifts):
        out[i] = np.roll(x[i], (dy, dx), axis=(-2, -1))
    return out
