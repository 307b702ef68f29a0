"""`fovea models`, `fovea summary` and (until training lands) `fovea demo`."""

from __future__ import annotations

import json
import re
from pathlib import Path

from fovea.errors import UserError


def parse_input_shape(text: str) -> tuple[int, ...]:
    """'3x224x224' -> (3, 224, 224); also C x T x H x W for video models."""
    if not re.fullmatch(r"\d+(x\d+){1,3}", text or ""):
        raise UserError(f"--input {text!r} is not a shape; expected CxHxW such as 3x224x224")
    shape = tuple(int(v) for v in text.split("x"))
    if min(shape) < 1:
        raise UserError(f"--input {text!r} has a zero size; every dimension must be at least 1")
    return shape


def default_input_shape(model, in_channels: int | None) -> tuple[int, ...]:
    shape = tuple(getattr(model, "default_input_size", (3, 224, 224)))
    return (in_channels or shape[0], *shape[1:])


def _fmt_int(n: int) -> str:
    return f"{n:,}"


def _fmt_macs(n: int) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


def format_summary(name: str, tr) -> str:
    frozen = tr.trainable_params < tr.total_params  # show what trains only when something is frozen
    rows = [("layer", "type", "output", "params", *(("trainable",) if frozen else ()), "mult-adds", "RF")]
    for layer in tr.layers:
        rows.append((layer.name, layer.type, "x".join(map(str, layer.output_shape)), _fmt_int(layer.params),
                     *((_fmt_int(layer.trainable),) if frozen else ()),
                     _fmt_macs(layer.macs) if layer.macs else "-", str(layer.rf) if layer.rf is not None else "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    right = set(range(3, len(rows[0])))
    lines = []
    for j, r in enumerate(rows):
        lines.append("  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip())
        if j == 0:
            lines.append("-" * len(lines[0]))
    lines.append("-" * len(lines[0]))
    lines.append(f"model: {name}")
    lines.append(f"input: {'x'.join(map(str, tr.input_shape))}   output: {'x'.join(map(str, tr.output_shape))}")
    lines.append(f"total params: {_fmt_int(tr.total_params)}   trainable: {_fmt_int(tr.trainable_params)}")
    lines.append(f"mult-adds: {_fmt_int(tr.total_macs)} ({_fmt_macs(tr.total_macs)}; conv + fc, one image)")
    return "\n".join(lines)


def cmd_models(args) -> int:
    from fovea.models.registry import list_models, model_family

    names = list_models(args.pattern)
    if not names:
        raise UserError(f"no model matches {args.pattern!r}; `fovea models` lists them all")
    if args.json:
        print(json.dumps([dict(name=n, family=model_family(n)) for n in names], indent=2))
    else:
        for n in names:
            print(f"{n:24s} {model_family(n)}")
    return 0


def run_model_for_summary(run_dir: Path):
    """A trained run's network with the freeze policy of its config applied."""
    from fovea.tasks.classify import load_classifier
    from fovea.train.finetune import apply_freeze

    model, info = load_classifier(run_dir)
    cfg = json.loads((run_dir / "config.json").read_text())
    modules = [m.strip() for m in (cfg.get("freeze_modules") or "").split(",") if m.strip()]
    shape = (info["in_channels"], *info["image_size"])
    apply_freeze(model.net, cfg.get("freeze", "none"), cfg.get("freeze_until"), modules, input_shape=shape)
    return model.net, shape


def build_for_summary(name: str, input_text: str | None, num_classes: int | None):
    from fovea.models.registry import create_model, is_spec, list_models, model_family

    if Path(name).is_dir():
        net, shape = run_model_for_summary(Path(name))
        return net, parse_input_shape(input_text) if input_text else shape

    shape = parse_input_shape(input_text) if input_text else None
    kwargs = {}
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if shape is not None:
        kwargs["in_channels"] = shape[0]
    if shape is not None and len(shape) == 4 and name in list_models() and model_family(name) == "video":
        kwargs["clip"] = shape[1:]  # video models size their layers for the clip (T, H, W)
    if name not in list_models() and is_spec(name):
        if shape is None:
            raise UserError("a spec string needs --input CxHxW to size its first fully connected layer")
        kwargs["input_size"] = shape[1:]
    model = create_model(name, **kwargs)
    expected = default_input_shape(model, None)
    if shape is not None and len(shape) != len(expected):
        want = {3: "CxHxW", 4: "CxTxHxW"}.get(len(expected), "x".join("N" * len(expected)))
        raise UserError(f"--input {input_text!r} has {len(shape)} dimensions; {name} expects {want} "
                        f"such as {'x'.join(map(str, expected))}")
    return model, shape or expected


def cmd_summary(args) -> int:
    from fovea.arith import trace

    model, shape = build_for_summary(args.model, args.input, args.num_classes)
    tr = trace(model, shape)
    if args.json is not None:
        text = json.dumps(dict(model=args.model, **tr.as_dict()), indent=2)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
            print(f"wrote {args.json}")
    else:
        print(format_summary(args.model, tr))
    return 0


def register(sub) -> None:
    p = sub.add_parser("models", help="list registered models")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style pattern, e.g. 'resnet*'")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("summary", help="per-layer output shapes, parameters, multiply-adds, receptive fields")
    p.add_argument("model", help="registered model name, spec string or run directory")
    p.add_argument("--input", help="input shape CxHxW (default: the model's canonical input)")
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                   help="write JSON (to FILE, or stdout when no FILE is given)")
    p.set_defaults(func=cmd_summary)


