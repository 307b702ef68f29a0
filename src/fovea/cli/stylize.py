"""`fovea stylize` (neural style, or a trained style network with --net) and `fovea dream`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from fovea.errors import UserError


def _read(path: str, what: str) -> torch.Tensor:
    """An image file as (3, H, W) floats in [0, 1] (grey repeated to 3 channels)."""
    from fovea.data.decode import load_image

    if not Path(path).is_file():
        raise UserError(f"{what} image {path!r} not found")
    return load_image(path, channels=3).float().div(255)


def _png_out(out: str) -> Path:
    path = Path(out)
    if path.suffix.lower() != ".png":
        raise UserError(f"--out {out!r}: expected a .png file name")
    if not path.parent.is_dir():
        raise UserError(f"--out {out!r}: folder {str(path.parent)!r} not found")
    return path


def _check_size(size: int, flag: str = "--size") -> int:
    if not 16 <= size <= 4096:
        raise UserError(f"{flag} {size}: expected a side length from 16 to 4096 pixels")
    return size


def cmd_stylize(args) -> int:
    if args.net:
        from fovea.tasks.stylenet import stylize_inputs

        if args.size is not None:
            _check_size(args.size)
        stylize_inputs(args.net, args.inputs, args.out, size=args.size)
        return 0
    if len(args.inputs) != 2:
        raise UserError(f"expected CONTENT STYLE (two images), received {len(args.inputs)} "
                        f"({' '.join(args.inputs)}); a trained style network takes --net RUN INPUT...")
    from fovea.apps.stylize import GATYS_CONTENT, GATYS_STYLE, StyleConfig, load_vgg, stylize
    from fovea.cli.restore import write_png

    out = _png_out(args.out)
    content, style = _read(args.inputs[0], "content"), _read(args.inputs[1], "style")
    if args.scales:
        sizes = tuple(_check_size(s, "--scales") for s in args.scales)
        if args.size is not None and args.size != sizes[-1]:
            raise UserError(f"--size {args.size} and --scales {' '.join(map(str, sizes))}: the last scale is the "
                            "result's size; give one of them or make them agree")
    else:
        sizes = (_check_size(args.size if args.size is not None else 256),)
    if args.save_every is not None and args.save_every < 1:
        raise UserError(f"--save-every {args.save_every}: expected a number of steps >= 1")
    cfg = StyleConfig(
        content_layers=tuple(args.content_layer or GATYS_CONTENT), style_layers=tuple(args.style_layers or GATYS_STYLE),
        style_layer_weights=tuple(args.style_layer_weights) if args.style_layer_weights else None,
        content_weight=args.content_weight, style_weight=args.style_weight, tv_weight=args.tv_weight,
        steps=args.steps, optimizer=args.optimizer, lr=args.lr, init=args.init, init_noise=args.init_noise,
        sizes=sizes, preserve_color=args.preserve_color, seed=args.seed)
    cfg.check()
    torch.manual_seed(args.seed)
    net, normalize, source = load_vgg(args.weights, args.model, args.seed)
    from fovea.apps.stylize import StyleLoss

    StyleLoss(net, normalize, cfg)  # unknown layer names end here, before any work
    saved: list[str] = []

    def on_step(k: int, step: int, image: torch.Tensor, loss: float) -> None:
        if args.save_every and (step % args.save_every == 0 or step == cfg.steps):
            h, w = image.shape[-2:]
            path = out.with_name(f"{out.stem}-{max(h, w)}px-step{step:04d}.png")
            write_png(image[0].clamp(0, 1), path)
            saved.append(str(path))
            if not args.json:
                print(f"  scale {k + 1}/{len(sizes)} ({w}x{h}) step {step}: loss {loss:.6g} -> {path}")

    result = stylize(content, style, net, normalize, cfg, on_step=on_step)
    write_png(result.image, out)
    h, w = result.image.shape[-2:]
    summary = dict(out=str(out), network=source, size=[h, w], scales=[list(s) for s in result.sizes],
                   steps=cfg.steps, iterations=result.iterations, optimizer=cfg.optimizer,
                   first_loss=result.losses[0], final_loss=result.final_loss,
                   parts=result.parts, evaluations=result.evaluations, seconds=round(result.seconds, 3),
                   intermediate=saved)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{args.inputs[0]} in the style of {args.inputs[1]} ({source}): {w}x{h}, {cfg.steps} {cfg.optimizer} "
              f"steps x {len(sizes)} scale(s), loss {result.losses[0]:.6g} -> {result.final_loss:.6g} "
              f"in {result.seconds:.1f} s: {out}")
    return 0


def cmd_dream(args) -> int:
    from fovea.apps.stylize import DreamConfig, OnPixels, deep_dream, load_classifier_net, resize_long_side
    from fovea.cli.restore import write_png

    out = _png_out(args.out)
    layer = None if args.layer in (None, "none") and args.target is not None else (args.layer or "inception4c")
    cfg = DreamConfig(layer=layer, target=args.target, objective=args.objective, octaves=args.octaves,
                      octave_scale=args.octave_scale, steps=args.steps, lr=args.lr, jitter=args.jitter, seed=args.seed)
    cfg.check()
    if args.image == "noise":
        size = _check_size(args.size or 224)
        g = torch.Generator().manual_seed(args.seed)
        image = 0.5 + 0.1 * torch.randn(1, 3, size, size, generator=g)  # grey plus white noise
        image = image.clamp(0, 1)
    else:
        image = _read(args.image, "input")[None]
        if args.size is not None:
            image = resize_long_side(image, _check_size(args.size))
    torch.manual_seed(args.seed)
    net, normalize, source = load_classifier_net(args.model, args.weights, args.seed)
    if cfg.layer is not None:
        from fovea.apps.stylize import resolve_module

        resolve_module(net, cfg.layer)
    if args.weights == "random" and not Path(args.model).is_dir():
        from fovea.apps.stylize import calibrate_batchnorm

        calibrate_batchnorm(net, normalize(image))  # else random GoogLeNet's deep activations vanish
    result = deep_dream(OnPixels(net, normalize), image, cfg)
    write_png(result.image, out)
    what = f"layer {cfg.layer} ({cfg.objective})" if cfg.layer else f"class {cfg.target}"
    summary = dict(out=str(out), network=source, objective=what, start=result.start_objective,
                   final=result.final_objective, seconds=round(result.seconds, 3))
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{args.image}: DeepDream on {what} of {source}, {cfg.octaves} octaves x {cfg.steps} steps, objective "
              f"{result.start_objective:.4g} -> {result.final_objective:.4g} in {result.seconds:.1f} s: {out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stylize", help="neural style (Gatys et al.): CONTENT in the style of STYLE; or, with --net, "
                                       "a trained style network on images and videos")
    p.add_argument("inputs", nargs="+", metavar="IMAGE",
                   help="CONTENT STYLE; with --net, images and videos to stylize")
    p.add_argument("--out", required=True, help="PNG to write (with --net: a file for one input, else a folder)")
    p.add_argument("--net", metavar="RUN", help="run directory of `fovea train stylenet`: stylize INPUT... with it")
    p.add_argument("--size", type=int, help="longer side of the result in pixels (default 256; with --net: the "
                                            "input's own size)")
    p.add_argument("--steps", type=int, default=300, help="optimizer steps at each scale (default 300)")
    p.add_argument("--weights", default="torchvision",
                   help="VGG weights: torchvision (ImageNet), random, a weights file, or a classify run directory")
    p.add_argument("--model", default="vgg19", help="VGG of the loss (default vgg19)")
    p.add_argument("--optimizer", choices=("lbfgs", "adam"), default="lbfgs",
                   help="lbfgs: L-BFGS-B with pixels bounded to [0, 1] (default); adam: Adam, pixels clamped")
    p.add_argument("--lr", type=float, help="Adam's step size (default 0.02)")
    p.add_argument("--content-layer", nargs="+", metavar="LAYER", help="content layer(s) (default relu4_2)")
    p.add_argument("--style-layers", nargs="+", metavar="LAYER",
                   help="style layers (default relu1_1 relu2_1 relu3_1 relu4_1 relu5_1)")
    p.add_argument("--style-layer-weights", nargs="+", type=float, metavar="W",
                   help="one weight w_l per style layer (default 1 / number of layers)")
    p.add_argument("--content-weight", type=float, default=1.0, help="alpha (default 1)")
    p.add_argument("--style-weight", type=float, default=100.0,
                   help="beta (default 100; the paper's figures use alpha/beta 1e-5 to 1e-2)")
    p.add_argument("--tv-weight", type=float, default=0.0, help="weight of the total-variation regularizer")
    p.add_argument("--init", choices=("photo", "noise"), default="photo",
                   help="start from the photo plus white noise (default) or from white noise")
    p.add_argument("--init-noise", type=float, default=0.1, help="std of the noise added to the photo (default 0.1)")
    p.add_argument("--preserve-color", choices=("luminance", "histogram"),
                   help="keep the photo's colours: style on luminance only, or the style recoloured to the photo's")
    p.add_argument("--scales", nargs="+", type=int, metavar="PIXELS",
                   help="coarse-to-fine sizes (longer side), e.g. 128 256; the last is the result's")
    p.add_argument("--save-every", type=int, metavar="K",
                   help="also write the image every K steps (OUT-<size>px-stepN.png)")
    p.add_argument("--seed", type=int, default=0, help="noise (and random weights) seed")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=cmd_stylize)

    p = sub.add_parser("dream", help="DeepDream: gradient ascent on an image to amplify what a layer (or a class) sees")
    p.add_argument("image", help="image file, or `noise` to start from grey plus white noise")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--layer", help="module to amplify (default inception4c; on a VGG also relu4_1 etc.)")
    p.add_argument("--class", dest="target", type=int, metavar="N",
                   help="raise the score of class N instead of a layer")
    p.add_argument("--objective", choices=("mean_square", "mean"), default="mean_square")
    p.add_argument("--model", default="googlenet", help="registered classifier name or a classify run directory")
    p.add_argument("--weights", default="torchvision",
                   help="torchvision (ImageNet), random (batch norm statistics measured on the image), "
                        "or a weights file")
    p.add_argument("--octaves", type=int, default=4)
    p.add_argument("--octave-scale", type=float, default=1.4)
    p.add_argument("--steps", type=int, default=10, help="gradient steps per octave")
    p.add_argument("--lr", type=float, default=0.01, help="step size along the normalized gradient")
    p.add_argument("--jitter", type=int, default=32, help="largest random shift in pixels")
    p.add_argument("--size", type=int, help="longer side in pixels (resizes the image; noise: default 224)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=cmd_dream)
