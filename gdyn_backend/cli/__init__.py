"""The `gdyn` command line (DESIGN.md, "Command line").

Each command lives in its own module in this package with
`register(subparsers)`, which adds its parser and sets `func(args) -> int`.
User errors print one line `gdyn: error: ...` and exit 2; a cancel (Ctrl-C)
exits 130. Neither leaves half-written outputs (writers are atomic).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from gdyn_backend import __version__
from gdyn_backend.errors import Cancelled, UserError

COMMANDS = ["info", "example", "bench", "extract", "serve", "animate", "simulate", "dataset", "train", "sample",
            "preset"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gdyn", description="Generative Image Dynamics: animate stills from spectral volumes.")
    parser.add_argument("--version", action="version", version=f"gdyn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"gdyn_backend.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"gdyn: error: {exc}", file=sys.stderr)
        return 2
    except (Cancelled, KeyboardInterrupt):
        print("gdyn: cancelled; no output was written", file=sys.stderr)
        return 130
