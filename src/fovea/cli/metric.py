"""`fovea embed` and `fovea verify`: use a trained metric-learning run."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from fovea.errors import UserError


def _load(paths: list[str], info: dict) -> tuple[torch.Tensor, list[str], list[str]]:
    """Images at the run's channel count and size; a note for each image converted."""
    from fovea.cli.generative import _load_images

    return _load_images(paths, info["in_channels"], tuple(info["image_size"]))


def _embed(model, x: torch.Tensor, branch: str, domain: str | None) -> torch.Tensor:
    from fovea.data.domains import to_domain

    with torch.no_grad():
        return torch.cat([model.embed(to_domain(c, domain) if domain else c, branch) for c in x.split(256)])


def cmd_embed(args) -> int:
    from safetensors.torch import save_file

    from fovea.tasks.metric import load_metric_model

    model, info = load_metric_model(args.run)
    x, files, notes = _load(args.images, info)
    for note in notes[:5]:
        print(note)
    if len(notes) > 5:
        print(f"... and {len(notes) - 5} more conversions")
    branch = args.branch
    domain = info.get("domain") if branch == "a" and info.get("domain") and args.as_domain else None
    emb = _embed(model, x, branch, domain)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    save_file({"embeddings": emb.contiguous()}, str(tmp),
              metadata={"format": "fovea-embeddings/1", "run": str(args.run), "branch": branch,
                        "paths": json.dumps(files)})
    tmp.replace(out)  # an existing file is replaced only by a complete one
    print(f"{len(files)} embeddings of {emb.shape[1]} dims (branch {branch}): {out}")
    return 0


def cmd_verify(args) -> int:
    from fovea.tasks.metric import load_metric_model

    model, info = load_metric_model(args.run)
    x, files, notes = _load([args.image_a, args.image_b], info)
    if len(files) != 2:
        raise UserError(f"verify takes two image files, got {len(files)} images from {args.image_a}, {args.image_b}")
    for note in notes:
        print(note)
    domain = info.get("domain")
    a = _embed(model, x[:1], "a", domain if args.sketch else None)
    b = _embed(model, x[1:], "b" if domain else "a", None)
    d = float((a - b).norm())
    threshold = args.threshold if args.threshold is not None else info.get("threshold")
    if threshold is None:
        raise UserError(f"run {args.run!r} records no verification threshold; give --threshold")
    same = d <= threshold
    if args.json:
        print(json.dumps(dict(distance=d, threshold=threshold, same=same)))
    else:
        print(f"distance: {d:.4f}")
        print(f"{'same' if same else 'different'} (threshold {threshold:.4f}, chosen on validation pairs)")
    return 0


def register(sub) -> None:
    p = sub.add_parser("embed", help="embed images with a metric-learning run")
    p.add_argument("run", help="metric-learning run directory")
    p.add_argument("images", nargs="+", help="image files or folders")
    p.add_argument("--out", required=True, help="safetensors file of embeddings (paths in its metadata)")
    p.add_argument("--branch", choices=["a", "b"], default="a", help="which branch embeds (cross-domain runs)")
    p.add_argument("--as-domain", action="store_true", help="cross-domain runs: map the images to the run's "
                                                             "domain (sketch) before branch a")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("verify", help="are two images of the same class? distance and decision")
    p.add_argument("run", help="metric-learning run directory")
    p.add_argument("image_a")
    p.add_argument("image_b")
    p.add_argument("--threshold", type=float, help="default: the one chosen on validation pairs at training")
    p.add_argument("--sketch", action="store_true", help="cross-domain runs: map image A to the sketch domain")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_verify)


__all__ = ["register"]
