"""`gdyn animate IMAGE -o OUTDIR`: a still to frames, displacement maps and a video."""

from __future__ import annotations

import sys
from pathlib import Path

from gdyn_backend.animate import SOURCES, AnimateOptions
from gdyn_backend.cli.arguments import add_seed, add_still_input
from gdyn_backend.presets import DEFAULT_PRESET
from gdyn_backend.sequence import DEFAULT_FPS, DEFAULT_FRAMES


def run(args) -> int:
    from gdyn_backend.animate import animate
    from gdyn_backend.progress import Progress, terminal_bar

    options = AnimateOptions(
        motion=args.motion, source=args.source, preset=args.preset, checkpoint=args.checkpoint,
        frames=args.frames, fps=args.fps, loop=args.loop, amplitude=args.amplitude,
        speed=args.speed, seed=args.seed, mask=args.mask, video=args.video,
        bit_depth=args.bit_depth, renderer_checkpoint=args.renderer_checkpoint, steps=args.steps)
    result = animate(args.image, args.output, options, Progress(terminal_bar()))
    print(f"wrote {result.frames} frames to {result.outdir}"
          + (f" and {result.video}" if result.video else "")
          + f" (motion source: {result.source})", file=sys.stderr)
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "animate", help="animate a still: frames, displacement maps, optional video",
        description="Animate a still photo. Writes OUTDIR/frames/NNNN.png, "
                    "OUTDIR/displacement/NNNN.exr (R = x, G = y forward displacement in pixels) "
                    "and OUTDIR/motion.safetensors; the folder appears whole or not at all.")
    add_still_input(p)
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUTDIR", help="output folder")
    p.add_argument("--motion", type=Path, metavar="FILE",
                   help="a spectral volume (.safetensors from gdyn extract/sample/animate); "
                        "overrides --source")
    p.add_argument("--source", choices=SOURCES, default="procedural",
                   help="where the motion comes from when --motion is not given (default: procedural)")
    p.add_argument("--preset", default=DEFAULT_PRESET,
                   help=f"procedural motion preset name or .toml path (default: {DEFAULT_PRESET})")
    p.add_argument("--checkpoint", type=Path, metavar="F", help="motion model checkpoint for --source model")
    p.add_argument("--frames", type=int, default=DEFAULT_FRAMES,
                   help=f"number of frames (default: {DEFAULT_FRAMES})")
    p.add_argument("--fps", type=float, default=DEFAULT_FPS, help=f"frame rate (default: {DEFAULT_FPS:g})")
    p.add_argument("--loop", action="store_true",
                   help="make frame N flow into frame 0 exactly (position and velocity)")
    p.add_argument("--amplitude", type=float, default=1.0, help="motion size factor (default: 1)")
    p.add_argument("--speed", type=float, default=1.0, help="tempo factor (default: 1)")
    add_seed(p, what="random seed of the motion source")
    p.add_argument("--mask", type=Path, metavar="MASK.png",
                   help="white moves, black is pinned (exactly still), grey scales the motion")
    p.add_argument("--video", type=Path, metavar="OUT.mp4",
                   help="also write an .mp4 (H.264) or .gif of the frames")
    p.add_argument("--bit-depth", type=int, choices=(8, 16), default=None,
                   help="PNG bit depth of the frames (default: that of the still)")
    p.add_argument("--steps", type=int, default=None,
                   help="DDIM steps for --source model (default: 250, or 500 with --loop)")
    p.add_argument("--renderer-checkpoint", type=Path, metavar="F",
                   help="learned renderer weights (gdyn train renderer); default: the "
                        "weight-free softmax-splatting renderer")
    p.set_defaults(func=run)
