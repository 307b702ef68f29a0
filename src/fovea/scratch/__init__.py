"""fovea.scratch: convolutional networks from scratch in NumPy, every forward and backward pass
written out (the lecture's backpropagation through convolutions, the survey's optimizers).

NumPy only: nothing in this package imports torch (``fovea scratch check`` compares it with
PyTorch from outside). A learning tool, not a fast path: train real models with ``fovea train``.
"""

from fovea.scratch.conv import (col2im, conv2d_direct_backward, conv2d_direct_forward, conv2d_im2col_backward,
                                conv2d_im2col_forward, conv_matrix, conv_output_size, im2col, input_grad_full_conv)
from fovea.scratch.gradcheck import gradient_check, loss_gradient_check, numerical_gradient, relative_error
from fovea.scratch.layers import (AvgPool2d, BatchNorm, Conv2d, Dropout, Flatten, GlobalAvgPool2d, Layer, LeakyReLU,
                                  Linear, LocalResponseNorm, MaxPool2d, Param, PReLU, ReLU, Sigmoid, Tanh)
from fovea.scratch.losses import MulticlassHinge, SoftmaxCrossEntropy
from fovea.scratch.model import Sequential, accuracy, fit, lenet5, predict
from fovea.scratch.optim import OPTIMIZERS, SGD, AdaGrad, Adam, Momentum, Optimizer, RMSProp, l2_penalty

__all__ = [
    "col2im", "conv2d_direct_backward", "conv2d_direct_forward", "conv2d_im2col_backward", "conv2d_im2col_forward",
    "conv_matrix", "conv_output_size", "im2col", "input_grad_full_conv",
    "gradient_check", "loss_gradient_check", "numerical_gradient", "relative_error",
    "AvgPool2d", "BatchNorm", "Conv2d", "Dropout", "Flatten", "GlobalAvgPool2d", "Layer", "LeakyReLU", "Linear",
    "LocalResponseNorm", "MaxPool2d", "Param", "PReLU", "ReLU", "Sigmoid", "Tanh",
    "MulticlassHinge", "SoftmaxCrossEntropy", "Sequential", "accuracy", "fit", "lenet5", "predict",
    "OPTIMIZERS", "SGD", "AdaGrad", "Adam", "Momentum", "Optimizer", "RMSProp", "l2_penalty",
]
