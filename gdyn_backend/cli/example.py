"""`gdyn example OUT.png`: draw the example still the README's main job animates."""

from __future__ import annotations

from pathlib import Path

from gdyn_backend.cli.arguments import add_seed, parse_size
from gdyn_backend.errors import UserError
from gdyn_backend.example import write_example_still


def run(args) -> int:
    w, h = parse_size(args.size)
    if Path(args.output).suffix.lower() != ".png":
        raise UserError(f"the example still is a PNG: give a file name ending in .png, got {args.output!r}")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    write_example_still(args.output, w, h, args.seed)
    print(args.output)
    return 0


def register(sub) -> None:
    p = sub.add_parser("example", help="draw an example still (flowers under a sky) to animate")
    p.add_argument("output", help="PNG file to write")
    p.add_argument("--size", default="640x400", help="WIDTHxHEIGHT (default 640x400)")
    add_seed(p, default=7, what="random seed of the drawing")
    p.set_defaults(func=run)
