"""`fovea attack`: an adversarial example or a fooling image for a trained classifier run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from fovea.errors import UserError

DEFAULT_EPS = {"linf": 0.1, "l2": 1.0}


def class_index(text: str, classes: list[str]) -> int:
    """A class given by name or by index."""
    if text in classes:
        return classes.index(text)
    try:
        i = int(text)
    except ValueError:
        i = None
    if i is not None and 0 <= i < len(classes):
        return i
    shown = ", ".join(classes[:10]) + (", ..." if len(classes) > 10 else "")
    raise UserError(f"--target {text!r} is not a class of this model; expected an index 0..{len(classes) - 1} "
                    f"or a name ({shown})")


def _prediction(model, x: torch.Tensor, classes: list[str], target: int | None) -> dict:
    with torch.no_grad():
        p = model(x).float().softmax(1)[0]
    i = int(p.argmax())
    out = dict(cls=classes[i], index=i, prob=float(p[i]))
    if target is not None:
        out["target_prob"] = float(p[target])
    return out


def _describe(tag: str, pred: dict, classes: list[str], target: int | None) -> str:
    line = f"{tag}: {pred['cls']} {pred['prob']:.3f}"
    if target is not None and pred["index"] != target:
        line += f"  (target {classes[target]}: {pred['target_prob']:.3f})"
    return line


def cmd_attack(args) -> int:
    from fovea.apps import adversarial as adv
    from fovea.data.decode import load_image
    from fovea.report.plots import save_image
    from fovea.tasks.classify import load_classifier

    if args.steps is not None and args.steps < 1:
        raise UserError(f"--steps {args.steps} must be at least 1")
    if args.eps is not None and not args.eps >= 0:
        raise UserError(f"--eps {args.eps} must be >= 0")
    if args.alpha is not None and not args.alpha > 0:
        raise UserError(f"--alpha {args.alpha} must be > 0")
    if not 0 < args.confidence < 1:
        raise UserError(f"--confidence {args.confidence} must be in (0, 1)")
    if args.image is not None and not Path(args.image).is_file():
        raise UserError(f"image {args.image!r} not found")
    model, info = load_classifier(args.run)
    classes, size, channels = list(info["classes"]), tuple(info["image_size"]), info["in_channels"]
    target = class_index(args.target, classes) if args.target is not None else None
    generator = torch.Generator().manual_seed(args.seed)
    image = load_image(args.image, channels=channels, size=size).float().div(255)[None] if args.image else None

    if args.method == "fooling":
        if target is None:
            raise UserError("--method fooling needs --target CLASS, the class the image should be taken for")
        if image is not None:
            x = image
        elif args.start == "noise":
            x = adv.quantize(torch.rand((1, channels, *size), generator=generator))
        else:
            x = torch.full((1, channels, *size), 0.5)
        x_adv, conf, steps = adv.fooling_image(model, target, (channels, *size), steps=args.steps or 500,
                                               lr=args.alpha or 0.01, confidence=args.confidence, start=x[0])
        x_adv = x_adv[None]
        extra = dict(confidence=conf, steps=steps, reached=conf >= args.confidence)
    else:
        if image is None:
            raise UserError(f"--method {args.method} needs an IMAGE to perturb")
        x = image
        eps = args.eps if args.eps is not None else DEFAULT_EPS[args.norm]
        y = torch.tensor([_prediction(model, x, classes, None)["index"]])  # move away from the model's own answer
        if args.method == "fgsm":
            x_adv = adv.fgsm(model, x, y, eps, target=target, norm=args.norm)
        else:
            x_adv = adv.pgd(model, x, y, eps, steps=args.steps or 10, alpha=args.alpha, norm=args.norm,
                            random_start=args.random_start, target=target, generator=generator)
        extra = dict(eps=eps, norm=args.norm)
    # the image as the PNG holds it; an attack's change is rounded toward the original, to stay within eps
    x_adv = adv.quantize(x_adv, reference=None if args.method == "fooling" else x)
    before = _prediction(model, x, classes, target)
    after = _prediction(model, x_adv, classes, target)
    delta = (x_adv - x)[0]
    out = save_image(x_adv[0], args.out)
    result = dict(method=args.method, before=before, after=after, target=classes[target] if target is not None else None,
                  linf=float(delta.abs().max()), l2=float(delta.norm()), out=str(out), **extra)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    start_name = "image" if image is not None else args.start
    print(_describe("before" if args.method != "fooling" else f"start ({start_name})", before, classes, target))
    print(_describe("after", after, classes, target))
    if args.method == "fooling":
        verdict = "reached" if extra["reached"] else "did not reach"
        print(f"{verdict} {args.confidence:.0%} confidence for {classes[target]} in {extra['steps']} steps"
              + ("" if extra["reached"] else "; try more --steps or a larger --alpha"))
    else:
        print(f"perturbation: L-inf {result['linf']:.4f} ({result['linf'] * 255:.1f}/255), L2 {result['l2']:.4f}"
              f"  ({args.method}, {args.norm}, eps {extra['eps']:g})")
    print(f"wrote {out}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("attack", help="adversarial example (FGSM, PGD) or fooling image for a trained classifier")
    p.add_argument("run", help="run directory of a classifier")
    p.add_argument("image", nargs="?", help="image to perturb (for fooling: optional start instead of noise)")
    p.add_argument("--method", required=True, choices=["fgsm", "pgd", "fooling"])
    p.add_argument("--eps", type=float, help="size of the perturbation (default 0.1 for linf, 1.0 for l2; "
                                            "pixels in [0, 1])")
    p.add_argument("--norm", default="linf", choices=["linf", "l2"])
    p.add_argument("--steps", type=int, help="PGD steps (default 10); fooling: most steps (default 500)")
    p.add_argument("--alpha", type=float, help="step size (PGD default 2.5 * eps / steps; fooling default 0.01)")
    p.add_argument("--random-start", action=argparse.BooleanOptionalAction, default=True,
                   help="PGD: start from a random point of the eps-ball (default on)")
    p.add_argument("--target", metavar="CLASS", help="class name or index to move toward (targeted attack)")
    p.add_argument("--confidence", type=float, default=0.99, help="fooling: stop at this probability (default 0.99)")
    p.add_argument("--start", default="noise", choices=["noise", "grey"], help="fooling: start image (default noise)")
    p.add_argument("--seed", type=int, default=0, help="seeds the random start and the noise")
    p.add_argument("--out", required=True, help="PNG file for the adversarial image")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_attack)


__all__ = ["class_index", "register"]
