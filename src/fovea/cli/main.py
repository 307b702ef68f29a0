"""The `fovea` command. Each subcommand group lives in its own module with a
``register(subparsers)`` function; user errors end as one line and exit code 2."""

from __future__ import annotations

import argparse
import sys

from fovea.errors import UserError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse prints usage too)
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    from fovea import __version__
    from fovea.cli import (attack, depth, explain, export, features, flow, generative, infer, metric,
                           models, restore, scratch, segment, serve, stylize, train)

    parser = _Parser(prog="fovea", description="Deep learning for computer vision: models, training, applications.")
    parser.add_argument("--version", action="version", version=f"fovea {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for module in (models, train, infer, export, attack, explain, features, generative, metric,
                   segment, restore, flow, depth, stylize, scratch, serve):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except UserError as e:
        print(f"fovea {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
