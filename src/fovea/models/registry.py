"""One registry builds every model: by registered name, or from a one-line spec string."""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from pathlib import Path
from typing import Callable

from torch import nn

from fovea.errors import UnknownModelError, UserError

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_FAMILY: dict[str, str] = {}


def register_model(fn: Callable[..., nn.Module] | None = None, *, name: str | None = None):
    """Decorator: register a builder under its function name (or ``name``). Duplicates raise."""

    def wrap(f: Callable[..., nn.Module]):
        key = name or f.__name__
        if key in _MODELS:
            raise ValueError(f"model {key!r} is already registered (by {_MODELS[key].__module__})")
        _MODELS[key] = f
        _FAMILY[key] = f.__module__.rsplit(".", 1)[-1]
        return f

    return wrap(fn) if fn is not None else wrap


def _load_families() -> None:
    import fovea.models  # noqa: F401  (imports every family module, which registers its builders)


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style pattern, sorted."""
    _load_families()
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def model_family(name: str) -> str:
    _load_families()
    return _FAMILY[name]


def model_builder(name: str) -> Callable[..., nn.Module]:
    _load_families()
    return _MODELS[name]


def is_spec(name: str) -> bool:
    return "," in name or name.startswith(("conv", "fc", "sepconv", "dwconv"))


def create_model(name: str, *, num_classes: int | None = None, in_channels: int | None = None,
                 weights: str | Path | None = None, **kwargs) -> nn.Module:
    """Build a model by registered name or spec string.

    ``num_classes`` and ``in_channels`` override the family's defaults; ``weights`` is a
    local file (safetensors or a state dict) or ``"torchvision"`` for torchvision's ImageNet
    weights. Extra keyword arguments go to the family's config (e.g. ``norm="bn"``).
    """
    _load_families()
    for key, val in (("num_classes", num_classes), ("in_channels", in_channels)):
        if val is not None:
            kwargs[key] = val
    if name in _MODELS:
        builder = _MODELS[name]
        if str(weights) == "torchvision":  # build the layout those weights need, unless told otherwise
            kwargs = {**getattr(builder, "torchvision_kwargs", {}), **kwargs}
        params = inspect.signature(builder).parameters
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            unknown = set(kwargs) - set(params)
            if unknown:
                raise UserError(f"model {name!r} does not take {', '.join(sorted(unknown))}")
        model = builder(**kwargs)
    elif is_spec(name):
        from fovea.spec import build_spec

        model = build_spec(name, **kwargs)
    else:
        close = difflib.get_close_matches(name, list(_MODELS), n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else "; `fovea models` lists them"
        raise UnknownModelError(f"unknown model {name!r}{hint}")
    if weights is not None:
        from fovea.models.weights import load_weights

        load_weights(model, name, weights)
    return model
