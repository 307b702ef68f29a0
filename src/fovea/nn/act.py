"""Activations by name."""

from __future__ import annotations

from typing import Callable

from torch import nn

_ACTS: dict[str, Callable[..., nn.Module]] = {
    "relu": lambda inplace=False: nn.ReLU(inplace=inplace),
    "relu6": lambda inplace=False: nn.ReLU6(inplace=inplace),
    # The tutorial's leaky ReLU: a = 0.01 (PyTorch's default slope too).
    "leaky_relu": lambda inplace=False: nn.LeakyReLU(0.01, inplace=inplace),
    "prelu": lambda inplace=False: nn.PReLU(),  # learnable a, one per layer, initialised to 0.25
    "sigmoid": lambda inplace=False: nn.Sigmoid(),
    "tanh": lambda inplace=False: nn.Tanh(),
    "gelu": lambda inplace=False: nn.GELU(),
    "silu": lambda inplace=False: nn.SiLU(inplace=inplace),
    "identity": lambda inplace=False: nn.Identity(),
}
_ALIASES = {"lrelu": "leaky_relu", "leakyrelu": "leaky_relu", "none": "identity", "linear": "identity"}

ACT_NAMES = tuple(_ACTS) + tuple(_ALIASES)


def get_act(name: str | nn.Module | type | None, inplace: bool = False) -> nn.Module:
    """Build an activation from a name (``"relu"``, ``"leaky_relu"``, ``"prelu"``...), a class or a module."""
    if name is None:
        return nn.Identity()
    if isinstance(name, nn.Module):
        return name
    if isinstance(name, type):
        return name()
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in _ACTS:
        raise ValueError(f"unknown activation {name!r}; expected one of {', '.join(_ACTS)}")
    return _ACTS[key](inplace=inplace)
