import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fovea
from fovea.arith import (conv_macs, conv_output_size, conv_params, conv_transpose_output_size, pool_output_size,
                         receptive_field, trace)
from fovea.errors import InputTooSmallError

GRID = [(n, k, p, s, d) for n, k, p, s, d in itertools.product((7, 8, 13), (1, 2, 3, 5), (0, 1, 2), (1, 2, 3), (1, 2))
        if d * (k - 1) + 1 <= n + 2 * p]


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_conv_output_size_matches_tensors(dim):
    for n, k, p, s, d in GRID if dim < 3 else GRID[::7]:
        x = torch.zeros(1, 1, *(n,) * dim)
        w = torch.zeros(1, 1, *(k,) * dim)
        out = getattr(F, f"conv{dim}d")(x, w, stride=s, padding=p, dilation=d)
        assert out.shape[2:] == (conv_output_size(n, k, p, s, d),) * dim, (n, k, p, s, d)


@pytest.mark.parametrize("dim", [1, 2, 3])
@pytest.mark.parametrize("ceil_mode", [False, True])
def test_pool_output_size_matches_tensors(dim, ceil_mode):
    for n, k, p, s, d in GRID if dim < 3 else GRID[::7]:
        if p > k // 2:  # PyTorch's rule: padding at most half the kernel
            continue
        x = torch.zeros(1, 1, *(n,) * dim)
        out = getattr(F, f"max_pool{dim}d")(x, k, s, p, dilation=d, ceil_mode=ceil_mode)
        assert out.shape[2:] == (pool_output_size(n, k, p, s, d, ceil_mode),) * dim, (n, k, p, s, d)
        if d == 1:
            avg = getattr(F, f"avg_pool{dim}d")(x, k, s, p, ceil_mode=ceil_mode)
            assert avg.shape[2:] == (pool_output_size(n, k, p, s, 1, ceil_mode),) * dim


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_conv_transpose_output_size_matches_tensors(dim):
    for n, k, p, s, d in GRID if dim < 3 else GRID[::7]:
        for op in range(max(s, d)):
            if op >= s and op >= d:
                continue
            if (n - 1) * s - 2 * p + d * (k - 1) + op + 1 < 1:
                continue
            x = torch.zeros(1, 1, *(n,) * dim)
            w = torch.zeros(1, 1, *(k,) * dim)
            out = getattr(F, f"conv_transpose{dim}d")(x, w, stride=s, padding=p, output_padding=op, dilation=d)
            assert out.shape[2:] == (conv_transpose_output_size(n, k, p, s, d, op),) * dim


def test_stacked_3x3_receptive_fields():
    assert receptive_field([(3, 1), (3, 1)])[-1] == (5, 1)
    assert receptive_field([(3, 1)] * 3)[-1] == (7, 1)
    assert receptive_field([(3, 1, 2)])[-1][0] == 5  # dilation 2


def test_traced_receptive_fields_of_stacked_convs():
    net = nn.Sequential(nn.Conv2d(1, 1, 3), nn.ReLU(), nn.Conv2d(1, 1, 3), nn.Conv2d(1, 1, 3))
    rfs = [layer.rf for layer in trace(net, (1, 16, 16)).layers]
    assert rfs == [3, 3, 5, 7]


def test_parameter_and_macs_formulas_against_a_layer():
    layer = nn.Conv2d(16, 32, 5, groups=2)
    assert conv_params(5, 16, 32, groups=2) == sum(p.numel() for p in layer.parameters())
    tr = trace(nn.Sequential(layer), (16, 20, 20))
    assert tr.total_macs == conv_macs((16, 16), 5, 16, 32, groups=2)


def test_trace_counts_linear_macs_and_params():
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 7))
    tr = trace(net, (3, 2, 2))
    assert tr.total_macs == 12 * 7 and tr.total_params == 12 * 7 + 7


def test_sum_of_branches_takes_the_union_of_fields():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(1, 1, 3, padding=1), nn.Conv2d(1, 1, 7, padding=3)

        def forward(self, x):
            return self.a(x) + self.b(x)

    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.two, self.after = Two(), nn.ReLU()

        def forward(self, x):
            return self.after(self.two(x))

    assert trace(Wrap(), (1, 16, 16)).layers[-1].rf == 7


def test_too_small_input_names_the_layer():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2), nn.Conv2d(2, 2, 3))
    with pytest.raises(InputTooSmallError, match="'2'"):
        trace(net, (1, 6, 6))  # 6 -> 4 -> 2 -> 0 at layer '2'


def test_vgg16_receptive_fields_conv5_3_and_pool5():
    tr = trace(fovea.create_model("vgg16"), (3, 224, 224))
    rf = {layer.name: layer.rf for layer in tr.layers}
    assert rf["conv5_3"] == 196 and rf["pool5"] == 212
    assert rf["conv1_1"] == 3 and rf["conv1_2"] == 5 and rf["conv2_1"] == 10


def test_resnet50_params_and_macs_match_torchvision_figures():
    tr = trace(fovea.create_model("resnet50"), (3, 224, 224))
    assert tr.total_params == 25_557_032
    assert tr.total_macs == pytest.approx(4.09e9, rel=0.01)
