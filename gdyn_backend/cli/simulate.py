"""`gdyn simulate IMAGE --motion FILE -o OUTDIR --poke ...`: a photo that responds to pokes.

Pokes and drags use pixels of the INPUT IMAGE (x right, y down, origin at the
top-left pixel centre) and frame numbers from 0 (frame 0 is the still):

    --poke FRAME:X,Y:DX,DY[:DURATION]    push pixel (X, Y) with strength (DX, DY)
                                         pixels, spread over DURATION frames (1);
                                         --force is the same option
    --drag FRAME0-FRAME1:X,Y:DX,DY       hold (X, Y) displaced by (DX, DY) pixels
                                         over frames FRAME0..FRAME1, then let go
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from gdyn_backend.errors import UserError
from gdyn_backend.simulate import DragSpec, PokeSpec

_NUMBER = r"\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*"
_PAIR = _NUMBER + "," + _NUMBER
_POKE = re.compile(r"^\s*(\d+)\s*:" + _PAIR + ":" + _PAIR + r"(?::\s*(\d+)\s*)?$")
_DRAG = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*:" + _PAIR + ":" + _PAIR + "$")


def parse_poke(text: str) -> PokeSpec:
    """'FRAME:X,Y:DX,DY[:DURATION]' -> PokeSpec (still pixels); UserError if malformed."""
    m = _POKE.match(text)
    if m is None:
        raise UserError(f"--poke {text!r} is not FRAME:X,Y:DX,DY[:DURATION] "
                        "(e.g. 10:320,180:4,0 pushes pixel 320,180 right by 4 px at frame 10)")
    frame, x, y, dx, dy, duration = m.groups()
    return PokeSpec(int(frame), float(x), float(y), float(dx), float(dy),
                    int(duration) if duration is not None else 1)


def parse_drag(text: str) -> DragSpec:
    """'FRAME0-FRAME1:X,Y:DX,DY' -> DragSpec (still pixels); UserError if malformed."""
    m = _DRAG.match(text)
    if m is None:
        raise UserError(f"--drag {text!r} is not FRAME0-FRAME1:X,Y:DX,DY "
                        "(e.g. 5-30:320,180:10,0 holds pixel 320,180 10 px right from frame 5 to 30)")
    start, end, x, y, dx, dy = m.groups()
    return DragSpec(int(start), int(end), float(x), float(y), float(dx), float(dy))


def run(args) -> int:
    from gdyn_backend.progress import Progress, terminal_bar
    from gdyn_backend.simulate import SimulateOptions, simulate

    pokes = tuple(parse_poke(t) for group in args.poke or [] for t in group)
    drags = tuple(parse_drag(t) for group in args.drag or [] for t in group)
    if not pokes and not drags:
        raise UserError("nothing to simulate: give at least one --poke or --drag")
    if args.motion is None:
        raise UserError("--motion FILE is required (a spectral volume from gdyn extract, "
                        "gdyn animate or gdyn sample)")
    if args.integrator == "euler":
        print("gdyn: note: forward Euler gains energy on modes with 2*pi*f/fps > 2*damping "
              "and can blow up; the default --integrator exact never does", file=sys.stderr)
    options = SimulateOptions(motion=args.motion, pokes=pokes, drags=drags, damping=args.damping,
                              frames=args.frames, fps=args.fps, integrator=args.integrator, mask=args.mask,
                              video=args.video, bit_depth=args.bit_depth)
    result = simulate(args.image, args.output, options, Progress(terminal_bar()))
    print(f"wrote {result.frames} frames to {result.outdir}"
          + (f" and {result.video}" if result.video else ""), file=sys.stderr)
    return 0


def register(sub) -> None:
    from gdyn_backend.dynamics import DEFAULT_DAMPING, INTEGRATORS
    from gdyn_backend.sequence import DEFAULT_FPS, DEFAULT_FRAMES

    p = sub.add_parser(
        "simulate", help="interactive dynamics: the photo's response to pokes and drags",
        description="Simulate the still as a vibrating object whose modes are the bands of a "
                    "spectral volume (paper §6.3). Positions and strengths are pixels of the input "
                    "image (x right, y down); frames count from 0 (the still). Writes "
                    "OUTDIR/frames/NNNN.png, OUTDIR/displacement/NNNN.exr and "
                    "OUTDIR/motion.safetensors like gdyn animate.")
    p.add_argument("image", type=Path, help="the still (PNG, JPEG, TIFF, EXR)")
    p.add_argument("--motion", type=Path, metavar="FILE",
                   help="spectral volume whose bands are the modes (required)")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUTDIR", help="output folder")
    p.add_argument("--poke", "--force", dest="poke", action="append", nargs="+",
                   metavar="FRAME:X,Y:DX,DY[:DUR]",
                   help="push pixel X,Y at FRAME with strength DX,DY pixels (about how far the most "
                        "mobile point moves), spread over DUR frames (default 1); repeatable; "
                        "--poke and --force are the same option")
    p.add_argument("--drag", action="append", nargs="+", metavar="FRAME0-FRAME1:X,Y:DX,DY",
                   help="pull pixel X,Y to X+DX,Y+DY (eased in over 0.2 s), hold it through "
                        "FRAME1, then release it to ring down; repeatable")
    p.add_argument("--damping", type=float, default=DEFAULT_DAMPING,
                   help=f"damping ratio of the modes at and above 3 Hz, 0 <= D < 1; slower modes "
                        f"decay at that rate (default: {DEFAULT_DAMPING})")
    p.add_argument("--frames", type=int, default=DEFAULT_FRAMES,
                   help=f"number of frames (default: {DEFAULT_FRAMES})")
    p.add_argument("--fps", type=float, default=DEFAULT_FPS, help=f"frame rate (default: {DEFAULT_FPS:g})")
    p.add_argument("--integrator", choices=INTEGRATORS, default="exact",
                   help="exact (default: exact discretization, never gains energy) or euler "
                        "(forward Euler as in the paper; unstable for fast modes at low fps)")
    p.add_argument("--mask", type=Path, metavar="MASK.png", help="white moves, black is pinned (exactly still)")
    p.add_argument("--video", type=Path, metavar="OUT.mp4", help="also write an .mp4 or .gif")
    p.add_argument("--bit-depth", type=int, choices=(8, 16), default=None,
                   help="PNG bit depth of the frames (default: that of the still)")
    p.set_defaults(func=run)
