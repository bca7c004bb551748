"""`gdyn serve`: the backend process of the Blender add-on (JSON lines on stdin/stdout)."""

from __future__ import annotations

import sys


def run(args) -> int:
    from gdyn_backend.server import Server

    # A byte that is not UTF-8 becomes U+FFFD (then a malformed-request reply), never a crash.
    if hasattr(sys.stdin, "reconfigure"):
        sys.stdin.reconfigure(errors="replace")
    # The protocol owns stdout; anything else printed there would corrupt it.
    protocol_out = sys.stdout
    sys.stdout = sys.stderr
    try:
        return Server(sys.stdin, protocol_out).serve()
    finally:
        sys.stdout = protocol_out


def register(sub) -> None:
    p = sub.add_parser("serve", help="the Blender add-on's backend (JSON lines over stdin/stdout)",
                       description="Answer JSON requests, one per line, on stdin; replies and "
                                   "progress events go to stdout, logs to stderr. See "
                                   "gdyn_backend/server.py for the protocol.")
    p.set_defaults(func=run)
