"""`gdyn extract VIDEO -o MOTION.safetensors`: the spectral volume of a real video."""

from __future__ import annotations

import sys

from gdyn_backend import spectral
from gdyn_backend.cli.arguments import add_motion_output, parse_size, save_motion
from gdyn_backend.errors import UserError
from gdyn_backend.flow import DEFAULT_HEIGHT, DEFAULT_WIDTH, DEFAULT_WINDOW, extract_volume
from gdyn_backend.progress import Progress, terminal_bar


def motion_size(args) -> tuple[int, int | None]:
    """The motion resolution from --size or --width (height None: the clip's aspect)."""
    if args.size and args.width:
        raise UserError("give either --size or --width, not both")
    if args.size:
        return parse_size(args.size)
    if args.width:
        return args.width, None
    return DEFAULT_WIDTH, DEFAULT_HEIGHT


def run(args) -> int:
    output = spectral.motion_output_path(args.output)
    if args.frames < 2:
        raise UserError(f"--frames must be at least 2, got {args.frames}")
    width, height = motion_size(args)
    bands = min(spectral.DEFAULT_BANDS, args.frames // 2 + 1) if args.bands is None else args.bands
    volume = extract_volume(args.video, start=args.start, window=args.frames, num_bands=bands,
                            width=width, height=height, fps=args.fps, force=args.force,
                            progress=Progress(terminal_bar()))
    check = volume.metadata["motion_check"]
    if check != "passed":
        print(f"gdyn: warning: kept despite the filter (--force): {check[len('forced: '):]}",
              file=sys.stderr)
    return save_motion(volume, output, f"mean motion {float(volume.metadata['mean_motion_px']):.2f} px")


def register(sub) -> None:
    p = sub.add_parser("extract", help="motion of a real video -> spectral volume (.safetensors)",
                       description="Dense flow from a start frame to each of the next frames "
                                   "(coarse-to-fine, not chained), then K frequency bands.")
    p.add_argument("video", help="video file (mp4, avi, mov, ...) or a folder of images")
    add_motion_output(p)
    p.add_argument("--start", type=int, default=0, help="start frame (default 0)")
    p.add_argument("--frames", type=int, default=DEFAULT_WINDOW,
                   help=f"window length T in frames, start frame included (default {DEFAULT_WINDOW})")
    p.add_argument("--bands", type=int,
                   help=f"K frequency bands kept, f_k = k*fps/T (default {spectral.DEFAULT_BANDS}, "
                        "or T/2+1 for shorter windows)")
    p.add_argument("--size", help=f"motion resolution WxH (default {DEFAULT_WIDTH}x{DEFAULT_HEIGHT})")
    p.add_argument("--width", type=int, help="motion width; height follows the clip's aspect ratio")
    p.add_argument("--fps", type=float,
                   help="frame rate of the clip (default: the file's; 30 for image folders)")
    p.add_argument("--force", action="store_true",
                   help="keep a clip the paper's filters reject (mean motion > 8 px, camera motion)")
    p.set_defaults(func=run)
