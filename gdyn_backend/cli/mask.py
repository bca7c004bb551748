"""`gdyn mask IMAGE -o MASK.png`: the prior's what-moves map, to paint over and pass as --mask."""

from __future__ import annotations

from pathlib import Path

from gdyn_backend.presets import DEFAULT_PRESET


def run(args) -> int:
    from gdyn_backend.mask import write_mask

    output, width, height = write_mask(args.image, args.output, args.preset)
    print(f"wrote {output}: {width}x{height}, white moves, black stays, grey scales")
    return 0


def register(sub) -> None:
    p = sub.add_parser("mask", help="the automatic what-moves map of a photo, as an editable mask",
                       description="Write the map the procedural prior uses to decide what moves, at "
                                   "the photo's size: white moves, black stays, grey scales the motion. "
                                   "Paint over it and give it back with --mask (animate, simulate) or "
                                   "as a live session's mask; black regions stay exactly still.")
    p.add_argument("image", type=Path, help="the still (PNG, JPEG, TIFF, EXR)")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="MASK.png", help="PNG file to write")
    p.add_argument("--preset", default=DEFAULT_PRESET,
                   help=f"preset whose what_moves rule applies, a name or a .toml file (default {DEFAULT_PRESET})")
    p.set_defaults(func=run)
