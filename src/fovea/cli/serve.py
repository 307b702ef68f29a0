"""`fovea serve`: a local web app to browse runs and try their models on images."""

from __future__ import annotations

import argparse
import ipaddress
import sys
from pathlib import Path

from fovea.errors import UserError


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{text!r}: expected a number above 0")
        return value
    return parse


def cmd_serve(args) -> int:
    from fovea.serve.app import Limits, create_app

    runs = [Path(r) for r in args.runs]
    runs_dir = Path(args.runs_dir) if args.runs_dir else None
    if not runs and runs_dir is None:
        if not Path("runs").is_dir():
            raise UserError("no runs to serve: give run folders (fovea serve runs/NAME ...) or --runs-dir DIR")
        runs_dir = Path("runs")
    if not 0 < args.port < 65536:
        raise UserError(f"--port {args.port}: expected 1 to 65535")
    limits = Limits(max_upload_bytes=int(args.max_upload_mb * 2**20), max_pixels=args.max_pixels,
                    work_side=args.work_side, timeout_s=args.timeout, max_queue=args.queue, workers=args.workers)
    app = create_app(runs, runs_dir=runs_dir, limits=limits, preload=args.preload)
    if not is_loopback(args.host):
        print(f"fovea serve: warning: binding to {args.host}, not loopback: anyone who can reach this machine "
              f"on port {args.port} can use the app", file=sys.stderr)
    import uvicorn

    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"fovea serve: {len(app.state.catalog.runs)} run(s) at http://{shown}:{args.port}/ (Ctrl-C stops)",
          file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=5)
    return 0


def register(sub) -> None:
    p = sub.add_parser("serve", help="a local web app: browse runs, try their models on your images (JSON API too)")
    p.add_argument("runs", nargs="*", help="run directories to serve (default: every run in --runs-dir, else ./runs)")
    p.add_argument("--runs-dir", help="also serve every run folder directly inside DIR (new runs appear as they come)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-upload-mb", type=_positive(float), default=8.0, help="largest upload in MiB (413 above)")
    p.add_argument("--max-pixels", type=_positive(int), default=4096 * 4096,
                   help="largest image in pixels, read from its header (413 above)")
    p.add_argument("--work-side", type=_positive(int), default=512,
                   help="segmentation, restoration, style, flow and depth shrink larger images to this longer side")
    p.add_argument("--timeout", type=_positive(float), default=30.0, help="seconds before a prediction is answered "
                                                                           "with 503")
    p.add_argument("--queue", type=_positive(int), default=16, help="predictions waiting or running before 503")
    p.add_argument("--workers", type=_positive(int), default=1, help="inference threads (each forward pass already "
                                                                      "uses every core)")
    p.add_argument("--preload", action="store_true", help="load every run's model at start, not on first use")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=cmd_serve)
