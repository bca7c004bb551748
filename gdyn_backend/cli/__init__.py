"""The `gdyn` command line (README.md, "Architecture"; each command's section).

Each command lives in its own module in this package with
`register(subparsers)`, which adds its parser and sets `func(args) -> int`.
Bad input, a malformed option included, prints one line `gdyn: error: ...`
and exits 2; so does an OS error (a read-only folder, a full disk: named as
such by `errors.os_error_message`). Ctrl-C exits 130 and SIGTERM or SIGHUP
128 + the signal. None of them leaves half-written outputs: writers are
atomic and remove their temporary files on the way out.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading

from gdyn_backend import __version__
from gdyn_backend.device import reuse_freed_memory
from gdyn_backend.errors import Cancelled, Stopped, UserError, os_error_message

COMMANDS = ["info", "example", "bench", "extract", "serve", "animate", "simulate", "mask", "dataset", "train", "sample",
            "preset"]
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


class Parser(argparse.ArgumentParser):
    """argparse with the one error line of gdyn: `gdyn: error: animate: ... (see gdyn animate --help)`.

    Subcommand parsers are of the same class (argparse makes them from the parent's).
    """

    def error(self, message: str):
        command = self.prog.removeprefix("gdyn").strip()
        print(f"gdyn: error: {command + ': ' if command else ''}{message} (see {self.prog} --help)",
              file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="gdyn", description="Generative Image Dynamics: animate stills from spectral volumes.")
    parser.add_argument("--version", action="version", version=f"gdyn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"gdyn_backend.cli.{name}").register(sub)
    return parser


def _stop(signum, frame):
    raise Stopped(signum, signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    handle = threading.current_thread() is threading.main_thread()  # Python's rule for handlers
    previous = {signum: signal.signal(signum, _stop) for signum in STOP_SIGNALS} if handle else {}
    reuse_freed_memory()
    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"gdyn: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"gdyn: error: {os_error_message(exc)}", file=sys.stderr)
        return 2
    except (Cancelled, KeyboardInterrupt):
        print("gdyn: cancelled; no output was written", file=sys.stderr)
        return 130
    except Stopped as exc:
        print(f"gdyn: {exc}; no output was written", file=sys.stderr)
        return 128 + exc.signum
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
