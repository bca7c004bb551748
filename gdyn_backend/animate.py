"""The animation pipeline: still + spectral volume -> frames, displacement maps, video.

`animate` is what `gdyn animate` and the add-on's backend (`gdyn serve`)
both run: read the still, get a spectral volume (a motion file, the
procedural prior or the learned model), apply amplitude, speed and loop
edits, then stream frames to disk with `render_sequence` inside an atomic
output folder (DESIGN.md, "Command line"):

    OUTDIR/frames/NNNN.png         rendered frames (8 or 16 bit, alpha kept)
    OUTDIR/displacement/NNNN.exr   forward displacement F_t at full resolution
                                   (R = x, G = y, pixels of the output)
    OUTDIR/motion.safetensors      the spectral volume actually used

Memory does not grow with the frame count: one displacement field and one
frame exist at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

from gdyn_backend import io, spectral
from gdyn_backend.errors import UserError
from gdyn_backend.presets import DEFAULT_PRESET
from gdyn_backend.progress import Progress

SOURCES = ("procedural", "model")
DEFAULT_FRAMES = 150  # the paper's T: 5 s at 30 fps
DEFAULT_FPS = 30.0


@dataclass
class AnimateOptions:
    """Options of `gdyn animate` (see `gdyn animate --help` for each one).

    motion:     a spectral volume file; when given, `source` is ignored.
    source:     "procedural" (no trained weights) or "model" (needs `checkpoint`).
    frames/fps: length of the animation in frames and its frame rate.
    amplitude:  motion size factor; speed: tempo factor; loop: exact seamless loop.
    mask:       image, white moves, black is pinned (exactly zero motion).
    video:      optional .mp4 or .gif written beside the frames.
    bit_depth:  8 or 16 for the PNG frames; None = the still's own depth.
    renderer_checkpoint: learned renderer weights; None = default renderer.
    steps:      DDIM steps of the model source; None = the paper's (250, or 500 with loop).
    """

    motion: Path | None = None
    source: str = "procedural"
    preset: str = DEFAULT_PRESET
    checkpoint: Path | None = None
    frames: int = DEFAULT_FRAMES
    fps: float = DEFAULT_FPS
    loop: bool = False
    amplitude: float = 1.0
    speed: float = 1.0
    seed: int = 0
    mask: Path | None = None
    video: Path | None = None
    bit_depth: int | None = None
    renderer_checkpoint: Path | None = None
    steps: int | None = None

    def validate(self) -> None:
        if self.motion is None and self.source not in SOURCES:
            raise UserError(f"unknown motion source {self.source!r}; choose from {', '.join(SOURCES)}")
        if int(self.frames) < 1:
            raise UserError(f"--frames must be at least 1, got {self.frames}")
        if not (np.isfinite(self.fps) and self.fps > 0):
            raise UserError(f"--fps must be a positive number, got {self.fps}")
        if not (np.isfinite(self.amplitude) and self.amplitude >= 0):
            raise UserError(f"--amplitude must be a number >= 0, got {self.amplitude}")
        if not (np.isfinite(self.speed) and self.speed > 0):
            raise UserError(f"--speed must be a positive number, got {self.speed}")
        if self.steps is not None and int(self.steps) < 1:
            raise UserError(f"--steps must be at least 1, got {self.steps}")
        if self.bit_depth not in (None, 8, 16):
            raise UserError(f"--bit-depth must be 8 or 16, got {self.bit_depth}")
        if self.loop and int(self.frames) < 2:
            raise UserError(f"--loop needs at least 2 frames, got {self.frames}")
        if self.video is not None and Path(self.video).suffix.lower() not in (".mp4", ".gif"):
            raise UserError(f"--video must end in .mp4 or .gif, got {Path(self.video).name}")


@dataclass
class AnimateResult:
    """What `animate` wrote: the output folder, frame count, motion file, video (or None),
    and the source that made the motion ("procedural", "model", "video", ...)."""

    outdir: Path
    frames: int
    motion: Path
    video: Path | None
    source: str


def make_renderer(checkpoint: Path | None = None):
    """The learned renderer when a checkpoint is given, else the default renderer."""
    if checkpoint is not None:
        from gdyn_backend.render.learned import LearnedRenderer

        return LearnedRenderer.from_checkpoint(checkpoint)
    from gdyn_backend.render.default import DefaultRenderer

    return DefaultRenderer()


def full_resolution_weights(weights: np.ndarray, width: int, height: int) -> np.ndarray:
    """W [h, w] in motion pixels -> [height, width] in output pixels (bilinear)."""
    h, w = weights.shape
    factor = 0.5 * (width / w + height / h)
    resized = cv2.resize(np.asarray(weights, np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    return (resized * np.float32(factor)).astype(np.float32)


def render_sequence(still: io.Still, displacements: Iterable[np.ndarray], weights: np.ndarray,
                    outdir: Path, *, fps: float, renderer=None, mask: np.ndarray | None = None,
                    bit_depth: int = 8, video: Path | None = None,
                    progress: Progress | None = None, total: int | None = None) -> int:
    """Render and write one frame per displacement field, streaming.

    still:         the input photo (H x W).
    displacements: iterable of float32 [2, h, w] forward displacements in
                   pixels of the motion resolution h x w (frame 0 first).
    weights:       float32 [h, w], W(p) = mean_t |F_t(p)| in motion pixels.
    outdir:        folder to write `frames/NNNN.png` and `displacement/NNNN.exr` into
                   (callers wanting atomic output pass a folder from
                   `io.atomic_output_dir`).
    fps:           frame rate of the video, if any.
    renderer:      object with `render(rgb, alpha, displacement, weights)`;
                   default `DefaultRenderer()`.
    mask:          float32 [H, W] in 0..1 multiplying every displacement
                   (0 = exactly still), or None.
    bit_depth:     8 or 16 for the PNG frames.
    video:         .mp4/.gif path to also write (atomic), or None.
    progress:      advanced once per frame (stage "rendering", `total` frames).
    Returns the number of frames written.
    """
    outdir = Path(outdir)
    renderer = renderer or make_renderer()
    progress = progress or Progress()
    height, width = still.height, still.width
    if mask is not None and mask.shape != (height, width):
        raise ValueError(f"mask {mask.shape} must match the still {(height, width)}")
    full_weights = full_resolution_weights(weights, width, height)
    if mask is not None:
        full_weights = full_weights * mask  # pinned pixels count as static background
    (outdir / "frames").mkdir(parents=True, exist_ok=True)
    (outdir / "displacement").mkdir(parents=True, exist_ok=True)
    writer = io.VideoWriter(video, fps) if video is not None else None
    progress.start("rendering", total or 0)
    count = 0
    try:
        for displacement in displacements:
            full = spectral.resample_displacement(np.asarray(displacement, np.float32), width, height)
            if mask is not None:
                full = full * mask[None]
            if not np.isfinite(full).all():
                raise UserError(f"motion of frame {count} contains NaN or infinite values")
            rgb, alpha = renderer.render(still.rgb, still.alpha, full, full_weights)
            io.write_displacement_exr(outdir / "displacement" / f"{count:04d}.exr", full)
            io.write_png(outdir / "frames" / f"{count:04d}.png", rgb, alpha, bit_depth)
            if writer is not None:
                writer.append(rgb)
            count += 1
            progress.advance()
        if writer is not None:
            writer.close()
            writer = None
    finally:
        if writer is not None:
            writer.abort()
    return count


def _motion_volume(still: io.Still, options: AnimateOptions, mask: np.ndarray | None,
                   progress: Progress) -> spectral.SpectralVolume:
    """The spectral volume for the still from the motion file or the chosen source."""
    if options.motion is not None:
        return spectral.load_volume(options.motion)
    if options.source == "procedural":
        from gdyn_backend.presets import load_preset
        from gdyn_backend.sources import procedural

        return procedural.sample_volume(still, load_preset(options.preset), seed=options.seed, mask=mask)
    if options.checkpoint is None:
        raise UserError("--source model needs --checkpoint FILE (a trained motion model)")
    from gdyn_backend.sources import model

    # The loop the guidance closes is the animation's, in the model's time
    # (`--speed` later multiplies every frequency).
    loop_seconds = options.frames / options.fps * options.speed
    return model.sample_volume(still, Path(options.checkpoint), seed=options.seed, loop=options.loop,
                               steps=options.steps, progress=progress, loop_seconds=loop_seconds)


def _pinned(volume: spectral.SpectralVolume, mask: np.ndarray) -> spectral.SpectralVolume:
    """The volume with the mask (resized to the motion resolution) multiplied in."""
    small = cv2.resize(mask, (volume.width, volume.height), interpolation=cv2.INTER_AREA)
    return volume.with_amplitude(volume.amplitude * small[None, None])


def edited_volume(volume: spectral.SpectralVolume, options: AnimateOptions) -> spectral.SpectralVolume:
    """Apply --amplitude, --speed and --loop (in that order; the loop snaps last)."""
    volume = spectral.scaled(volume, options.amplitude)
    volume = spectral.retimed(volume, options.speed)
    if options.loop:
        volume = spectral.looped(volume, int(options.frames), float(options.fps))
    return volume


def animate(image, outdir, options: AnimateOptions | None = None,
            progress: Progress | None = None) -> AnimateResult:
    """Animate a still into OUTDIR (whole or not at all); see the module docstring."""
    options = options or AnimateOptions()
    options.validate()
    progress = progress or Progress()
    outdir = Path(outdir)
    still = io.read_image(image)
    mask = io.read_mask(options.mask, still.width, still.height) if options.mask is not None else None
    renderer = make_renderer(options.renderer_checkpoint)
    volume = edited_volume(_motion_volume(still, options, mask, progress), options)
    weights = spectral.mean_displacement_magnitude(volume)
    times = spectral.frame_times(int(options.frames), float(options.fps))
    bit_depth = int(options.bit_depth or still.bit_depth)
    video = Path(options.video) if options.video is not None else None
    with io.atomic_output_dir(outdir) as tmp:
        video_target = io.staged_path(video, outdir, tmp) if video is not None else None
        count = render_sequence(still, (spectral.displacement_at(volume, t) for t in times), weights,
                                tmp, fps=float(options.fps), renderer=renderer, mask=mask,
                                bit_depth=bit_depth, video=video_target, progress=progress,
                                total=len(times))
        # The saved volume has the mask multiplied in (at motion resolution), so it
        # replays the pinned motion; the frames use the exact full-resolution mask.
        spectral.save_volume(volume if mask is None else _pinned(volume, mask), tmp / "motion.safetensors")
    return AnimateResult(outdir, count, outdir / "motion.safetensors", video, volume.source)
