"""fovea.nn: the building blocks of convolutional networks."""

from fovea.nn.act import ACT_NAMES, get_act
from fovea.nn.conv import DeformConv2d, SeparableConv, conv, conv_transpose, resolve_padding
from fovea.nn.init import alexnet_init, he_init, init_weights, xavier_init
from fovea.nn.layers import ConvNormAct
from fovea.nn.norm import LocalResponseNorm, get_norm
from fovea.nn.pool import GlobalAvgPool, MinPool, overlapping_max_pool, pool

__all__ = [
    "ACT_NAMES", "get_act", "DeformConv2d", "SeparableConv", "conv", "conv_transpose", "resolve_padding",
    "alexnet_init", "he_init", "init_weights", "xavier_init", "ConvNormAct", "LocalResponseNorm",
    "get_norm", "GlobalAvgPool", "MinPool", "overlapping_max_pool", "pool",
]
