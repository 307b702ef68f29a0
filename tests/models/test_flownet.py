"""FlowNet: the correlation layer against a direct loop, output shapes, and a tiny training run."""

import math

import numpy as np
import pytest
import torch

from fovea.errors import UserError
from fovea.losses.flow import epe, multiscale_epe
from fovea.models.flownet import Correlation, build_flownet, correlation, correlation_channels, flownetc, flownets


pytestmark = pytest.mark.usefixtures("one_thread")


def _loop_correlation(f1: np.ndarray, f2: np.ndarray, d: int, k: int, s1: int, s2: int) -> np.ndarray:
    """c(x1, x1 + o2) = 1/(C K^2) sum_{o in [-k,k]^2} <f1(x1 + o), f2(x1 + o2 + o)>, zero outside, written out."""
    b, c, h, w = f1.shape
    r = d // s2
    disps = [(j * s2, i * s2) for j in range(-r, r + 1) for i in range(-r, r + 1)]
    ys, xs = range(0, h, s1), range(0, w, s1)
    out = np.zeros((b, len(disps), len(ys), len(xs)))

    def at(f, n, y, x):
        return f[n, :, y, x] if 0 <= y < h and 0 <= x < w else np.zeros(c)

    for n in range(b):
        for ch, (dy, dx) in enumerate(disps):
            for oy_i, y in enumerate(ys):
                for ox_i, x in enumerate(xs):
                    total = 0.0
                    for py in range(-k, k + 1):
                        for px in range(-k, k + 1):
                            total += at(f1, n, y + py, x + px) @ at(f2, n, y + dy + py, x + dx + px)
                    out[n, ch, oy_i, ox_i] = total / (c * (2 * k + 1) ** 2)
    return out


@pytest.mark.parametrize("k, d, s1, s2", [(0, 3, 1, 1), (0, 4, 1, 2), (0, 5, 2, 2), (1, 2, 1, 1),
                                           (1, 3, 2, 1), (2, 4, 3, 2)])
def test_correlation_equals_a_direct_loop(k, d, s1, s2):
    g = torch.Generator().manual_seed(k * 100 + d * 10 + s1 + s2)
    f1 = torch.randn(2, 3, 7, 9, generator=g, dtype=torch.float64)
    f2 = torch.randn(2, 3, 7, 9, generator=g, dtype=torch.float64)
    out = correlation(f1, f2, d, k, s1, s2)
    ref = _loop_correlation(f1.numpy(), f2.numpy(), d, k, s1, s2)
    assert out.shape == (2, correlation_channels(d, s2), math.ceil(7 / s1), math.ceil(9 / s1))
    assert out.shape[1] == (2 * (d // s2) + 1) ** 2
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-10, atol=1e-12)


def test_correlation_gradient_and_peak_at_the_true_shift():
    f1 = torch.randn(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    f2 = torch.randn(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: correlation(a, b, 2, 1, 2, 2), (f1, f2), fast_mode=True)
    # f2 is f1 moved by (dy, dx) = (2, -4): the matching displacement channel wins inside the image
    a = torch.randn(1, 64, 20, 20, generator=torch.Generator().manual_seed(1))
    b = torch.roll(a, shifts=(2, -4), dims=(2, 3))
    layer = Correlation(max_displacement=4, stride2=2)
    best = layer(a, b)[0, :, 4:16, 4:16].argmax(0)
    r = 2  # displacements -4, -2, 0, 2, 4; (dy, dx) = (2, -4) is row j = 1, column i = -2
    assert best.eq((1 + r) * (2 * r + 1) + (-2 + r)).all()


def test_paper_flownetc_layout():
    with torch.device("meta"):  # the full-width network, without allocating its 39M weights
        net = flownetc()
    assert net.corr.out_channels == 441  # d=20, s2=2: 21 x 21 displacements
    assert net.conv3_1[0].in_channels == 441 + 32  # plus conv_redir
    assert (net.conv1[0].out_channels, net.conv6_1[0].out_channels) == (64, 1024)
    assert net.decoder.predict_flow2.in_channels == 128 + 64 + 2  # conv2, deconv2, upsampled flow3
    with torch.device("meta"):
        s = flownets()
    assert s.conv1[0].in_channels == 6 and s.decoder.predict_flow5.in_channels == 512 + 512 + 2


@pytest.mark.parametrize("variant", ["s", "c"])
@pytest.mark.parametrize("h, w", [(37, 45), (64, 64), (70, 33)])
def test_output_shapes_for_any_input_size(variant, h, w):
    net = build_flownet(variant, width=0.125, max_displacement=4)
    a, b = torch.randn(2, 3, h, w), torch.randn(2, 3, h, w)
    net.train()
    flows = net(a, b)
    assert [tuple(f.shape) for f in flows] == [(2, 2, math.ceil(h / 2 ** lv), math.ceil(w / 2 ** lv))
                                               for lv in range(2, 7)]
    multiscale_epe(flows, torch.randn(2, 2, h, w)).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    net.eval()
    with torch.no_grad():
        out = net(a, b)
        assert out.shape == (2, 2, h, w)
        assert torch.equal(net(torch.cat([a, b], 1)), out)  # the stacked 6-channel input is the same


def test_eval_output_is_flow2_upsampled_and_scaled():
    net = flownets(width=0.125)
    x = torch.randn(1, 6, 128, 64)
    with torch.no_grad():
        flow2 = net.train()(x)[0]
        full = net.eval()(x)
    expected = torch.nn.functional.interpolate(flow2, scale_factor=4, mode="bilinear", align_corners=False) * 4
    torch.testing.assert_close(full, expected)


def test_bad_inputs_are_user_errors():
    net = flownets(width=0.125)
    with pytest.raises(UserError, match=r"\(B, 6, H, W\)"):
        net(torch.randn(1, 3, 32, 32))
    with pytest.raises(UserError, match="same shape"):
        net(torch.randn(1, 3, 32, 32), torch.randn(1, 3, 32, 30))
    with pytest.raises(UserError, match="variant"):
        build_flownet("x")
    with pytest.raises(UserError, match="stride1"):
        flownetc(width=0.125, stride1=2)


def test_tiny_flownets_learns_a_constant_translation():
    torch.manual_seed(0)
    # a smooth random texture, and the same texture moved 3 pixels right and 1 down
    img = torch.nn.functional.avg_pool2d(torch.rand(1, 3, 72, 72), 5, stride=1, padding=2)[..., :64, :64]
    moved = torch.roll(img, shifts=(1, 3), dims=(2, 3))
    frames = torch.cat([img, moved], 1)
    target = torch.tensor([3.0, 1.0]).view(1, 2, 1, 1).expand(1, 2, 64, 64)
    net = flownets(width=0.125)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)

    def eval_epe() -> float:
        with torch.no_grad():
            return epe(net.eval()(frames), target).item()

    before = eval_epe()
    for _ in range(40):
        net.train()
        loss = multiscale_epe(net(frames), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = eval_epe()
    print(f"EPE before {before:.3f}, after {after:.3f}")
    assert after < 0.3 * before and after < 1.0, (before, after)
