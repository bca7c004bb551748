"""Argument helpers shared by the `gdyn` commands: inputs, sizes, motion-file outputs."""

from __future__ import annotations

import argparse
from pathlib import Path

from gdyn_backend.errors import UserError
from gdyn_backend.params import MAX_SEED, check_seed

MIN_SIDE, MAX_SIDE = 16, 8192  # pixels per side a WxH option accepts


def parse_size(text: str, option: str = "--size") -> tuple[int, int]:
    """'640x400' -> (640, 400) pixels; UserError naming `option` on anything else."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"{option} must look like 640x400, got {text!r}") from None
    if not (MIN_SIDE <= w <= MAX_SIDE and MIN_SIDE <= h <= MAX_SIDE):
        raise UserError(f"{option} {w}x{h} is outside {MIN_SIDE}..{MAX_SIDE} pixels per side")
    return w, h


def _seed(text: str) -> int:
    try:
        return check_seed(int(text), "it")
    except (ValueError, UserError) as exc:
        raise argparse.ArgumentTypeError(f"must be a whole number from 0 to {MAX_SEED}, got {text!r}") from exc


def add_seed(parser, default: int = 0, what: str = "random seed") -> None:
    """The `--seed N` option (0..MAX_SEED, the same range as a request's "seed")."""
    parser.add_argument("--seed", type=_seed, default=default, help=f"{what} (default: {default})")


def add_still_input(parser) -> None:
    """The positional `image` of the commands that start from a still photo."""
    parser.add_argument("image", type=Path, help="the still (PNG, JPEG, TIFF, EXR; 8 or 16 bit, alpha kept)")


def add_videos_input(parser) -> None:
    """The positional `videos` of the commands that learn from a folder of clips
    (`gdyn_backend.model.data.find_clips`)."""
    parser.add_argument("videos", type=Path,
                        help="folder of video files (.mp4, .mov, ...) and/or folders of frames (searched recursively)")


def add_motion_output(parser) -> None:
    """The `-o MOTION.safetensors` option of the commands that write a spectral volume."""
    parser.add_argument("-o", "--output", required=True, help="MOTION.safetensors to write")


def save_motion(volume, output, detail: str) -> int:
    """Write `volume` to `output` and print what was written; returns the exit status 0.

    The line is `wrote OUTPUT: K bands up to F Hz, WxH, DETAIL`.
    """
    from gdyn_backend import spectral

    spectral.save_volume(volume, output)
    print(f"wrote {output}: {volume.num_bands} bands up to {volume.frequencies_hz[-1]:.2f} Hz, "
          f"{volume.width}x{volume.height}, {detail}")
    return 0
