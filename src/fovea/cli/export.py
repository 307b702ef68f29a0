"""`fovea export`: a run's model as ONNX, TorchScript or safetensors, checked against PyTorch."""

from __future__ import annotations

import json
import sys


def cmd_export(args) -> int:
    from fovea.apps.export import ExportCheckError, export_run

    try:
        result = export_run(args.run, args.format, args.out, atol=args.atol, check=not args.no_check)
    except ExportCheckError as e:  # not the user's doing: say so in one line, exit 1
        print(f"fovea export: check failed: {e}", file=sys.stderr)
        return 1
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.summary())
    return 0


def register(sub) -> None:
    from fovea.apps.export import ATOL, FORMATS, OPSET

    p = sub.add_parser("export", help="export a run's model to ONNX, TorchScript or safetensors and check it",
                       description=f"ONNX: opset {OPSET}, dynamic batch axis, checked with onnxruntime; TorchScript: "
                                   f"torch.jit.trace; safetensors: the weights with model.json beside them. The export "
                                   f"is compared with the PyTorch model on random inputs (max abs difference <= "
                                   f"--atol) before it is written.")
    p.add_argument("run", help="run directory")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--out", required=True, help="output file (e.g. model.onnx, model.pt, model.safetensors)")
    p.add_argument("--atol", type=float, default=ATOL, help=f"largest allowed abs difference (default {ATOL:g})")
    p.add_argument("--no-check", action="store_true", help="skip the comparison with the PyTorch model")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_export)
