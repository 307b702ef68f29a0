"""The Middlebury flow colour coding, checked against a per-pixel port of the reference code."""

import colorsys
import math

import numpy as np
import pytest
import torch

from fovea.errors import UserError
from fovea.report.flowviz import color_wheel, flow_legend, flow_to_color


def _reference_wheel() -> list[tuple[float, float, float]]:
    """makeColorwheel of the Middlebury flow-code, written out segment by segment."""
    RY, YG, GC, CB, BM, MR = 15, 6, 4, 11, 13, 6
    rows = [(255, math.floor(255 * i / RY), 0) for i in range(RY)]
    rows += [(255 - math.floor(255 * i / YG), 255, 0) for i in range(YG)]
    rows += [(0, 255, math.floor(255 * i / GC)) for i in range(GC)]
    rows += [(0, 255 - math.floor(255 * i / CB), 255) for i in range(CB)]
    rows += [(math.floor(255 * i / BM), 0, 255) for i in range(BM)]
    rows += [(255, 0, 255 - math.floor(255 * i / MR)) for i in range(MR)]
    return rows


def _reference_pixel(u: float, v: float) -> tuple[int, int, int]:
    """computeColor for one already-normalized vector."""
    wheel = _reference_wheel()
    ncols = len(wheel)
    rad = math.sqrt(u * u + v * v)
    a = math.atan2(-v, -u) / math.pi
    fk = (a + 1) / 2 * (ncols - 1)
    k0 = int(math.floor(fk))
    k1 = 0 if k0 + 1 == ncols else k0 + 1
    f = fk - k0
    out = []
    for ch in range(3):
        col = (1 - f) * wheel[k0][ch] / 255 + f * wheel[k1][ch] / 255
        col = 1 - rad * (1 - col) if rad <= 1 else col * 0.75
        out.append(int(math.floor(255 * col)))
    return tuple(out)


def _one(u: float, v: float, max_flow: float | None = 1.0) -> tuple[int, ...]:
    return tuple(flow_to_color(torch.tensor([[[u]], [[v]]]), max_flow=max_flow)[:, 0, 0].tolist())


def test_wheel_has_the_55_middlebury_colours():
    wheel = color_wheel()
    assert wheel.shape == (55, 3)
    np.testing.assert_array_equal(wheel, np.array(_reference_wheel(), dtype=float))
    # segment starts: red, yellow, green, cyan, blue, magenta
    for idx, rgb in zip((0, 15, 21, 25, 36, 49), [(255, 0, 0), (255, 255, 0), (0, 255, 0), (0, 255, 255),
                                                  (0, 0, 255), (255, 0, 255)]):
        assert tuple(wheel[idx]) == rgb


def test_matches_the_reference_on_random_vectors():
    g = torch.Generator().manual_seed(3)
    flow = torch.randn(2, 6, 9, generator=g, dtype=torch.float64) * 0.8  # some beyond radius 1
    rgb = flow_to_color(flow, max_flow=1.0)
    assert rgb.dtype == torch.uint8 and rgb.shape == (3, 6, 9)
    ref = torch.tensor([[_reference_pixel(float(flow[0, y, x]), float(flow[1, y, x])) for x in range(9)]
                        for y in range(6)]).permute(2, 0, 1)
    diff = (rgb.int() - ref).abs()
    # floor(255 * col) may land one level apart where col is within rounding of a level (e.g. 0.99999...)
    assert diff.max() <= 1 and (diff == 0).float().mean() > 0.9


def test_right_is_red_and_zero_is_white():
    assert _one(1.0, 0.0) == (255, 0, 0)
    assert _one(0.5, 0.0) == (255, 127, 127)  # half length: half saturation
    assert _one(0.0, 0.0) == (255, 255, 255)
    assert flow_to_color(torch.zeros(2, 3, 3)).eq(255).all()  # an all-zero field, auto scale
    r, g, b = _one(-1.0, 0.0)  # left is cyan-blue
    assert r == 0 and g > 150 and b == 255


def test_hue_goes_round_with_angle():
    angles = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    hues = []
    for t in angles:
        r, g, b = _one(float(np.cos(t)), float(np.sin(t)))
        hues.append(colorsys.rgb_to_hsv(r / 255, g / 255, b / 255)[0] * 360)
    steps = (np.diff(hues + hues[:1]) + 180) % 360 - 180  # signed hue change between neighbours
    assert (steps > 0).all()  # always the same way round...
    assert steps.sum() == pytest.approx(360, abs=1e-6)  # ...exactly once
    assert 20 < hues[18] < 60  # pointing down (+v): orange-yellow


def test_saturates_beyond_max_flow_and_scales_by_the_longest_vector():
    assert _one(2.0, 0.0) == (191, 0, 0)  # beyond the max radius: full colour at 0.75 brightness
    assert _one(5.0, 0.0, max_flow=10.0) == _one(0.5, 0.0)
    field = torch.tensor([[[0.0, 1.5, 3.0]], [[0.0, 0.0, 0.0]]])
    rgb = flow_to_color(field)  # max_flow=None: the longest vector is fully saturated
    assert rgb[:, 0, 2].tolist() == [255, 0, 0] and rgb[:, 0, 1].tolist() == [255, 127, 127]


def test_unknown_flow_is_black_and_batches_work():
    field = torch.ones(2, 2, 2)
    field[0, 0, 0] = float("nan")
    field[1, 1, 1] = 1e10
    rgb = flow_to_color(torch.stack([field, -field]))
    assert rgb.shape == (2, 3, 2, 2)
    assert rgb[0, :, 0, 0].tolist() == [0, 0, 0] and rgb[0, :, 1, 1].tolist() == [0, 0, 0]
    assert torch.equal(rgb[0, :, 0, 1], flow_to_color(field)[:, 0, 1])


@pytest.mark.parametrize("bad", [dict(flow=torch.zeros(3, 4, 4)), dict(flow=torch.zeros(2, 4)),
                                 dict(flow=torch.zeros(2, 4, 4), max_flow=0.0)])
def test_bad_input_is_a_user_error(bad):
    with pytest.raises(UserError):
        flow_to_color(**bad)


def test_legend():
    img = flow_legend(101)
    assert img.shape == (3, 101, 101) and img.dtype == torch.uint8
    assert img[:, 50, 50].tolist() == [255, 255, 255]  # centre: no motion
    assert img[:, 50, 100].tolist() == [255, 0, 0]  # right edge: full red
    assert img[:, 50, 0].tolist() == list(_reference_pixel(-1.0, 0.0))
    assert img[:, 0, 0].tolist() == [255, 255, 255]  # corner: background outside the disc
