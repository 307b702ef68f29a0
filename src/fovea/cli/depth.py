"""`fovea depth`: disparity of a rectified stereo pair with a trained depth run."""

from __future__ import annotations

import io
import json
from pathlib import Path

from fovea.errors import UserError


def _write_png(array, path: Path) -> None:
    """An (H, W) uint16 or (H, W, 3) uint8 array as a PNG, written atomically."""
    from PIL import Image

    from fovea.train.checkpoint import atomic_write

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    atomic_write(path, lambda f: f.write(buf.getvalue()))


def _write_npy(array, path: Path) -> None:
    import numpy as np

    from fovea.train.checkpoint import atomic_write

    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    atomic_write(path, lambda f: f.write(buf.getvalue()))


def cmd_depth(args) -> int:
    import numpy as np

    from fovea.data.stereo import load_pair
    from fovea.tasks.depth import disparity_to_color, load_depth_model, predict_disparity

    if args.vmax is not None and not args.vmax > 0:
        raise UserError(f"--vmax {args.vmax}: expected a positive disparity in pixels")
    for out in (args.out, args.npy):
        if out and Path(out).is_dir():
            raise UserError(f"output {out!r} is a folder; expected a file name")
    model, info = load_depth_model(args.run)  # first: a wrong run fails before the images are read
    left, right = load_pair(args.left, args.right)
    disp = predict_disparity(model, left, right, int(info.get("scale", 1)))[0].numpy().astype(np.float32)
    if args.format == "uint16":  # KITTI's convention: pixels x 256, 0 = no value
        png = np.clip(np.round(disp * 256.0), 1, 65535).astype(np.uint16)
        vmax = None
    else:
        vmax = float(args.vmax or max(float(disp.max()), 1e-6))
        png = disparity_to_color(disp, vmax)
    _write_png(png, Path(args.out))
    if args.npy:
        _write_npy(disp, Path(args.npy))
    summary = dict(out=args.out, npy=args.npy, height=int(disp.shape[0]), width=int(disp.shape[1]),
                   min=float(disp.min()), max=float(disp.max()), mean=float(disp.mean()), vmax=vmax)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"disparity {disp.shape[0]}x{disp.shape[1]}: {disp.min():.2f}-{disp.max():.2f} px (mean "
              f"{disp.mean():.2f}) -> {args.out}" + (f", {args.npy}" if args.npy else ""))
    return 0


def register(sub) -> None:
    p = sub.add_parser("depth", help="disparity of a rectified stereo pair with a trained depth run")
    p.add_argument("run", help="run directory of `fovea train depth`")
    p.add_argument("left", help="left image")
    p.add_argument("right", help="right image (same size, rectified)")
    p.add_argument("--out", required=True, help="PNG of the left view's disparity")
    p.add_argument("--npy", help="also write the disparity in pixels as a float32 (H, W) .npy")
    p.add_argument("--format", choices=["color", "uint16"], default="color",
                   help="color: colour-mapped on [0, --vmax]; uint16: 16-bit PNG of disparity x 256 (KITTI)")
    p.add_argument("--vmax", type=float, help="disparity at the top of the colour map (default: the largest)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_depth)
