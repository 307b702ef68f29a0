"""End-point error and FlowNet's multi-scale loss, against NumPy."""

import numpy as np
import pytest
import torch

from fovea.errors import UserError
from fovea.losses.flow import FLOWNET_WEIGHTS, epe, multiscale_epe, resize_flow


def _np_epe(p, t, m=None):
    d = np.sqrt(((p - t) ** 2).sum(1))
    return d.mean() if m is None else (d * m).sum() / m.sum()


def _np_block_mean(x, f):
    b, c, h, w = x.shape
    return x.reshape(b, c, h // f, f, w // f, f).mean((3, 5))


def test_epe_matches_numpy():
    p, t = torch.randn(3, 2, 5, 6, dtype=torch.float64), torch.randn(3, 2, 5, 6, dtype=torch.float64)
    assert epe(p, t).item() == pytest.approx(_np_epe(p.numpy(), t.numpy()), rel=1e-12)
    assert epe(p[0], t[0]).item() == pytest.approx(_np_epe(p[:1].numpy(), t[:1].numpy()), rel=1e-12)
    # a known value: (3, 4) against (0, 0) is 5 pixels
    assert epe(torch.tensor([[[3.0]], [[4.0]]]), torch.zeros(2, 1, 1)).item() == 5.0


def test_masked_epe_ignores_unknown_pixels_even_nan():
    p, t = torch.randn(2, 2, 4, 4, dtype=torch.float64), torch.randn(2, 2, 4, 4, dtype=torch.float64)
    m = torch.rand(2, 4, 4) > 0.4
    expected = _np_epe(p.numpy(), t.numpy(), m.numpy())
    t_bad = t.clone()
    t_bad[:, 0][~m] = float("nan")
    t_bad[:, 1][~m] = 1e10
    p.requires_grad_(True)
    loss = epe(p, t_bad, m)
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    assert epe(p, t, m.unsqueeze(1).float()).item() == pytest.approx(expected, rel=1e-12)
    loss.backward()
    assert torch.isfinite(p.grad).all() and p.grad[:, 0][~m].eq(0).all()


def test_epe_gradient_at_zero_error_is_finite():
    p = torch.zeros(1, 2, 3, 3, requires_grad=True)
    epe(p, torch.zeros(1, 2, 3, 3)).backward()
    assert torch.isfinite(p.grad).all()


def test_resize_flow_averages_blocks_and_scales_values():
    x = torch.randn(2, 2, 8, 12, dtype=torch.float64)
    small = resize_flow(x, (4, 6))
    np.testing.assert_allclose(small.numpy(), _np_block_mean(x.numpy(), 2) * 0.5, rtol=1e-12)
    const = torch.tensor([4.0, -2.0]).view(1, 2, 1, 1).expand(1, 2, 8, 8)
    out = resize_flow(const, (2, 4))  # u scaled by 4/8, v by 2/8
    assert torch.allclose(out[0, 0], torch.full((2, 4), 2.0)) and torch.allclose(out[0, 1], torch.full((2, 4), -0.5))
    up = resize_flow(const, (16, 32), mode="bilinear")
    assert torch.allclose(up[0, 0], torch.full((16, 32), 16.0)) and torch.allclose(up[0, 1], torch.full((16, 32), -4.0))


def test_multiscale_epe_matches_numpy():
    t = torch.randn(2, 2, 16, 16, dtype=torch.float64) * 3
    preds = [torch.randn(2, 2, 16 // f, 16 // f, dtype=torch.float64) for f in (4, 8, 16)]
    weights = (0.5, 0.25, 2.0)
    expected = sum(w * _np_epe(p.numpy(), _np_block_mean(t.numpy(), f) / f)
                   for p, w, f in zip(preds, weights, (4, 8, 16)))
    assert multiscale_epe(preds, t, weights).item() == pytest.approx(expected, rel=1e-12)
    five = [torch.zeros(1, 2, 16 // 2 ** lv, 16 // 2 ** lv) for lv in range(5)]
    flat = torch.tensor([8.0, 0.0]).view(1, 2, 1, 1).expand(1, 2, 16, 16)
    # level l sees a flow of 8 / 2^l pixels; the paper's weights, finest first
    expected = sum(w * 8 / 2 ** lv for lv, w in enumerate(FLOWNET_WEIGHTS))
    assert multiscale_epe(five, flat).item() == pytest.approx(expected)
    with pytest.raises(UserError, match="weights"):
        multiscale_epe(five[:3], flat)


def test_masked_multiscale_epe_averages_known_pixels_only():
    t = torch.randn(1, 2, 8, 8, dtype=torch.float64)
    m = torch.ones(1, 8, 8, dtype=torch.bool)
    m[0, :4, :4] = False  # the whole top-left 4x4 cell is unknown
    m[0, 4, 4] = False  # one pixel of the bottom-right cell
    t_bad = t.clone()
    t_bad[:, :, ~m[0]] = float("nan")
    pred = torch.randn(1, 2, 2, 2, dtype=torch.float64)
    tn, mn = t.numpy()[0], m.numpy()[0]
    cells, errs = [], []
    for cy in range(2):
        for cx in range(2):
            mm = mn[cy * 4:(cy + 1) * 4, cx * 4:(cx + 1) * 4]
            if not mm.any():
                continue
            tt = tn[:, cy * 4:(cy + 1) * 4, cx * 4:(cx + 1) * 4][:, mm].mean(1) / 4
            errs.append(np.linalg.norm(pred.numpy()[0, :, cy, cx] - tt))
    expected = np.mean(errs)
    assert len(errs) == 3
    assert multiscale_epe([pred], t_bad, (1.0,), mask=m).item() == pytest.approx(expected, rel=1e-12)
