"""Transfer learning: start from a fovea run, a weights file or torchvision's ImageNet weights,
replace the output layer for the new classes, and choose what stays frozen.

Freeze policies (``--freeze``):
    none        train everything (the default)
    backbone    train only the head (what ``forward_head`` uses: the output layer, and for VGG,
                AlexNet or a spec string the fully connected layers before it): the
                convolutional network as a fixed feature extractor
plus ``--freeze-until STAGE`` (every parameter up to and including the named module, e.g.
``layer3`` of a ResNet) and ``--freeze-modules A,B`` (the named modules). ``--freeze-bn`` keeps
every batch-norm layer in eval mode, so its running statistics stay those of the source data.
``--lr-backbone`` gives the backbone its own learning rate (the head keeps ``--lr``).
"""

from __future__ import annotations

import difflib
from pathlib import Path

import torch
from torch import nn

from fovea.errors import UserError

FREEZE_POLICIES = ("none", "backbone")


def head_parameter_names(net: nn.Module, input_shape: tuple[int, ...] | None = None) -> set[str]:
    """Parameters of the head: everything ``forward_head`` uses, i.e. every parameter that
    ``forward_features`` does not reach (for VGG and AlexNet, the whole fc6-fc8 classifier; for
    a spec string, the layers after flattening; for ResNet, the final fc). Found by one small
    forward and backward pass of ``forward_features``."""
    params = [(n, p) for n, p in net.named_parameters()]
    c, h, w = input_shape or net.default_input_size
    side = max(getattr(net, "min_input_size", 1), 8)
    x = torch.zeros(2, c, side if input_shape is None else h, side if input_shape is None else w)
    was_training = net.training
    net.eval()
    try:
        with torch.enable_grad():
            out = net.forward_features(x)
            grads = torch.autograd.grad(out.float().sum(), [p for _, p in params], allow_unused=True)
    finally:
        net.train(was_training)
    return {n for (n, _), g in zip(params, grads) if g is None}


def _check_module(net: nn.Module, name: str, flag: str) -> None:
    names = [n for n, _ in net.named_modules() if n]
    if name not in names:
        top = [n for n, _ in net.named_children()]
        close = difflib.get_close_matches(name, names, n=4)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise UserError(f"{flag} {name!r} is not a module of this model; {hint}top-level modules: {', '.join(top)}")


def apply_freeze(net: nn.Module, policy: str = "none", until: str | None = None,
                 modules: list[str] | None = None, input_shape: tuple[int, ...] | None = None) -> list[str]:
    """Set ``requires_grad=False`` on the frozen parameters; returns their names."""
    if policy not in FREEZE_POLICIES:
        raise UserError(f"--freeze {policy!r}: expected one of {', '.join(FREEZE_POLICIES)}")
    params = list(net.named_parameters())
    frozen: set[str] = set()
    if policy == "backbone":
        head = head_parameter_names(net, input_shape)
        frozen |= {n for n, _ in params if n not in head}
    if until:
        _check_module(net, until, "--freeze-until")
        last = max(i for i, (n, _) in enumerate(params) if n.startswith(until + "."))
        frozen |= {n for n, _ in params[: last + 1]}
    for name in modules or []:
        _check_module(net, name, "--freeze-modules")
        frozen |= {n for n, _ in params if n.startswith(name + ".")}
    for n, p in params:
        p.requires_grad_(n not in frozen)
    return [n for n, _ in params if n in frozen]


def freeze_batchnorm(net: nn.Module) -> None:
    """Keep batch-norm layers in eval mode (running statistics fixed) even when the model
    trains: a forward pre-hook resets ``training`` on every call."""
    def keep_eval(module, args):
        module.training = False

    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.register_forward_pre_hook(keep_eval)


def param_groups(net: nn.Module, lr: float, lr_backbone: float | None,
                 input_shape: tuple[int, ...] | None = None) -> list[dict]:
    """Trainable parameters, the backbone with its own learning rate when one is given."""
    trainable = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    if lr_backbone is None:
        return [dict(params=[p for _, p in trainable])]
    head = head_parameter_names(net, input_shape)
    groups = [dict(params=[p for n, p in trainable if n in head], lr=lr),
              dict(params=[p for n, p in trainable if n not in head], lr=lr_backbone)]
    return [g for g in groups if g["params"]]


def resolve_init(init: str | None) -> tuple[dict | None, str | Path | None]:
    """``--init`` as (a fovea run's model.json, its weights file) or (None, weights for
    create_model): a run directory, a weights file or "torchvision"."""
    if init is None or init == "torchvision":
        return None, init
    p = Path(init)
    if p.is_dir():
        from fovea.train.run import Run

        run = Run.existing(p)
        info = run.read_json("model.json")
        return info, run.path / "model.safetensors"
    if p.is_file():
        return None, p
    raise UserError(f"--init {init!r} is neither a fovea run directory, a weights file nor 'torchvision'")


def load_run_weights(net: nn.Module, weights_file: Path) -> list[str]:
    """Load the network part (``net.*``) of a fovea run's model.safetensors; an output layer of
    another width is left fresh. Returns the keys left at their initial values."""
    from safetensors.torch import load_file

    from fovea.models.weights import load_into

    state = {k[len("net."):]: v for k, v in load_file(str(weights_file)).items() if k.startswith("net.")}
    try:
        return load_into(net, state)
    except ValueError as e:
        raise UserError(f"weights of {str(weights_file)!r} do not fit the model: {e}") from None


def summarize_trainable(net: nn.Module) -> str:
    total = sum(p.numel() for p in net.parameters())
    train = sum(p.numel() for p in net.parameters() if p.requires_grad)
    return f"trainable parameters: {train:,} of {total:,}"


__all__ = ["FREEZE_POLICIES", "apply_freeze", "freeze_batchnorm", "head_parameter_names", "load_run_weights",
           "param_groups", "resolve_init", "summarize_trainable"]
