"""`gdyn extract VIDEO -o MOTION.safetensors`: the spectral volume of a real video, and its start
frame beside it as MOTION.png (the still the motion belongs to)."""

from __future__ import annotations

import sys
from pathlib import Path

from gdyn_backend import spectral
from gdyn_backend.cli.arguments import add_motion_output, parse_size, save_motion
from gdyn_backend.errors import UserError
from gdyn_backend.flow import DEFAULT_HEIGHT, DEFAULT_WIDTH, DEFAULT_WINDOW, extract_volume
from gdyn_backend.io import write_png
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


def start_image_path(motion: Path) -> Path:
    """MOTION.png beside MOTION.safetensors: the start frame, so `gdyn animate MOTION.png --motion
    MOTION.safetensors` animates the pair."""
    return motion.with_suffix(".png")


def run(args) -> int:
    output = spectral.motion_output_path(args.output)
    width, height = motion_size(args)
    volume, start_frame = extract_volume(args.video, start=args.start, window=args.frames, num_bands=args.bands,
                                         width=width, height=height, fps=args.fps, force=args.force,
                                         progress=Progress(terminal_bar()))
    check = volume.metadata["motion_check"]
    if check != "passed":
        print(f"gdyn: warning: kept despite the filter (--force): {check[len('forced: '):]}",
              file=sys.stderr)
    still = start_image_path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    write_png(still, start_frame)
    try:
        save_motion(volume, output, f"mean motion {float(volume.metadata['mean_motion_px']):.2f} px")
    except BaseException:
        still.unlink(missing_ok=True)  # the pair appears together or not at all
        raise
    print(f"wrote {still}: start frame {args.start}, {start_frame.shape[1]}x{start_frame.shape[0]} "
          f"(animate the pair: gdyn animate {still} --motion {output})")
    return 0


def register(sub) -> None:
    p = sub.add_parser("extract", help="motion of a real video -> spectral volume (.safetensors)",
                       description="Dense flow from a start frame to each of the next frames "
                                   "(coarse-to-fine, not chained), then K frequency bands. The start "
                                   "frame is written beside the motion file as MOTION.png.")
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
                   help="keep a window the filters reject (mean motion > 8 px, camera motion, something "
                        "entering the shot, repeated frames too sparse for the bands)")
    p.set_defaults(func=run)
