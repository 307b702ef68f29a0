"""The disparity network: any input size, non-negative bounded output, its three inputs, and the
correlation layer against a direct loop."""

import pytest
import torch

from fovea.errors import UserError
from fovea.models.depthnet import DisparityNet, DisparityNetConfig, horizontal_correlation

TINY = dict(widths=(4, 6, 8, 8), scales=3)


@pytest.mark.parametrize("inp", ["left", "stack", "corr"])
@pytest.mark.parametrize("size", [(17, 23), (8, 8), (31, 45)])
def test_output_is_non_negative_bounded_and_of_the_input_size(inp, size):
    model = DisparityNet(DisparityNetConfig(input=inp, max_disp=12.0, **TINY)).eval()
    x = torch.rand(2, 3 * model.views, *size)
    with torch.no_grad():
        d = model(x)
    assert d.shape == (2, 1, *size)
    assert bool((d >= 0).all()) and bool((d <= 12.0).all()) and bool(torch.isfinite(d).all())


def test_odd_size_output_equals_padded_input_cropped():
    model = DisparityNet(DisparityNetConfig(**TINY)).eval()
    x = torch.rand(1, 3, 13, 19)
    padded = torch.nn.functional.pad(x, (0, 24 - 19, 0, 16 - 13), mode="replicate")
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(padded)[..., :13, :19])


def test_scales_are_finest_first_in_their_own_pixels():
    model = DisparityNet(DisparityNetConfig(max_disp=16.0, **TINY))
    outs = model(torch.rand(2, 3, 16, 24), scales=True)
    assert [tuple(o.shape[-2:]) for o in outs] == [(16, 24), (8, 12), (4, 6)]
    for k, o in enumerate(outs):
        assert float(o.detach().max()) <= 16.0 / 2 ** k
    sum(o.mean() for o in outs).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)
    with pytest.raises(UserError, match="multiples of 8"):
        model(torch.rand(1, 3, 12, 24), scales=True)


def test_correlation_matches_a_direct_loop():
    torch.manual_seed(0)
    a, b = torch.randn(2, 5, 4, 9), torch.randn(2, 5, 4, 9)
    got = horizontal_correlation(a, b, 4)
    ref = torch.zeros(2, 4, 4, 9)
    for k in range(4):
        for x in range(9):
            if x - k >= 0:
                ref[:, k, :, x] = (a[..., x] * b[..., x - k]).sum(1) / 5
    torch.testing.assert_close(got, ref)


def test_registry_builds_it_and_bad_settings_are_refused():
    import fovea.models.depthnet  # noqa: F401
    from fovea.models.registry import create_model

    model = create_model("disparity", input="stack", **TINY)
    assert isinstance(model, DisparityNet) and model.views == 2
    with pytest.raises(UserError, match="input"):
        create_model("disparity", input="three")
    with pytest.raises(UserError, match="max_disp"):
        DisparityNet(DisparityNetConfig(max_disp=0))
    with pytest.raises(UserError, match="scales"):
        DisparityNet(DisparityNetConfig(widths=(4, 8), scales=3))
    with pytest.raises(UserError, match="expected \\(N, 6, H, W\\)"):
        model(torch.rand(1, 3, 8, 8))
