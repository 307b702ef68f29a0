"""Optical flow as colour: the Middlebury colour coding (Baker et al. 2011, "A Database and
Evaluation Methodology for Optical Flow", Fig. 2 and their ``flowToColor`` / ``computeColor``).

The direction of a flow vector (u, v) is the hue and its length the saturation. The hues come
from a wheel of 55 colours laid out for roughly equal perceptual steps: red to yellow in 15,
yellow to green in 6, green to cyan in 4, cyan to blue in 11, blue to magenta in 13 and magenta
back to red in 6. With image axes (u to the right, v downwards) a flow pointing right is red,
down is orange-yellow, left is cyan and up is blue-violet; going round clockwise on the screen
(angle atan2(v, u) increasing) walks the wheel from red through yellow, green, cyan, blue and
magenta.

Zero flow is white; the saturation grows linearly with the length up to ``max_flow``, where the
colour is the wheel's own. Longer vectors keep the fully saturated colour at 0.75 brightness,
as in the reference code, so flow beyond the scale stays visible as such. With
``max_flow=None`` the scale is the longest known vector of the field (each field of a batch
on its own). Unknown flow (NaN, or beyond 1e9 in magnitude, the Middlebury marker) is black.
"""

from __future__ import annotations

import numpy as np
import torch

from fovea.report.plots import ReportError

__all__ = ["COLORWHEEL_SEGMENTS", "color_wheel", "flow_legend", "flow_to_color"]

# (name, number of colours) in order round the wheel, from the Middlebury reference code.
COLORWHEEL_SEGMENTS = (("RY", 15), ("YG", 6), ("GC", 4), ("CB", 11), ("BM", 13), ("MR", 6))
_UNKNOWN_FLOW = 1e9
_OUT_OF_RANGE_BRIGHTNESS = 0.75


def color_wheel() -> np.ndarray:
    """The Middlebury colour wheel: (55, 3) float64 RGB values in 0..255, red first."""
    rows = []
    for name, n in COLORWHEEL_SEGMENTS:
        ramp = np.floor(255 * np.arange(n) / n)
        seg = np.zeros((n, 3))
        # Each segment holds one channel at 255 and ramps another up (or down) towards the next colour.
        full, moving, up = {"RY": (0, 1, True), "YG": (1, 0, False), "GC": (1, 2, True),
                            "CB": (2, 1, False), "BM": (2, 0, True), "MR": (0, 2, False)}[name]
        seg[:, full] = 255
        seg[:, moving] = ramp if up else 255 - ramp
        rows.append(seg)
    return np.concatenate(rows)


def _compute_color(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Colours of normalized flow (unit length = full saturation): (..., 3) uint8."""
    wheel = color_wheel() / 255
    ncols = len(wheel)
    rad = np.sqrt(u * u + v * v)
    a = np.arctan2(-v, -u) / np.pi  # -1..1, -1 (and 1) pointing right
    fk = (a + 1) / 2 * (ncols - 1)
    k0 = np.floor(fk).astype(np.int64)
    k1 = np.where(k0 + 1 == ncols, 0, k0 + 1)
    f = (fk - k0)[..., None]
    col = (1 - f) * wheel[k0] + f * wheel[k1]
    inside = (rad <= 1)[..., None]
    col = np.where(inside, 1 - rad[..., None] * (1 - col), col * _OUT_OF_RANGE_BRIGHTNESS)
    return np.floor(255 * col).astype(np.uint8)


def flow_to_color(flow: torch.Tensor | np.ndarray, max_flow: float | None = None) -> torch.Tensor:
    """Colour-code a flow field (2, H, W) or a batch (B, 2, H, W) as uint8 RGB (3, H, W) or (B, 3, H, W).

    ``max_flow`` is the length (in pixels) shown fully saturated; None uses the longest known
    vector of each field. See the module docstring for the colour convention.
    """
    arr = flow.detach().cpu().double().numpy() if isinstance(flow, torch.Tensor) else np.asarray(flow, np.float64)
    if arr.ndim not in (3, 4) or arr.shape[-3] != 2:
        raise ReportError(f"Received a flow of shape {tuple(arr.shape)}, expected (2, H, W) or (B, 2, H, W).")
    if max_flow is not None and not (np.isfinite(max_flow) and max_flow > 0):
        raise ReportError(f"Received max_flow={max_flow!r}, expected a positive number or None.")
    batch = arr if arr.ndim == 4 else arr[None]
    out = np.empty((batch.shape[0], batch.shape[2], batch.shape[3], 3), np.uint8)
    for i, (u, v) in enumerate(batch):
        unknown = ~np.isfinite(u) | ~np.isfinite(v) | (np.abs(u) > _UNKNOWN_FLOW) | (np.abs(v) > _UNKNOWN_FLOW)
        u = np.where(unknown, 0.0, u)
        v = np.where(unknown, 0.0, v)
        scale = max_flow
        if scale is None:
            scale = float(np.sqrt(u * u + v * v).max(initial=0.0))
        scale = scale if scale > 0 else 1.0  # an all-zero field is white at any scale
        out[i] = _compute_color(u / scale, v / scale)
        out[i][unknown] = 0
    rgb = torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()
    return rgb if arr.ndim == 4 else rgb[0]


def flow_legend(size: int = 151, background: int = 255) -> torch.Tensor:
    """The colour key: a (3, size, size) uint8 image of the disc of flows of length up to 1 around
    its centre (right = +u, down = +v), on a ``background`` grey level outside the disc."""
    if size < 3:
        raise ReportError(f"Received size={size}, expected at least 3 pixels.")
    c = (size - 1) / 2
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    u, v = (xs - c) / c, (ys - c) / c
    img = _compute_color(u, v)
    img[u * u + v * v > 1] = background
    return torch.from_numpy(img).permute(2, 0, 1).contiguous()
