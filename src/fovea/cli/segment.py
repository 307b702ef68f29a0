"""`fovea segment`: label every pixel of an image with a trained segmentation run."""

from __future__ import annotations

from pathlib import Path

from fovea.errors import UserError


def _check_output(path: Path, what: str) -> None:
    if path.is_dir():
        raise UserError(f"{what} {str(path)!r} is a directory; expected a .png file path")
    if path.suffix.lower() != ".png":
        raise UserError(f"{what} {str(path)!r}: expected a .png file")
    if not path.parent.is_dir():
        raise UserError(f"{what} {str(path)!r}: folder {str(path.parent)!r} does not exist")


def cmd_segment(args) -> int:
    import numpy as np
    import torch
    from PIL import Image

    from fovea.data.decode import load_image
    from fovea.data.masks import overlay_mask, write_mask, write_png
    from fovea.tasks.segment import inference_tile, load_segmenter, predict_scores

    out = Path(args.out)
    overlay = None
    if args.overlay is not None:
        overlay = Path(args.overlay) if args.overlay else out.with_name(out.stem + "-overlay.png")
    _check_output(out, "--out")
    if overlay is not None:
        _check_output(overlay, "--overlay")
        if overlay.resolve() == out.resolve():
            raise UserError(f"--overlay {str(overlay)!r} is the --out file; expected another path")
    image_path = Path(args.image)
    if not image_path.is_file():
        raise UserError(f"image {str(image_path)!r} not found")
    model, info = load_segmenter(args.run)
    image = load_image(image_path, channels=info["in_channels"])  # BadImageError (a UserError) if unreadable
    with torch.no_grad():
        scores = predict_scores(model, image[None].float().div(255), tile=inference_tile(model, info))
    mask = scores[0].float().argmax(0).to(torch.uint8)
    # everything is computed before anything is written, so a failure leaves existing files as they were
    picture = overlay_mask(image, mask) if overlay is not None else None
    write_mask(out, mask)
    if picture is not None:
        write_png(overlay, Image.fromarray(picture))
    classes = info.get("classes") or [str(i) for i in range(info["num_classes"])]
    counts = np.bincount(mask.flatten().numpy(), minlength=len(classes))
    share = ", ".join(f"{classes[i]} {100 * c / mask.numel():.1f}%" for i, c in enumerate(counts) if c)
    print(f"{image_path}: {mask.shape[1]}x{mask.shape[0]} -> {out} ({share})"
          + (f"; overlay {overlay}" if overlay is not None else ""))
    return 0


def register(sub) -> None:
    p = sub.add_parser("segment", help="a class for every pixel of an image, with a trained segmentation run")
    p.add_argument("run", help="run directory of `fovea train segment`")
    p.add_argument("image", help="image file, any size")
    p.add_argument("--out", required=True, help="mask PNG to write: class ids as palette indices (VOC colours)")
    p.add_argument("--overlay", nargs="?", const="", default=None, metavar="PNG",
                   help="also write the mask drawn over the image (default path: OUT's name + -overlay.png)")
    p.set_defaults(func=cmd_segment)
