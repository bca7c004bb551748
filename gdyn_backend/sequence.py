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
Frames are encoded on two threads while the next one renders; at most
`WRITE_AHEAD` finished frames wait to be written, so memory does not grow
with the frame count.
"""

from __future__ import annotations

import os
import shutil
from collections import deque
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
WRITE_AHEAD = 1  # frames that may wait or encode while the next one renders
MEMORY_LIMIT_ENV = "GDYN_MEMORY_LIMIT"
DEFAULT_MEMORY_LIMIT = 4 << 30
# Peak memory of `gdyn animate` = MEMORY_BASE + MEMORY_PER_PIXEL x still pixels (+ the alpha term),
# fitted to measured peaks at 1024x640 to 3840x2160 (README, "Performance") and rounded up.
MEMORY_BASE = 420 << 20
MEMORY_PER_PIXEL = 160
MEMORY_PER_ALPHA_PIXEL = 50
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


def memory_limit() -> int:
    """Bytes a job may use: $GDYN_MEMORY_LIMIT ("6G", "6000M", "6442450944") or `DEFAULT_MEMORY_LIMIT`."""
    text = os.environ.get(MEMORY_LIMIT_ENV, "").strip().upper()
    if not text:
        return DEFAULT_MEMORY_LIMIT
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(text[-1:], 1)
    try:
        value = float(text[:-1] if scale > 1 else text) * scale
    except ValueError:
        value = float("nan")
    if not (np.isfinite(value) and value > 0):
        raise UserError(f"{MEMORY_LIMIT_ENV} must be a size such as 6G or 6000M, got {text!r}")
    return int(value)


@dataclass
class ResourceEstimate:
    """What a job on a width x height still needs, in bytes: peak memory and disk for all frames."""

    memory: int
    disk: int

    @classmethod
    def of(cls, width: int, height: int, channels: int, bit_depth: int, frames: int) -> ResourceEstimate:
        """channels: 3 (RGB) or 4 (with alpha) of the still; bit_depth of the PNG frames."""
        pixels = width * height
        memory = MEMORY_BASE + pixels * (MEMORY_PER_PIXEL + (MEMORY_PER_ALPHA_PIXEL if channels == 4 else 0))
        png = pixels * channels * bit_depth // 8 // 2  # 8-bit photos compress about 2x and more at level 1
        exr = pixels * 8 + 4096  # float R and G barely compress (OpenCV's zero B channel does)
        return cls(int(memory), int(frames) * (png + exr))


def _size(nbytes: float) -> str:
    """A byte count for people: '512 kB', '3.4 MB', '18,688 GB'."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:,.1f} {unit}" if nbytes < 100 * scale else f"{nbytes / scale:,.0f} {unit}"
    return f"{int(nbytes)} bytes"


def check_resources(image, outdir, frames: int, bit_depth: int | None) -> ResourceEstimate | None:
    """Refuse, with one line, a job whose still needs more memory than `memory_limit()` or whose
    frames need more disk than is free where OUTDIR will be written. Reads only the image's header,
    so a still too large to decode is refused before it is decoded. Returns the estimate (None when
    the header cannot be read)."""
    header = io.image_header(image)
    if header is None:
        return None
    width, height, channels, depth = header.width, header.height, header.channels, header.bit_depth
    estimate = ResourceEstimate.of(width, height, channels, int(bit_depth or depth), int(frames))
    limit = memory_limit()
    if estimate.memory > limit:
        per_pixel = (estimate.memory - MEMORY_BASE) / (width * height)
        side = int(np.sqrt(max(limit - MEMORY_BASE, 0) / per_pixel * width / height))  # the width that fits
        raise UserError(f"a {width}x{height} still needs about {estimate.memory / 2 ** 30:.1f} GiB of memory to "
                        f"animate, more than the {limit / 2 ** 30:.1f} GiB allowed; downscale it to about "
                        f"{side} px wide, or raise {MEMORY_LIMIT_ENV} (e.g. {MEMORY_LIMIT_ENV}="
                        f"{int(np.ceil(estimate.memory / 2 ** 30))}G) if this machine has the memory")
    folder = Path(outdir).resolve().parent
    while not folder.exists():
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if estimate.disk > free:
        fits = max(int(free // max(estimate.disk // max(int(frames), 1), 1)), 0)
        raise UserError(f"disk full for this job: {int(frames)} frames of {width}x{height} need about "
                        f"{_size(estimate.disk)} but {folder} has {_size(free)} free; ask for at most "
                        f"{fits} frames (--frames), or write to a larger disk")
    return estimate


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


class _FrameWriter:
    """Writes each frame's PNG and EXR on worker threads while the caller renders the next frame.

    At most `WRITE_AHEAD` frames wait or encode at a time, so memory stays
    bounded; `submit` blocks until older frames are on disk and returns how
    many frames it saw finish (in order). A failed write is raised by the
    next `submit` or by `finish`. `close` waits for every running write, so
    nothing is written after it returns (the output folder can be removed).
    """

    def __init__(self, outdir: Path, bit_depth: int):
        from concurrent.futures import ThreadPoolExecutor

        self.outdir, self.bit_depth = outdir, bit_depth
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="gdyn-write")  # a PNG and an EXR at once
        self._pending: deque = deque()

    def submit(self, index: int, rgb: np.ndarray, alpha: np.ndarray | None, displacement: np.ndarray) -> int:
        self._pending.append((
            self._pool.submit(io.write_displacement_exr, self.outdir / "displacement" / f"{index:04d}.exr",
                              displacement),
            self._pool.submit(io.write_png, self.outdir / "frames" / f"{index:04d}.png", rgb, alpha,
                              self.bit_depth)))
        return self._wait(WRITE_AHEAD)

    def finish(self) -> int:
        return self._wait(0)

    def _wait(self, keep: int) -> int:
        done = 0
        while len(self._pending) > keep:
            for future in self._pending.popleft():
                future.result()
            done += 1
        return done

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _advance(progress: Progress, frames: int) -> None:
    """Report frames now on disk; with none, still honour a cancel."""
    if frames:
        progress.advance(frames)
    else:
        progress.check()


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
    progress:      advanced once per frame written (stage "rendering", `total` frames).
    Frames are encoded on two threads while the next one renders (`_FrameWriter`).
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
    writer = _FrameWriter(outdir, bit_depth)
    video_writer = io.VideoWriter(video, fps) if video is not None else None
    progress.start("rendering", total or 0)
    count = 0
    try:
        for displacement in displacements:
            if not np.isfinite(displacement).all():
                raise UserError(f"motion of frame {count} contains NaN or infinite values")
            full = full_resolution_displacement(displacement, width, height, mask)
            rgb, alpha = renderer.render(still.rgb, still.alpha, full, full_weights)
            if video_writer is not None:
                video_writer.append(rgb)
            _advance(progress, writer.submit(count, rgb, alpha, full))
            count += 1
        _advance(progress, writer.finish())
        if video_writer is not None:
            video_writer.close()
            video_writer = None
    finally:
        writer.close()
        if video_writer is not None:
            video_writer.abort()
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
