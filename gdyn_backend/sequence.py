"""The output folder of `gdyn animate` and `gdyn simulate`: displacements -> frames on disk.

Both commands make a stream of displacement fields at the motion resolution
(animate: motion textures of a spectral volume; simulate: the modal
response of one) and hand it, with the volume that made it, to
`write_sequence`, which fills an atomic output folder:

    OUTDIR/frames/NNNN.png         rendered frames (8 or 16 bit, alpha kept)
    OUTDIR/displacement/NNNN.exr   forward displacement F_t at full resolution
                                   (R = x, G = y, pixels of the output)
    OUTDIR/motion.safetensors      the spectral volume used (pin mask in it)

The pin mask follows `gdyn_backend.pinning`: the volume comes here already
pinned, and this module cuts pinned pixels to exactly 0 at full resolution.
Memory does not grow with the frame count: one displacement field and one
frame exist at a time.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from gdyn_backend import io, pinning, spectral
from gdyn_backend.errors import UserError
from gdyn_backend.progress import Progress

DEFAULT_FRAMES = 150  # the paper's T: 5 s at 30 fps
DEFAULT_FPS = 30.0
VIDEO_SUFFIXES = (".mp4", ".gif")


@dataclass
class RenderResult:
    """What `animate` or `simulate` wrote: the output folder, frame count, motion file,
    video (or None), and what made the motion ("procedural", "model", "video",
    "simulation of procedural", ...)."""

    outdir: Path
    frames: int
    motion: Path
    video: Path | None
    source: str


def check_sequence_options(frames: int, fps: float, bit_depth: int | None, video: Path | None) -> None:
    """UserError (naming the CLI option) unless frames >= 1, fps > 0, bit_depth in 8/16/None
    and the video, if any, is an .mp4 or .gif."""
    if int(frames) < 1:
        raise UserError(f"--frames must be at least 1, got {frames}")
    if not (np.isfinite(fps) and fps > 0):
        raise UserError(f"--fps must be a positive number, got {fps}")
    if bit_depth not in (None, 8, 16):
        raise UserError(f"--bit-depth must be 8 or 16, got {bit_depth}")
    if video is not None and Path(video).suffix.lower() not in VIDEO_SUFFIXES:
        raise UserError(f"--video must end in .mp4 or .gif, got {Path(video).name}")


def make_renderer(checkpoint: Path | None = None):
    """The learned renderer when a checkpoint is given, else the default renderer."""
    if checkpoint is not None:
        from gdyn_backend.render.learned import LearnedRenderer

        return LearnedRenderer.from_checkpoint(checkpoint)
    from gdyn_backend.render.default import DefaultRenderer

    return DefaultRenderer()


def full_resolution_weights(weights: np.ndarray, width: int, height: int,
                            mask: np.ndarray | None = None) -> np.ndarray:
    """W [h, w] in motion pixels -> [height, width] in output pixels (bilinear), pinned pixels 0.

    weights: float32 [h, w] of the pinned volume (`spectral.mean_displacement_magnitude`).
    mask:    the pin mask [height, width] or None (`pinning.cut`).
    """
    h, w = weights.shape
    factor = 0.5 * (width / w + height / h)
    resized = cv2.resize(np.asarray(weights, np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    return pinning.cut((resized * np.float32(factor)).astype(np.float32), mask)


def full_resolution_displacement(displacement: np.ndarray, width: int, height: int,
                                 mask: np.ndarray | None = None) -> np.ndarray:
    """A displacement [2, h, w] in motion pixels -> float32 [2, height, width] in output pixels,
    pinned pixels exactly 0 (mask [height, width] or None, `pinning.cut`)."""
    full = spectral.resample_displacement(np.asarray(displacement, np.float32), width, height)
    return pinning.cut(full, mask)


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
    mask:          pin mask float32 [H, W] in 0..1 whose 0s are cut to exactly
                   0 in every displacement and the weights (`pinning`), or None.
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
    full_weights = full_resolution_weights(weights, width, height, mask)
    (outdir / "frames").mkdir(parents=True, exist_ok=True)
    (outdir / "displacement").mkdir(parents=True, exist_ok=True)
    writer = io.VideoWriter(video, fps) if video is not None else None
    progress.start("rendering", total or 0)
    count = 0
    try:
        for displacement in displacements:
            full = full_resolution_displacement(displacement, width, height, mask)
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


def write_sequence(still: io.Still, volume: spectral.SpectralVolume, displacements: Iterable[np.ndarray],
                   outdir, *, fps: float, source: str, renderer=None, mask: np.ndarray | None = None,
                   bit_depth: int | None = None, video=None, progress: Progress | None = None,
                   total: int | None = None) -> RenderResult:
    """Fill OUTDIR (whole or not at all) with the frames of `displacements` and `volume`.

    volume:  the pinned spectral volume the displacements come from; saved as
             OUTDIR/motion.safetensors, and its W(p) = mean_t |F_t(p)| weights the renderer.
    source:  what made the motion (`RenderResult.source`).
    bit_depth: 8 or 16, None = the still's own depth; video: .mp4/.gif path
    (inside OUTDIR it appears with the folder); the rest as `render_sequence`.
    """
    outdir = Path(outdir)
    video = Path(video) if video is not None else None
    weights = spectral.mean_displacement_magnitude(volume)
    with io.atomic_output_dir(outdir) as tmp:
        target = io.staged_path(video, outdir, tmp) if video is not None else None
        count = render_sequence(still, displacements, weights, tmp, fps=fps, renderer=renderer, mask=mask,
                                bit_depth=int(bit_depth or still.bit_depth), video=target,
                                progress=progress, total=total)
        spectral.save_volume(volume, tmp / "motion.safetensors")
    return RenderResult(outdir, count, outdir / "motion.safetensors", video, source)
