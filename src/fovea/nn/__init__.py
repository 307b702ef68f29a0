"""fovea.nn: the building blocks of convolutional networks."""

from fovea.nn.act import ACT_NAMES, get_act
from fovea.nn.conv import DeformConv2d, SeparableConv, conv, conv_transpose, resolve_padding
from fovea.nn.dense import DenseBlock, DenseLayer, Transition
from fovea.nn.fire import Fire
from fovea.nn.inception import (AsymmetricConv, InceptionA, InceptionB, InceptionC, InceptionD, InceptionE,
                                InceptionNaive, InceptionV1, StackedConv3x3)
from fovea.nn.init import alexnet_init, he_init, inception_init, init_weights, truncated_normal_, xavier_init
from fovea.nn.layers import ConvNormAct
from fovea.nn.norm import LocalResponseNorm, get_norm, has_norm
from fovea.nn.pool import GlobalAvgPool, MinPool, overlapping_max_pool, pool
from fovea.nn.residual import BasicBlock, Bottleneck, PreActBasicBlock, ZeroPadShortcut, make_shortcut

__all__ = [
    "ACT_NAMES", "get_act", "DeformConv2d", "SeparableConv", "conv", "conv_transpose", "resolve_padding",
    "DenseBlock", "DenseLayer", "Transition", "Fire", "AsymmetricConv", "InceptionA", "InceptionB", "InceptionC",
    "InceptionD", "InceptionE", "InceptionNaive", "InceptionV1", "StackedConv3x3", "alexnet_init", "he_init",
    "inception_init", "init_weights", "truncated_normal_", "xavier_init", "ConvNormAct", "LocalResponseNorm",
    "get_norm", "has_norm", "GlobalAvgPool", "MinPool", "overlapping_max_pool", "pool", "BasicBlock", "Bottleneck",
    "PreActBasicBlock", "ZeroPadShortcut", "make_shortcut",
]
