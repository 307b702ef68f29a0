"""`fovea explain`: filters, feature maps, CAM, Grad-CAM, occlusion, saliency and class models of a
trained classifier (a run directory, or a registered model name with --weights)."""

from __future__ import annotations

from pathlib import Path

from fovea.errors import UserError


def _npy_path(args) -> Path | None:
    if args.npy is None:
        return None
    return Path(args.out).with_suffix(".npy") if args.npy is True else Path(args.npy)


def cmd_explain(args) -> int:
    from fovea.apps.explain import explain, load_subject, save_explanation

    if args.max_maps < 1:
        raise UserError(f"--max-maps must be at least 1; received {args.max_maps}")
    subject = load_subject(args.run, args.weights)
    x = None
    if args.image is not None:
        x, note = subject.load_image(args.image)
        if note:
            print(f"note: {note}")
    e = explain(subject, args.method, x, layer=args.layer, target=args.target, unit=args.unit, patch=args.patch,
                stride=args.stride, steps=args.steps, lr=args.lr, l2=args.l2)
    written = save_explanation(e, args.out, _npy_path(args), max_maps=args.max_maps)
    print(e.title)
    for path in written:
        print(f"wrote {path}")
    return 0


def register(sub) -> None:
    from fovea.apps.explain import METHODS

    p = sub.add_parser("explain", help="see inside a classifier: filters, feature maps, CAM, Grad-CAM, occlusion, "
                                       "saliency, class models")
    p.add_argument("run", metavar="RUN", help="run directory, or a registered model name with --weights")
    p.add_argument("image", metavar="IMAGE", nargs="?",
                   help="image file (converted to the model's channels and input size); not needed for filters")
    p.add_argument("--method", required=True, choices=METHODS)
    p.add_argument("--out", required=True, metavar="FILE.png", help="picture to write")
    p.add_argument("--npy", nargs="?", const=True, metavar="FILE.npy",
                   help="also write the raw map (default path: --out with .npy)")
    p.add_argument("--layer", help="module name as in named_modules() (default: the last spatial map before "
                                   "global pooling; for filters: the first convolution)")
    p.add_argument("--target", metavar="CLASS", help="class index or name (default: the predicted class)")
    p.add_argument("--weights", help="for a model name: torchvision (ImageNet) or a weights file")
    p.add_argument("--patch", type=int, help="occlusion: side of the grey square (default: 1/6 of the image)")
    p.add_argument("--stride", type=int, help="occlusion: step between placements (default: half the patch)")
    p.add_argument("--unit", type=int, help="classmodel with --layer: the channel to maximize")
    p.add_argument("--steps", type=int, default=200, help="classmodel: gradient-ascent steps")
    p.add_argument("--lr", type=float, default=0.05, help="classmodel: Adam step size")
    p.add_argument("--l2", type=float, default=0.1, help="classmodel: weight of ||x - grey||^2")
    p.add_argument("--max-maps", type=int, default=64, help="featuremaps: at most this many channels")
    p.set_defaults(func=cmd_explain)
