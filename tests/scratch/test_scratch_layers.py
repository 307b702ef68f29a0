"""Every fovea.scratch layer against PyTorch (float64): forward max abs difference <= 1e-6, and the
backward pass against autograd for the input, the weight and the bias, over grids of shapes and
hyper-parameters; plus finite-difference checks and the NumPy-only import. (The full table of `fovea scratch
check` is asserted in test_scratch_cli.py.)"""

import ast
import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fovea
from fovea import scratch as S
from fovea.scratch_check import TOL, compare_conv_matrix, compare_layer, compare_loss

CONV_GRID = [(k, s, p, d, g) for k, s, p, d, g in itertools.product((1, 2, 3), (1, 2, 3), (0, 1, 2), (1, 2), (1, 2))
             if d * (k - 1) + 1 <= 7 + 2 * p]


def _assert_row(row, gradcheck=False):
    assert row.forward is None or row.forward <= TOL, row
    for d in (row.grad_input, row.grad_weight, row.grad_bias):
        assert d is None or d <= TOL, row
    if gradcheck:
        assert row.gradcheck is not None and row.gradcheck <= 1e-6, row


def _with_bias(layer, rng):
    if "bias" in layer.params:
        layer.params["bias"].value = rng.standard_normal(layer.params["bias"].value.shape)
    return layer


@pytest.mark.parametrize("k,s,p,d,g", CONV_GRID)
def test_conv2d_im2col_matches_torch(k, s, p, d, g):
    rng = np.random.default_rng(k * 100 + s * 10 + p)
    layer = _with_bias(S.Conv2d(4, 6, k, s, p, d, g, seed=1), rng)
    _assert_row(compare_layer("conv", layer, rng.standard_normal((2, 4, 7, 6)), gradcheck=False))


@pytest.mark.parametrize("k,s,p,d,g", CONV_GRID[::4])
def test_conv2d_direct_matches_torch_and_im2col(k, s, p, d, g):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 4, 7, 6))
    direct = _with_bias(S.Conv2d(4, 2 * g, k, s, p, d, g, method="direct", seed=2), rng)
    _assert_row(compare_layer("conv direct", direct, x, gradcheck=False))
    im2col = S.Conv2d(4, 2 * g, k, s, p, d, g, seed=2)
    im2col.params["bias"].value = direct.params["bias"].value
    np.testing.assert_allclose(im2col.forward(x), direct.forward(x), atol=1e-12)


def test_conv2d_rectangular_kernel_no_bias_depthwise():
    rng = np.random.default_rng(3)
    for layer in (S.Conv2d(3, 5, (2, 3), (1, 2), (1, 0), (2, 1), seed=0), S.Conv2d(4, 4, 3, 1, 1, groups=4, bias=False),
                  S.Conv2d(3, 2, (3, 1), method="direct", bias=False)):
        x = rng.standard_normal((2, layer.params["weight"].value.shape[1] * layer.groups, 6, 5))
        _assert_row(compare_layer("conv", layer, x, gradcheck=True), gradcheck=True)


@pytest.mark.parametrize("k,s,p,d,g", CONV_GRID[::3])
def test_conv_matrix_and_flipped_filter_give_the_input_gradient(k, s, p, d, g):
    rng = np.random.default_rng(11)
    w, x = rng.standard_normal((2 * g, 4 // g, k, k)), rng.standard_normal((2, 4, 7, 6))
    for row in compare_conv_matrix(w, x, s, p, d, g):
        _assert_row(row)


def test_conv_matrix_is_sparse_with_the_filter_values():
    w = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    c = S.conv_matrix(w, (1, 5, 5))
    assert c.shape == (9, 25)
    assert ((c != 0).sum(axis=1) == 9).all()  # each output sees exactly k*k inputs
    assert sorted(c[0][c[0] != 0]) == list(range(1, 10))


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("k,s,p", [(2, 2, 0), (2, 1, 0), (3, 2, 1), (3, 3, 1), (3, 1, 0), (2, 3, 1)])
def test_pooling_matches_torch(kind, k, s, p):
    rng = np.random.default_rng(k + s + p)
    layer = (S.MaxPool2d if kind == "max" else S.AvgPool2d)(k, s, p)
    _assert_row(compare_layer(kind, layer, rng.standard_normal((2, 3, 7, 8)), gradcheck=(k, s) == (3, 2)),
                gradcheck=(k, s) == (3, 2))


def test_global_average_pool_and_flatten():
    rng = np.random.default_rng(0)
    for layer in (S.GlobalAvgPool2d(), S.Flatten()):
        _assert_row(compare_layer("g", layer, rng.standard_normal((3, 4, 5, 2)), gradcheck=True), gradcheck=True)


@pytest.mark.parametrize("layer", [S.ReLU(), S.LeakyReLU(), S.LeakyReLU(0.2), S.PReLU(1, 0.25), S.PReLU(4, 0.1),
                                   S.Sigmoid(), S.Tanh()], ids=repr)
@pytest.mark.parametrize("shape", [(3, 4), (2, 4, 3, 5)])
def test_activations_match_torch(layer, shape):
    rng = np.random.default_rng(len(shape))
    x = rng.standard_normal(shape) * 3
    if isinstance(layer, S.PReLU) and layer.params["weight"].value.size > 1 and len(shape) == 2:
        x = x[:, :4]
    _assert_row(compare_layer(repr(layer), layer, x, gradcheck=True), gradcheck=True)


def test_sigmoid_has_no_overflow_at_extremes():
    y = S.Sigmoid().forward(np.array([-1000.0, 0.0, 1000.0]))
    np.testing.assert_allclose(y, [0.0, 0.5, 1.0])


@pytest.mark.parametrize("out,bias", [(7, True), (1, False)])
def test_linear_matches_torch(out, bias):
    rng = np.random.default_rng(out)
    layer = _with_bias(S.Linear(9, out, bias=bias), rng)
    _assert_row(compare_layer("fc", layer, rng.standard_normal((5, 9)), gradcheck=True), gradcheck=True)


@pytest.mark.parametrize("shape", [(8, 5), (4, 3, 3, 2), (2, 2, 1, 1)])
@pytest.mark.parametrize("momentum", [0.1, 0.5])
def test_batch_norm_train_then_eval_matches_torch(shape, momentum):
    rng = np.random.default_rng(shape[0])
    bn = S.BatchNorm(shape[1], momentum=momentum)
    bn.params["weight"].value = rng.standard_normal(shape[1])
    bn.params["bias"].value = rng.standard_normal(shape[1])
    for _ in range(2):  # the running statistics are compared inside the forward column
        _assert_row(compare_layer("bn train", bn, rng.standard_normal(shape) * 2 + 1, train=True, gradcheck=False))
    _assert_row(compare_layer("bn eval", bn, rng.standard_normal(shape), train=False, gradcheck=True), gradcheck=True)
    assert np.abs(bn.running_var - 1).max() > 1e-3  # the statistics really moved


@pytest.mark.parametrize("size,alpha,beta,k", [(5, 1e-4, 0.75, 2.0), (3, 0.5, 0.75, 1.0), (4, 0.1, 0.5, 1.0),
                                               (1, 1.0, 1.0, 1.0), (9, 0.3, 0.75, 2.0)])
def test_local_response_norm_matches_torch(size, alpha, beta, k):
    rng = np.random.default_rng(size)
    layer = S.LocalResponseNorm(size, alpha, beta, k)
    _assert_row(compare_layer("lrn", layer, rng.standard_normal((2, 6, 3, 4)) * 2, gradcheck=True), gradcheck=True)


def test_dropout_scales_kept_units_and_is_identity_in_eval():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 50))
    d = S.Dropout(0.3, seed=1)
    y = d.forward(x, train=True)
    kept = y != 0
    assert abs(1 - kept.mean() - 0.3) < 0.01
    np.testing.assert_allclose(y[kept], x[kept] / 0.7)
    np.testing.assert_array_equal(d.backward(np.ones_like(x)), kept / 0.7)
    np.testing.assert_array_equal(d.forward(x, train=False), x)
    _assert_row(compare_layer("dropout", S.Dropout(0.5), x[:4, :6], gradcheck=True), gradcheck=True)


@pytest.mark.parametrize("n,c", [(6, 5), (1, 2), (16, 10)])
def test_losses_match_torch(n, c):
    rng = np.random.default_rng(n)
    logits, labels = rng.standard_normal((n, c)) * 2, rng.integers(0, c, n)
    _assert_row(compare_loss("ce", S.SoftmaxCrossEntropy(), logits, labels), gradcheck=True)
    for margin in (1.0, 0.5):
        _assert_row(compare_loss("hinge", S.MulticlassHinge(margin), logits, labels), gradcheck=True)


def test_bad_hyper_parameters_are_named():
    with pytest.raises(ValueError, match="groups=3"):
        S.Conv2d(4, 6, 3, groups=3)
    with pytest.raises(ValueError, match="4 channels"):
        S.Conv2d(3, 6, 3).forward(np.zeros((1, 4, 5, 5)))
    with pytest.raises(ValueError, match="too small"):
        S.Conv2d(1, 1, 5).forward(np.zeros((1, 1, 3, 3)))
    with pytest.raises(ValueError, match="p=1.0"):
        S.Dropout(1.0)


SCRATCH_DIR = Path(fovea.__file__).parent / "scratch"


def test_no_file_of_the_package_imports_torch():
    for f in SCRATCH_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split(".")[0] == "torch" for n in names), f


def test_package_imports_and_trains_with_torch_blocked():
    # fovea/__init__.py loads the model registry (torch), so the subprocess stands in a bare
    # `fovea` namespace for it: what is imported below is fovea.scratch and only what it needs.
    code = f"""
import importlib.abc, sys, types
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'torch':
            raise ImportError('torch is blocked: ' + name)
sys.meta_path.insert(0, Block())
pkg = types.ModuleType('fovea'); pkg.__path__ = [{str(SCRATCH_DIR.parent)!r}]; sys.modules['fovea'] = pkg
import numpy as np
import fovea.scratch as S
from fovea.scratch.data import load_digits32
xtr, ytr, xte, yte = load_digits32()
model = S.lenet5()
opt = S.Adam(model.parameters(), lr=1e-3)
S.fit(model, S.SoftmaxCrossEntropy(), opt, xtr[:16], ytr[:16], epochs=1, batch_size=8)
assert not [m for m in sys.modules if m.split('.')[0] == 'torch']
print('ok')
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
