"""`gdyn example OUT.png`: draw the example still the README's main job animates."""

from __future__ import annotations

from pathlib import Path

from gdyn_backend.errors import UserError
from gdyn_backend.example import write_example_still


def parse_size(text: str) -> tuple[int, int]:
    """'640x400' -> (640, 400); UserError on anything else."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"size must look like 640x400, got {text!r}") from None
    if not (16 <= w <= 8192 and 16 <= h <= 8192):
        raise UserError(f"size {w}x{h} is outside 16..8192 pixels per side")
    return w, h


def run(args) -> int:
    w, h = parse_size(args.size)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    write_example_still(args.output, w, h, args.seed)
    print(args.output)
    return 0


def register(sub) -> None:
    p = sub.add_parser("example", help="draw an example still (flowers under a sky) to animate")
    p.add_argument("output", help="PNG file to write")
    p.add_argument("--size", default="640x400", help="WIDTHxHEIGHT (default 640x400)")
    p.add_argument("--seed", type=int, default=7)
    p.set_defaults(func=run)
