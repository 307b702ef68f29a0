"""Classical optical-flow baselines, measured beside FlowNet on the same pairs.

- zero flow: no motion anywhere; its end-point error is the average length of the true flow.
- Farneback (2003), "Two-Frame Motion Estimation Based on Polynomial Expansion": each
  neighbourhood approximated by a quadratic polynomial, the displacement solved from how the
  polynomials change, coarse to fine (``cv2.calcOpticalFlowFarneback``).
- DIS (Kroeger et al. 2016), "Fast Optical Flow using Dense Inverse Search": patch alignment
  by inverse compositional search, densified and variationally refined
  (``cv2.DISOpticalFlow_create``), where the OpenCV build has it.

Each takes two frames (C, H, W) (uint8, or float in [0, 1]; colour is converted to grey with
OpenCV's BT.601 weights) and returns the flow from frame 1 to frame 2 as a float32 (2, H, W)
tensor (u to the right, v downwards, in pixels), the convention of :mod:`fovea.data.flo`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from fovea.errors import UserError

__all__ = ["FARNEBACK_PARAMS", "available_baselines", "baseline_epes", "dis", "farneback", "zero_flow"]

# OpenCV's documented example settings (samples/python/opt_flow.py)
FARNEBACK_PARAMS = dict(pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2, flags=0)


def _grey(frame: torch.Tensor | np.ndarray) -> np.ndarray:
    import cv2

    arr = frame.detach().cpu().numpy() if isinstance(frame, torch.Tensor) else np.asarray(frame)
    if arr.ndim != 3 or arr.shape[0] not in (1, 3):
        raise UserError(f"Received a frame of shape {tuple(arr.shape)}, expected (C, H, W) with C = 1 or 3.")
    if arr.dtype != np.uint8:
        arr = np.clip(np.rint(arr.astype(np.float64) * 255), 0, 255).astype(np.uint8)
    hwc = np.ascontiguousarray(arr.transpose(1, 2, 0))
    return hwc[..., 0] if hwc.shape[2] == 1 else cv2.cvtColor(hwc, cv2.COLOR_RGB2GRAY)


def _pair(frame1, frame2) -> tuple[np.ndarray, np.ndarray]:
    g1, g2 = _grey(frame1), _grey(frame2)
    if g1.shape != g2.shape:
        raise UserError(f"Received frames of {g1.shape[0]}x{g1.shape[1]} and {g2.shape[0]}x{g2.shape[1]}, "
                        "expected two frames of the same size.")
    return g1, g2


def _as_flow(hw2: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(hw2.transpose(2, 0, 1), dtype=np.float32))


def zero_flow(frame1, frame2) -> torch.Tensor:
    """No motion: a (2, H, W) field of zeros."""
    g1, _ = _pair(frame1, frame2)
    return torch.zeros(2, *g1.shape)


def farneback(frame1, frame2, **params) -> torch.Tensor:
    """Farneback's dense flow; ``params`` override :data:`FARNEBACK_PARAMS`."""
    import cv2

    g1, g2 = _pair(frame1, frame2)
    p = {**FARNEBACK_PARAMS, **params}
    return _as_flow(cv2.calcOpticalFlowFarneback(g1, g2, None, p["pyr_scale"], p["levels"], p["winsize"],
                                                 p["iterations"], p["poly_n"], p["poly_sigma"], p["flags"]))


def dis(frame1, frame2, preset: str = "medium") -> torch.Tensor:
    """DIS optical flow with an OpenCV preset (ultrafast, fast or medium)."""
    import cv2

    if not hasattr(cv2, "DISOpticalFlow_create"):
        raise UserError("this OpenCV build has no DISOpticalFlow; use zero flow or Farneback")
    presets = dict(ultrafast=cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, fast=cv2.DISOPTICAL_FLOW_PRESET_FAST,
                   medium=cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    if preset not in presets:
        raise UserError(f"Received preset={preset!r}, expected one of {', '.join(presets)}.")
    g1, g2 = _pair(frame1, frame2)
    return _as_flow(cv2.DISOpticalFlow_create(presets[preset]).calc(g1, g2, None))


def available_baselines() -> dict[str, Callable]:
    """Name -> function of the baselines this installation can run."""
    import cv2

    out: dict[str, Callable] = dict(zero=zero_flow, farneback=farneback)
    if hasattr(cv2, "DISOpticalFlow_create"):
        out["dis"] = dis
    return out


def baseline_epes(images: torch.Tensor, flows: torch.Tensor) -> dict[str, float]:
    """Average end-point error (mean over pairs of each pair's mean over its known pixels) of
    every available baseline on frame pairs (N, 6, H, W) against flows (N, 2, H, W)."""
    from fovea.tasks.flow import known_flow, pair_epe

    known = known_flow(flows)
    out = {}
    for name, fn in available_baselines().items():
        pred = torch.stack([fn(p[:3], p[3:]) for p in images])
        out[name] = float(pair_epe(pred, flows.float(), known).mean())
    return out
