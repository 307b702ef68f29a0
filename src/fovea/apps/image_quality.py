"""Full-reference image quality for restoration (super-resolution, denoising) and the classic
denoising baselines.

- PSNR = 10 log10(R^2 / MSE), R the data range (1 for images in [0, 1], 255 for 8-bit values).
- SSIM (Wang, Bovik, Sheikh & Simoncelli 2004) with the paper's 11x11 Gaussian window of
  sigma 1.5, K1 = 0.01, K2 = 0.03 and population (not sample) statistics, averaged over the
  positions where the window fits inside the image.

Both are computed per image over all its channels and pixels, then averaged over the batch
(``reduction="mean"``) or returned per image (``reduction="none"``). ``border`` shaves that many
pixels off each side first: super-resolution papers (SRCNN and after) shave ``scale`` pixels,
whose values depend on how the image border was padded.

The baselines smooth each channel of each image with a Gaussian (``scipy.ndimage.gaussian_filter``)
or a median filter (``scipy.ndimage.median_filter``), mirroring the image at its borders.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from fovea.errors import UserError

__all__ = ["REDUCTIONS", "gaussian_filter_baseline", "median_filter_baseline", "psnr", "ssim"]

REDUCTIONS = ("mean", "none")
_SSIM_WINDOW = 11  # 2 * round(3.5 * sigma) + 1 for sigma 1.5, as torchmetrics and skimage size it


def _as_batch(x, name: str) -> Tensor:
    """(N, C, H, W) float view of an (N, C, H, W), (C, H, W) or (H, W) tensor or array."""
    t = torch.as_tensor(x)
    if t.dim() not in (2, 3, 4):
        raise UserError(f"Received {name} of shape {tuple(t.shape)}; expected (N, C, H, W), (C, H, W) or (H, W).")
    t = t if t.is_floating_point() else t.double()
    return t.reshape((1,) * (4 - t.dim()) + tuple(t.shape))


def _prepare(a, b, data_range: float, border: int, reduction: str, min_side: int = 1) -> tuple[Tensor, Tensor]:
    x, y = _as_batch(a, "a"), _as_batch(b, "b")
    if x.shape != y.shape:
        raise UserError(f"Received images of shapes {tuple(x.shape)} and {tuple(y.shape)}; expected the same shape.")
    if not isinstance(border, int) or isinstance(border, bool) or border < 0:
        raise UserError(f"Received border={border!r}; expected an integer >= 0 (pixels shaved off each side).")
    if not (isinstance(data_range, (int, float)) and data_range > 0):
        raise UserError(f"Received data_range={data_range!r}; expected a number > 0 (1.0 for [0, 1], 255 for uint8).")
    if reduction not in REDUCTIONS:
        raise UserError(f"Received reduction={reduction!r}; expected one of {', '.join(REDUCTIONS)}.")
    h, w = x.shape[-2:]
    if min(h, w) - 2 * border < min_side:
        raise UserError(f"Received images of size {h}x{w} with border={border}; the cropped image must be at least "
                        f"{min_side}x{min_side}.")
    if border:
        x, y = x[..., border:h - border, border:w - border], y[..., border:h - border, border:w - border]
    dtype = torch.promote_types(x.dtype, y.dtype)
    return x.to(dtype), y.to(dtype)


def psnr(a, b, data_range: float = 1.0, border: int = 0, reduction: str = "mean") -> Tensor:
    """Peak signal-to-noise ratio in dB, 10 log10(data_range^2 / MSE), of each image pair (MSE
    over channels and pixels, after shaving ``border`` pixels), averaged over the batch or per
    image; wraps ``torchmetrics.functional.image.peak_signal_noise_ratio``. Identical images
    give +inf."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    x, y = _prepare(a, b, data_range, border, reduction)
    # torchmetrics converts to base 10 with a float32 constant: about 1e-7 relative error in float64
    values = peak_signal_noise_ratio(x, y, data_range=float(data_range), reduction="none", dim=(1, 2, 3))
    return values.mean() if reduction == "mean" else values


def ssim(a, b, data_range: float = 1.0, border: int = 0, reduction: str = "mean") -> Tensor:
    """Structural similarity of each image pair (Wang et al. 2004: 11x11 Gaussian window,
    sigma 1.5, K1 = 0.01, K2 = 0.03), averaged over the valid window positions and channels after
    shaving ``border`` pixels, then over the batch or per image; wraps
    ``torchmetrics.functional.image.structural_similarity_index_measure``. Matches
    ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False)``. Images need at least 11 pixels a side after the crop."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    x, y = _prepare(a, b, data_range, border, reduction, min_side=_SSIM_WINDOW)
    _, ssim_map = structural_similarity_index_measure(x, y, gaussian_kernel=True, sigma=1.5, kernel_size=_SSIM_WINDOW,
                                                      data_range=float(data_range), k1=0.01, k2=0.03,
                                                      reduction="none", return_full_image=True)
    # torchmetrics reflect-pads the images and keeps every position; the paper (and skimage)
    # average only where the whole window lies inside the image
    r = _SSIM_WINDOW // 2
    values = ssim_map[..., r:ssim_map.shape[-2] - r, r:ssim_map.shape[-1] - r].mean(dim=(1, 2, 3))
    return values.mean() if reduction == "mean" else values


def _filter_spatially(noisy, name: str, apply) -> Tensor | np.ndarray:
    """Run ``apply(array, axes)`` over the last two axes of an (..., H, W) tensor or array and
    return the same kind, dtype and device."""
    as_tensor = isinstance(noisy, Tensor)
    arr = noisy.detach().cpu().numpy() if as_tensor else np.asarray(noisy)
    if arr.ndim < 2 or not np.issubdtype(arr.dtype, np.floating):
        raise UserError(f"Received {name} input of shape {arr.shape} and dtype {arr.dtype}; expected a float "
                        f"image (..., H, W).")
    out = apply(arr, arr.ndim).astype(arr.dtype, copy=False)
    return torch.from_numpy(out).to(noisy.device) if as_tensor else out


def gaussian_filter_baseline(noisy, sigma: float):
    """Denoise by Gaussian smoothing of standard deviation ``sigma`` pixels over H and W
    (``scipy.ndimage.gaussian_filter``, truncated at 4 sigma, mirrored borders); channels and
    images are filtered separately. Takes and returns an (..., H, W) tensor or array."""
    from scipy import ndimage

    if not (isinstance(sigma, (int, float)) and not isinstance(sigma, bool) and sigma > 0):
        raise UserError(f"Received sigma={sigma!r}; expected a standard deviation > 0 in pixels.")
    return _filter_spatially(noisy, "gaussian_filter_baseline",
                             lambda a, n: ndimage.gaussian_filter(a, sigma=(0,) * (n - 2) + (sigma, sigma),
                                                                  mode="reflect"))


def median_filter_baseline(noisy, size: int):
    """Denoise with a ``size`` x ``size`` median filter over H and W (``scipy.ndimage.median_filter``,
    mirrored borders); channels and images are filtered separately. Takes and returns an
    (..., H, W) tensor or array."""
    from scipy import ndimage

    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise UserError(f"Received size={size!r}; expected an integer window side >= 1 (e.g. 3 or 5).")
    return _filter_spatially(noisy, "median_filter_baseline",
                             lambda a, n: ndimage.median_filter(a, size=(1,) * (n - 2) + (size, size),
                                                                mode="reflect"))
