"""The lectures' worked examples, executed by fovea.scratch (seeds: lecture-cnn-basics,
lecture-cnn-chapter8, lecture-cv-and-convnets)."""

import numpy as np
import pytest

from fovea import scratch as S
from fovea.arith import conv_output_size, conv_params

X3 = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)  # [[1,2,3],[4,5,6],[7,8,9]]
W2 = np.array([[10.0, 20.0], [30.0, 40.0]]).reshape(1, 1, 2, 2)
POOL_X = np.array([[3, 2, 8, 0], [4, 1, 3, 1], [5, 0, 9, 1], [1, 2, 1, 1]], dtype=float).reshape(1, 1, 4, 4)


@pytest.mark.parametrize("method", ["im2col", "direct"])
def test_3x3_input_2x2_filter_gives_370_470_670_770(method):
    conv = S.Conv2d(1, 1, 2, bias=False, method=method)
    conv.params["weight"].value = W2.copy()
    np.testing.assert_array_equal(conv.forward(X3)[0, 0], [[370, 470], [670, 770]])
    # the same as the sparse matrix C times the flattened input
    np.testing.assert_array_equal(S.conv_matrix(W2, (1, 3, 3)) @ X3.ravel(), [370, 470, 670, 770])


def test_backprop_of_the_worked_example_sums_shared_weights_and_flips_the_filter():
    conv = S.Conv2d(1, 1, 2, bias=False)
    conv.params["weight"].value = W2.copy()
    conv.forward(X3)
    dx = conv.backward(np.ones((1, 1, 2, 2)))
    # every weight is shared by the 4 output positions: dL/dw_mn = sum of the 4 inputs it touched
    np.testing.assert_array_equal(conv.params["weight"].grad[0, 0], [[1 + 2 + 4 + 5, 2 + 3 + 5 + 6],
                                                                     [4 + 5 + 7 + 8, 5 + 6 + 8 + 9]])
    # dL/dx: the full convolution of the output gradient with the filter turned by 180 degrees
    expected = [[10, 30, 20], [40, 100, 60], [30, 70, 40]]
    np.testing.assert_array_equal(dx[0, 0], expected)
    np.testing.assert_array_equal(S.input_grad_full_conv(np.ones((1, 1, 2, 2)), W2, (3, 3))[0, 0], expected)
    np.testing.assert_array_equal((S.conv_matrix(W2, (1, 3, 3)).T @ np.ones(4)).reshape(3, 3), expected)


@pytest.mark.parametrize("k,s,expected", [(2, 2, [[4, 8], [5, 9]]), (3, 1, [[9, 9], [9, 9]]),
                                          (2, 1, [[4, 8, 8], [5, 9, 9], [5, 9, 9]])])
def test_max_pooling_examples_of_the_4x4_input(k, s, expected):
    np.testing.assert_array_equal(S.MaxPool2d(k, s).forward(POOL_X)[0, 0], expected)


def test_max_pooling_routes_the_gradient_to_the_winner_only():
    pool = S.MaxPool2d(2, 2)
    pool.forward(POOL_X)
    dx = pool.backward(np.array([[[[1.0, 2.0], [3.0, 4.0]]]]))
    np.testing.assert_array_equal(dx[0, 0], [[0, 0, 2, 0], [1, 0, 0, 0], [3, 0, 4, 0], [0, 0, 0, 0]])


def test_average_pooling_spreads_the_gradient_as_g_over_n_squared():
    pool = S.AvgPool2d(2, 2)
    np.testing.assert_array_equal(pool.forward(POOL_X)[0, 0], [[2.5, 3], [2, 3]])
    dx = pool.backward(np.array([[[[4.0, 8.0], [12.0, 16.0]]]]))
    np.testing.assert_array_equal(dx[0, 0], np.kron([[1, 2], [3, 4]], np.ones((2, 2))))


@pytest.mark.parametrize("n,k,p,s,d,out", [
    (6, 3, 0, 1, 1, 4),    # chapter 8: o = n - f + 1, 6x6 * 3x3 -> 4x4
    (6, 3, 1, 1, 1, 6),    # chapter 8: o = n + 2p - f + 1, padding keeps 6x6
    (3, 3, 1, 2, 1, 2),    # basics: 3x3, filter 3x3, padding 1, stride 2 -> 2x2
    (5, 3, 1, 2, 1, 3),    # basics: 5x5x3, 5 filters 3x3x3, padding 1, stride 2 -> 3x3x5
    (11, 3, 1, 2, 2, 5),   # basics, dilated: 11x11, k 3, p 1, s 2, d 2 (the slide prints 4x4, the formula gives 5)
    (39, 3, 0, 1, 1, 37),  # chapter 8's simple CNN: 39x39x3 -> 37x37x10
    (37, 5, 0, 2, 1, 17),  # -> 17x17x20
    (17, 5, 0, 2, 1, 7),   # -> 7x7x40
])
def test_output_size_examples(n, k, p, s, d, out):
    assert conv_output_size(n, k, p, s, d) == out  # the formula of fovea.arith
    conv = S.Conv2d(3, 5, k, s, p, d, seed=0)
    assert conv.forward(np.zeros((1, 3, n, n))).shape == (1, 5, out, out)


def test_lenet5_shapes_and_parameter_count():
    model = S.lenet5()
    assert model.forward(np.zeros((2, 1, 32, 32))).shape == (2, 10)
    n_params = sum(p.value.size for p in model.parameters())
    expected = conv_params(5, 1, 6) + conv_params(5, 6, 16) + conv_params(5, 16, 120) + 120 * 84 + 84 + 84 * 10 + 10
    assert n_params == expected == 61706  # the lecture's "60K parameters"


def test_lenet5_learns_a_few_digits():
    from fovea.scratch.data import load_digits32

    xtr, ytr, _, _ = load_digits32()
    x, y = xtr[:64], ytr[:64]
    model = S.lenet5(seed=1)
    hist = S.fit(model, S.SoftmaxCrossEntropy(), S.Adam(model.parameters(), lr=2e-3), x, y, epochs=8, batch_size=16)
    assert hist[-1]["loss"] < 0.5 * hist[0]["loss"]
    assert S.accuracy(model, x, y) > 0.9


def test_digits_are_resized_and_padded_to_32x32():
    from fovea.scratch.data import bilinear_matrix, load_digits32

    xtr, ytr, xte, yte = load_digits32()
    assert xtr.shape == (1347, 1, 32, 32) and xte.shape == (450, 1, 32, 32)
    assert 0 <= xtr.min() and xtr.max() <= 1 and (xtr[:, :, :2] == 0).all()
    np.testing.assert_allclose(bilinear_matrix(8, 28).sum(1), 1)  # rows of an interpolation sum to 1
