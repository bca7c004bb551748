"""`gdyn simulate`'s front end: pokes and drags in still pixels -> modal simulation -> OUTDIR.

The user (CLI, add-on through `gdyn serve`, tests) speaks in pixels of the
INPUT IMAGE (x right, y down, origin at the top-left pixel centre) and in
frame numbers from 0 (frame 0 is the still). One schema holds that request:

    SimulateOptions   motion file, pokes, drags, damping, frames, fps,
                      integrator, mask, video, bit_depth
    PokeSpec          {frame, x, y, dx, dy, duration=1}: push pixel (x, y) at
                      `frame` with strength (dx, dy) px over `duration` frames
    DragSpec          {start, end, x, y, dx, dy}: hold (x, y) displaced by
                      (dx, dy) px over frames start..end (inclusive), then let go

`SimulateOptions.from_params` reads a `simulate` request of the protocol
(`gdyn_backend.params`), and `simulate` checks the specs against the still,
converts them to the motion pixels of `dynamics.Poke`/`Drag`, pins the
volume (`gdyn_backend.pinning`) and writes OUTDIR like `gdyn animate`
(`gdyn_backend.sequence`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import ClassVar

import numpy as np

from gdyn_backend import dynamics, io, params, pinning, spectral
from gdyn_backend.errors import UserError
from gdyn_backend.progress import Progress
from gdyn_backend.sequence import (DEFAULT_FPS, DEFAULT_FRAMES, RenderResult, check_resources,
                                   check_sequence_options, write_sequence)

DRAG_EASE_S = 0.2  # a scheduled drag pulls its point to the offset over this long (seconds)


def to_motion_pixels(x: float, y: float, dx: float, dy: float, image_size: tuple[int, int],
                     motion_size: tuple[int, int]) -> tuple[float, float, float, float]:
    """A point and an offset in still pixels -> motion pixels.

    image_size, motion_size: (width, height). Pixel centres map onto pixel
    centres: x_m = (x + 0.5) * w / W - 0.5; offsets scale by w / W and h / H.
    """
    (iw, ih), (mw, mh) = image_size, motion_size
    sx, sy = mw / iw, mh / ih
    return (x + 0.5) * sx - 0.5, (y + 0.5) * sy - 0.5, dx * sx, dy * sy


def checked_point(spec, what: str, width: int, height: int) -> tuple[float, float, float, float]:
    """(x, y, dx, dy) of a spec, finite, with (x, y) inside the width x height still and the
    strength (dx, dy) at most the still's larger side in each direction."""
    for key in ("x", "y", "dx", "dy"):
        if not np.isfinite(getattr(spec, key)):
            raise UserError(f"{what}: {key} must be finite, got {getattr(spec, key)}")
    if not (0 <= spec.x <= width - 1 and 0 <= spec.y <= height - 1):
        raise UserError(f"{what}: pixel ({spec.x:g}, {spec.y:g}) is outside the {width}x{height} image "
                        "(x in 0..width-1 right, y in 0..height-1 down)")
    if max(abs(spec.dx), abs(spec.dy)) > max(width, height):
        raise UserError(f"{what}: strength ({spec.dx:g}, {spec.dy:g}) px is larger than the {width}x{height} "
                        "image itself; a few pixels make a visible push")
    return spec.x, spec.y, spec.dx, spec.dy


@dataclass(frozen=True)
class PokeSpec:
    """A poke as the user gives it: push still pixel (x, y) at `frame` (from 0) with
    strength (dx, dy) still pixels, spread over `duration` frames (>= 1)."""

    LABEL: ClassVar[str] = "poke"

    frame: int
    x: float
    y: float
    dx: float
    dy: float
    duration: int = 1

    def to_poke(self, what: str, num_frames: int, image_size: tuple[int, int],
                motion_size: tuple[int, int]) -> dynamics.Poke:
        """The `dynamics.Poke` in motion pixels; UserError naming `what` ("poke 2") if it cannot be."""
        if self.frame < 0 or self.frame >= num_frames:
            raise UserError(f"{what}: frame {self.frame} is past the last frame {num_frames - 1}"
                            if self.frame >= 0 else f"{what}: frame must be >= 0, got {self.frame}")
        if self.duration < 1:
            raise UserError(f"{what}: duration must be at least 1 frame, got {self.duration}")
        point = checked_point(self, what, *image_size)
        return dynamics.Poke(self.frame, *to_motion_pixels(*point, image_size, motion_size), self.duration)


@dataclass(frozen=True)
class DragSpec:
    """A drag as the user gives it: hold still pixel (x, y) displaced by (dx, dy) still
    pixels over frames start..end (inclusive, from 0), then let it ring down."""

    LABEL: ClassVar[str] = "drag"

    start: int
    end: int
    x: float
    y: float
    dx: float
    dy: float

    def to_drag(self, what: str, num_frames: int, fps: float, image_size: tuple[int, int],
                motion_size: tuple[int, int]) -> dynamics.Drag:
        """The `dynamics.Drag` in motion pixels, eased in over `DRAG_EASE_S`; UserError naming `what`."""
        if not 0 <= self.start <= self.end or self.start >= num_frames:
            raise UserError(f"{what}: frames {self.start}-{self.end} must satisfy 0 <= start <= end "
                            f"and start <= {num_frames - 1}")
        point = checked_point(self, what, *image_size)
        return dynamics.Drag(self.start, self.end, *to_motion_pixels(*point, image_size, motion_size),
                             ease_frames=max(1, round(DRAG_EASE_S * fps)))


@dataclass(frozen=True)
class SimulateOptions:
    """Options of `gdyn simulate` and of the protocol's `simulate` request (same names).

    motion:     spectral volume file whose bands with f > 0 are the modes.
    pokes, drags: `PokeSpec`s and `DragSpec`s (still pixels, frames from 0).
    damping:    damping ratio xi, 0 <= xi < 1, of the modes at and above 3 Hz (slower
                modes decay at that rate: `dynamics`).
    frames/fps: length of the simulation in frames and its frame rate.
    integrator: "exact" (never gains energy) or "euler" (the paper's).
    mask:       image, white moves, black is pinned (exactly still), grey scales.
    video:      optional .mp4 or .gif written with the frames.
    bit_depth:  8 or 16 for the PNG frames; None = the still's own depth.
    """

    motion: Path
    pokes: tuple[PokeSpec, ...] = ()
    drags: tuple[DragSpec, ...] = ()
    damping: float = dynamics.DEFAULT_DAMPING
    frames: int = DEFAULT_FRAMES
    fps: float = DEFAULT_FPS
    integrator: str = "exact"
    mask: Path | None = None
    video: Path | None = None
    bit_depth: int | None = None

    def validate(self) -> None:
        check_sequence_options(self.frames, self.fps, self.bit_depth, self.video)
        if self.integrator not in dynamics.INTEGRATORS:
            raise UserError(f"unknown integrator {self.integrator!r}; "
                            f"choose one of {', '.join(dynamics.INTEGRATORS)}")
        if not (np.isfinite(self.damping) and 0 <= self.damping < 1):
            raise UserError(f"damping must be a ratio in [0, 1) (e.g. 0.05), got {self.damping}")

    @classmethod
    def from_params(cls, request: dict) -> SimulateOptions:
        """The options of a `simulate` request's JSON params (`pokes`, `drags` as lists of
        objects); UserError naming a bad key, e.g. "simulate: poke 2: missing key 'dy'"."""
        return cls(**params.option_values(cls, request, "simulate", extra=("image", "output")))

    def record(self) -> str:
        """The settings, pokes and drags (still pixels, as given) as JSON, for the motion file."""
        return json.dumps({"damping": self.damping, "integrator": self.integrator, "fps": self.fps,
                           "frames": self.frames, "pokes": [asdict(p) for p in self.pokes],
                           "drags": [asdict(d) for d in self.drags]})


def simulate(image, outdir, options: SimulateOptions, progress: Progress | None = None) -> RenderResult:
    """The still's response to the options' pokes and drags, written like `gdyn animate`.

    image:  the still; outdir: OUTDIR, which gets frames/NNNN.png,
    displacement/NNNN.exr (still pixels) and motion.safetensors (the pinned
    volume, with metadata `simulation`: `SimulateOptions.record`); it appears
    whole or not at all. Returns the `RenderResult`.
    """
    options.validate()
    frames, fps = int(options.frames), float(options.fps)
    check_resources(image, outdir, frames, options.bit_depth)
    still = io.read_image(image)
    volume = spectral.load_volume(options.motion)
    if not (volume.frequencies_hz > 0).any():
        raise UserError(f"{options.motion} has no oscillating bands (only 0 Hz), so nothing can respond to a poke")
    mask = io.read_mask(options.mask, still.width, still.height) if options.mask is not None else None
    sizes = (still.width, still.height), (volume.width, volume.height)
    pokes = [p.to_poke(f"poke {i + 1}", frames, *sizes) for i, p in enumerate(options.pokes)]
    drags = [d.to_drag(f"drag {i + 1}", frames, fps, *sizes) for i, d in enumerate(options.drags)]
    volume = pinning.pinned(volume, mask)
    simulator = dynamics.ModalSimulator(volume, options.damping, fps, options.integrator)
    saved = replace(volume, metadata={**volume.metadata, "simulation": options.record()})
    return write_sequence(still, saved, dynamics.simulate(simulator, frames, pokes, drags), outdir, fps=fps,
                          source=f"simulation of {volume.source}", mask=mask, bit_depth=options.bit_depth,
                          video=options.video, progress=progress, total=frames)
