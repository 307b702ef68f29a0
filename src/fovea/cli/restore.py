"""`fovea upscale` and `fovea denoise`: apply a trained super-resolution or denoising run."""

from __future__ import annotations

from pathlib import Path

import torch

from fovea.errors import UserError


def _read_image(path: str) -> torch.Tensor:
    """The image as floats in [0, 1], (1 or 3, H, W) as stored (grey stays grey)."""
    from fovea.data.decode import load_image

    if not Path(path).is_file():
        raise UserError(f"image {path!r} not found")
    return load_image(path).float().div(255)


def _out_path(out: str | None, image: str, suffix: str) -> Path:
    path = Path(out) if out else Path(Path(image).stem + suffix + ".png")
    if path.suffix.lower() != ".png":
        raise UserError(f"--out {str(path)!r}: expected a .png file name")
    if not path.parent.is_dir():
        raise UserError(f"--out {str(path)!r}: folder {str(path.parent)!r} not found")
    return path


def write_png(image: torch.Tensor, path: Path) -> Path:
    """A (1 or 3, H, W) image in [0, 1] as an 8-bit PNG, written to a temp file beside ``path``
    and renamed over it, so an existing file is never left half written."""
    from PIL import Image

    from fovea.train.checkpoint import atomic_write

    pixels = image.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    pil = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
    return atomic_write(path, lambda f: pil.save(f, format="PNG"))


def cmd_upscale(args) -> int:
    from fovea.tasks.restore import load_restorer, upscale_image

    model, info = load_restorer(args.run, "superres")
    scale = int(info["scale"])
    if args.scale is not None and args.scale != scale:
        raise UserError(f"--scale {args.scale}: run {args.run!r} was trained for x{scale}; "
                        f"upscale by {scale} or train with --scale {args.scale}")
    out = _out_path(args.out, args.image, f"-x{scale}")
    image = _read_image(args.image)
    result = upscale_image(model, image, scale)
    write_png(result, out)
    h, w = image.shape[-2:]
    print(f"{args.image}: {w}x{h} -> {result.shape[-1]}x{result.shape[-2]} (x{scale}, {info['model']}): {out}")
    return 0


def cmd_denoise(args) -> int:
    from fovea.apps.image_quality import psnr
    from fovea.tasks.restore import add_noise, denoise_image, load_restorer

    model, info = load_restorer(args.run, "denoise")
    if args.add_noise is not None and not 0 < args.add_noise <= 255:
        raise UserError(f"--add-noise {args.add_noise}: expected a standard deviation in (0, 255] (0-255 units)")
    out = _out_path(args.out, args.image, "-denoised")
    image = _read_image(args.image)
    noisy = image
    if args.add_noise is not None:
        noisy = add_noise(image, args.add_noise, torch.Generator().manual_seed(args.seed))
    result = denoise_image(model, noisy)
    write_png(result, out)
    h, w = image.shape[-2:]
    line = f"{args.image}: {w}x{h} denoised by {info['model']} (trained at sigma {info['sigma']:g}): {out}"
    if args.add_noise is not None:
        before, after = float(psnr(noisy.clamp(0, 1), image)), float(psnr(result, image))
        line += f"\n  noise sigma {args.add_noise:g} added: PSNR {before:.2f} dB noisy, {after:.2f} dB denoised"
    print(line)
    return 0


def register(sub) -> None:
    p = sub.add_parser("upscale", help="super-resolve an image with a trained superres run (SRCNN on Y, "
                                       "bicubic Cb and Cr)")
    p.add_argument("run", help="run directory of `fovea train superres`")
    p.add_argument("image", help="image file (any size, grey or colour)")
    p.add_argument("--out", help="PNG to write (default IMAGE-xSCALE.png in the current folder)")
    p.add_argument("--scale", type=int, help="check that the run upscales by this factor")
    p.set_defaults(func=cmd_upscale)

    p = sub.add_parser("denoise", help="remove Gaussian noise from an image with a trained denoise run")
    p.add_argument("run", help="run directory of `fovea train denoise`")
    p.add_argument("image", help="image file (any size; a grey model denoises each colour channel on its own)")
    p.add_argument("--out", help="PNG to write (default IMAGE-denoised.png in the current folder)")
    p.add_argument("--add-noise", type=float, metavar="SIGMA",
                   help="first add Gaussian noise of this standard deviation (0-255 units) to a clean image, "
                        "and print the PSNR before and after")
    p.add_argument("--seed", type=int, default=0, help="seed of --add-noise")
    p.set_defaults(func=cmd_denoise)


__all__ = ["register", "write_png"]
