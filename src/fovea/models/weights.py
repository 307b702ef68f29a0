"""Loading weights: local files (safetensors or a state dict) and torchvision's ImageNet
weights, with a converter from torchvision state dicts to fovea models."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from fovea.errors import UserError


def _head_keys(model: nn.Module) -> set[str]:
    """Parameter names of the output layers: the classifier and any auxiliary classifier's
    last layer (GoogLeNet's aux1.fc2, Inception v3's AuxLogits.fc)."""
    get = getattr(model, "get_classifier", None)
    if get is None:
        return set()
    heads = [get()]
    num_classes = getattr(model, "num_classes", None)
    for name, m in model.named_modules():
        out = getattr(m, "out_features", getattr(m, "out_channels", None))
        if "aux" in name.lower() and isinstance(m, (nn.Linear, nn.Conv2d)) and out == num_classes:
            heads.append(m)
    ids = {id(p) for h in heads for p in h.parameters()}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def convert_state_dict(model: nn.Module, source: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a state dict from another implementation of the same architecture (torchvision's)
    onto ``model``'s keys.

    Keys that match by name and shape are taken as they are; otherwise the two state dicts are
    paired in order (both list parameters and buffers in the order layers are built), and each
    pair must agree in shape. Output-layer tensors whose shape differs (another number of
    classes) are left out, so the caller keeps the model's fresh head.
    """
    target = model.state_dict()
    src = {k: v for k, v in source.items() if not k.endswith("num_batches_tracked")}
    tgt_keys = [k for k in target if not k.endswith("num_batches_tracked")]
    head = _head_keys(model)
    if set(src) == set(tgt_keys) or set(tgt_keys) <= set(src):
        pairs = [(k, k) for k in tgt_keys]
    else:
        src_keys = list(src)
        if len(src_keys) != len(tgt_keys):
            raise ValueError(f"cannot pair state dicts: source has {len(src_keys)} tensors, model has {len(tgt_keys)}")
        pairs = list(zip(tgt_keys, src_keys))
    out: dict[str, torch.Tensor] = {}
    for tk, sk in pairs:
        if sk not in src:
            raise ValueError(f"source state dict lacks {sk!r}")
        if src[sk].shape != target[tk].shape:
            if tk in head or tk.rsplit(".", 1)[0] + ".weight" in head:
                continue
            raise ValueError(f"shape mismatch pairing {tk!r} {tuple(target[tk].shape)} with {sk!r} {tuple(src[sk].shape)}")
        out[tk] = src[sk]
    return out


def load_into(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> list[str]:
    """Load a (possibly foreign) state dict; returns the keys left at their fresh values."""
    sd = convert_state_dict(model, state_dict)
    missing, _ = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    not_head = [k for k in missing if k not in _head_keys(model)]
    if not_head:
        raise ValueError(f"weights leave {len(not_head)} tensors unset, e.g. {not_head[:3]}")
    return missing


def read_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a .safetensors file or a torch file (read with weights_only=True)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"weights file {str(p)!r} not found; expected a .safetensors or .pt/.pth file")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(p))
        except Exception as e:  # safetensors raises its own error types for bad headers
            raise UserError(f"weights file {str(p)!r} is not a readable safetensors file ({e})") from None
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"weights file {str(p)!r} could not be read with weights_only=True "
                        f"(a file that needs pickled code is refused): {str(e).splitlines()[0]}") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise UserError(f"weights file {str(p)!r} holds a {type(obj).__name__}, expected a state dict")
    return obj


def torchvision_state_dict(tv_name: str) -> dict[str, torch.Tensor]:
    """torchvision's default ImageNet weights for ``tv_name``: from the torch hub cache, or
    downloaded when online; offline and absent, one line saying which file to put where."""
    import torchvision

    try:
        enum = torchvision.models.get_model_weights(tv_name)
    except ValueError:
        raise UserError(f"torchvision has no weights for {tv_name!r}") from None
    w = enum.DEFAULT
    fname = w.url.rsplit("/", 1)[-1]
    target = Path(torch.hub.get_dir()) / "checkpoints" / fname
    try:
        return w.get_state_dict(progress=False, check_hash=False)
    except Exception as e:  # URLError, socket errors, SSL errors: all mean "not here and can't fetch"
        raise UserError(f"torchvision weights {fname} not available offline ({type(e).__name__}); "
                        f"download {w.url} and put it at {target}") from None


def load_weights(model: nn.Module, name: str, weights: str | Path) -> nn.Module:
    if str(weights) == "torchvision":
        tv_name = getattr(model, "torchvision_name", None)
        if tv_name is None:
            raise UserError(f"model {name!r} has no torchvision counterpart; pass a weights file instead")
        sd = torchvision_state_dict(tv_name)
    else:
        sd = read_weights_file(weights)
    try:
        load_into(model, sd)
    except ValueError as e:
        raise UserError(f"weights {str(weights)!r} do not fit model {name!r}: {e}") from None
    return model
