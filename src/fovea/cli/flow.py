"""`fovea flow`: optical flow between two frames with a trained FlowNet run.

    fovea flow RUN FRAME1 FRAME2 --out flow.flo [--png flow.png] [--size HxW] [--max-flow PX]

The frames may have any size (the same for both): FlowNet pads them to a multiple of 64 and
crops its output back. ``--size HxW`` runs the network on frames resized to that size instead
(for motion at the scale the run was trained on) and resizes the flow back, its vectors scaled.
The flow is written as a Middlebury ``.flo`` file, and with ``--png`` as a colour-coded image
(the Middlebury wheel); both atomically.
"""

from __future__ import annotations

import re

import torch

from fovea.errors import UserError


def _size(text: str) -> tuple[int, int]:
    import argparse

    m = re.fullmatch(r"(\d+)(?:x(\d+))?", text)
    if not m or int(m[1]) < 1 or int(m[2] or m[1]) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected HxW or S, e.g. 64x64")
    return int(m[1]), int(m[2] or m[1])


def _max_flow(text: str) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive number of pixels")
    return value


def load_frames(path1: str, path2: str) -> torch.Tensor:
    """The two frames as one (1, 6, H, W) float batch in [0, 1]; frames of different sizes, or a
    file that is not an image, end in one line."""
    from fovea.data.decode import load_image, probe_image

    (h1, w1), _ = probe_image(path1)
    (h2, w2), _ = probe_image(path2)
    if (h1, w1) != (h2, w2):
        raise UserError(f"frames {path1!r} ({h1}x{w1}) and {path2!r} ({h2}x{w2}) differ in size; "
                        "expected two frames of the same size")
    pair = torch.cat([load_image(path1, channels=3), load_image(path2, channels=3)])
    return pair[None].float().div(255)


@torch.no_grad()
def estimate_flow(model, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """(2, H, W) flow of a (1, 6, H, W) pair; with ``size`` computed at that size and resized back."""
    import torch.nn.functional as F

    from fovea.losses.flow import resize_flow

    h, w = x.shape[-2:]
    if size is None or tuple(size) == (h, w):
        return model(x)[0].float()
    small = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=size[0] < h or size[1] < w)
    return resize_flow(model(small).float(), (h, w), mode="bilinear")[0]


def write_flow_png(path, flow: torch.Tensor, max_flow: float | None = None):
    """The flow colour-coded with the Middlebury wheel, as a PNG written atomically."""
    import io

    from PIL import Image

    from fovea.report.flowviz import flow_to_color
    from fovea.train.checkpoint import atomic_write

    rgb = flow_to_color(flow, max_flow).permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return atomic_write(path, lambda f: f.write(buf.getvalue()))


def cmd_flow(args) -> int:
    from pathlib import Path

    from fovea.data.flo import write_flo
    from fovea.tasks.flow import load_flow_model

    model, info = load_flow_model(args.run)
    x = load_frames(args.frame1, args.frame2)
    for out in (args.out, args.png):
        if out and Path(out).is_dir():
            raise UserError(f"output {out!r} is a folder; expected a file path")
    flow = estimate_flow(model, x, args.size)
    write_flo(args.out, flow)
    length = torch.linalg.vector_norm(flow, dim=0)
    h, w = flow.shape[1:]
    print(f"wrote {args.out} ({h}x{w}, flow length mean {length.mean():.2f} px, max {length.max():.2f} px)")
    if args.png:
        write_flow_png(args.png, flow, args.max_flow)
        print(f"wrote {args.png} (Middlebury colour code, full saturation at "
              f"{args.max_flow or float(length.max()):.2f} px)")
    return 0


def register(sub) -> None:
    p = sub.add_parser("flow", help="optical flow between two frames with a trained flow run (FlowNet)")
    p.add_argument("run", help="run directory of `fovea train flow`")
    p.add_argument("frame1", help="first frame (any image file)")
    p.add_argument("frame2", help="second frame, the same size as the first")
    p.add_argument("--out", required=True, help="Middlebury .flo file to write (u, v in pixels)")
    p.add_argument("--png", help="also write the flow colour-coded (Middlebury colour wheel) to this PNG")
    p.add_argument("--max-flow", type=_max_flow, help="flow length shown fully saturated in the PNG "
                   "(default: the longest vector)")
    p.add_argument("--size", type=_size, metavar="HxW", help="run the network at this size and resize the "
                   "flow back, vectors scaled (default: the frames' own size)")
    p.set_defaults(func=cmd_flow)


__all__ = ["cmd_flow", "estimate_flow", "load_frames", "register", "write_flow_png"]
