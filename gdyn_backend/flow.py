"""Motion of a real video: dense flow from a start frame to every later frame.

The paper (§7.2) computes ground-truth motion with a coarse-to-fine image
pyramid flow between a selected start frame and *every* later frame of a
149-frame window (direct, not chained frame to frame, so errors do not
accumulate), at the motion resolution (256x160), then filters clips whose
mean motion is over 8 px or where every pixel moves more than 1 px on
average (camera motion).

Flow method, chosen by measurement (`gdyn bench flow`): OpenCV's DIS
(Kroeger et al. 2016, dense inverse search), a coarse-to-fine pyramid of
patch searches with variational refinement on every level, tuned from its
"medium" preset to run down to the finest level (full motion resolution)
with a stronger smoothness term. On known warps of the six real test photos
at 256x160 it reaches a mean end-point error of 0.074 px, 0.17 px at the
95th percentile (stock "medium" preset: 0.10 px and 0.28 px, in about 40 %
of the time); Farneback's classic pyramid is slower and fails on low-texture
photos (0.33 px mean, up to 1 px). Initialising each pair from the previous
frame's flow did not help (measured), so each pair is solved on its own.

Conventions: a flow / trajectory frame is a forward displacement
float32 [2, H, W] in pixels of the motion resolution (x right, y down): the
pixel at p in the start frame is at p + F_t(p) in frame t.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

from gdyn_backend import spectral
from gdyn_backend.errors import UserError
from gdyn_backend.io import open_video
from gdyn_backend.progress import Progress

DEFAULT_WIDTH, DEFAULT_HEIGHT = 256, 160  # the paper's motion resolution
DEFAULT_WINDOW = 150  # start frame + the following 149 frames (paper §7.2)
FLOW_METHOD = "opencv-dis (medium, finest scale 0, stride 5, 5 descent iterations, alpha 30)"

# Paper §7.2 filters, in pixels at 256x160; they scale with the diagonal of
# the motion resolution so the same clip passes or fails at any --size.
MAX_MEAN_MOTION_PX = 8.0
CAMERA_MOTION_PX = 1.0


def to_gray(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    """An RGB frame float [h, w, 3] in 0..1 as uint8 gray [height, width].

    Area averaging when shrinking (no aliasing), bilinear when enlarging.
    """
    if frame.ndim != 3 or frame.shape[0] < 1 or frame.shape[1] < 1:
        raise UserError(f"video frame has zero size or no colour channels (shape {frame.shape})")
    h, w = frame.shape[:2]
    shrink = width <= w and height <= h
    small = cv2.resize(np.ascontiguousarray(frame[:, :, :3], np.float32), (width, height),
                       interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    return (np.clip(gray, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


class DenseFlow:
    """Coarse-to-fine dense flow (OpenCV DIS, tuned; see the module notes) between gray frames.

    One instance holds OpenCV state and is not thread-safe; make one per thread.
    """

    def __init__(self):
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        dis.setFinestScale(0)  # refine down to full motion resolution (preset: half)
        dis.setPatchStride(5)  # preset 3: 5 is faster at the same accuracy here
        dis.setGradientDescentIterations(5)  # preset 25: no gain beyond 5 here
        dis.setVariationalRefinementAlpha(30.0)  # preset 20: steadier in low texture
        self._dis = dis

    def __call__(self, start: np.ndarray, target: np.ndarray) -> np.ndarray:
        """Forward flow float32 [2, H, W] in pixels from `start` to `target`.

        start, target: uint8 [H, W] gray frames of the same size (see `to_gray`).
        """
        flow = self._dis.calc(start, target, None)  # [H, W, 2]
        return np.ascontiguousarray(flow.transpose(2, 0, 1), np.float32)


def extract_trajectories(frames: Iterable[np.ndarray], start: int = 0,
                         window: int = DEFAULT_WINDOW, width: int = DEFAULT_WIDTH,
                         height: int = DEFAULT_HEIGHT,
                         progress: Progress | None = None) -> np.ndarray:
    """Forward displacement of every pixel of frame `start` at the next frames.

    frames: RGB frames float [h, w, 3] in 0..1 (any size; they are resized to
            width x height), e.g. the iterator of `io.open_video`.
    start:  index of the start frame in `frames`.
    window: T, frames in the window including the start frame (T >= 2).
    Returns float32 [T, 2, height, width] in pixels of width x height;
    element 0 is zero. Each frame's flow is measured directly from the start
    frame (not chained). A clip that ends before start + T frames raises
    UserError saying how many frames it has.
    """
    if window < 2:
        raise UserError(f"the window must hold at least 2 frames, got {window}")
    if start < 0:
        raise UserError(f"the start frame must be 0 or later, got {start}")
    if width < 16 or height < 16:
        raise UserError(f"motion resolution {width}x{height} is too small; use at least 16x16")
    progress = progress or Progress()
    flow = DenseFlow()
    frames = iter(frames)
    read = 0
    if start:
        progress.start("seeking", start)
        for _ in range(start):
            if next(frames, None) is None:
                _too_short(read, start, window)
            read += 1
            progress.advance()
    first = next(frames, None)
    if first is None:
        _too_short(read, start, window)
    read += 1
    reference = to_gray(first, width, height)
    out = np.zeros((window, 2, height, width), np.float32)
    progress.start("flow", window - 1)
    for t in range(1, window):
        frame = next(frames, None)
        if frame is None:
            _too_short(read, start, window)
        read += 1
        out[t] = flow(reference, to_gray(frame, width, height))
        progress.advance()
    return out


def _too_short(frames_read: int, start: int, window: int) -> None:
    if frames_read <= 1:
        raise UserError(f"the clip has only {frames_read} readable frame(s); motion needs a "
                        f"video with at least {start + window} frames (start {start} + window {window})")
    raise UserError(f"the clip ends after {frames_read} readable frames but start frame {start} "
                    f"+ window {window} needs {start + window}; use a smaller --frames or --start "
                    "(or the file is truncated)")


# ---------------------------------------------------------------------------
# Paper §7.2 filters


@dataclass(frozen=True)
class MotionStatistics:
    """Summary of trajectories [T, 2, H, W] used by the §7.2 filters.

    mean_motion_px:             mean over frames and pixels of |F_t(p)|, pixels.
    min_pixel_mean_motion_px:   min over pixels p of mean_t |F_t(p)|, pixels
                                (> 1 px at 256x160 means every pixel moves: camera motion).
    max_motion_px:              largest |F_t(p)| anywhere, pixels.
    width, height:              motion resolution the pixels refer to.
    """

    mean_motion_px: float
    min_pixel_mean_motion_px: float
    max_motion_px: float
    width: int
    height: int

    @property
    def threshold_scale(self) -> float:
        """Factor from pixels at 256x160 to pixels at this resolution (diagonal ratio)."""
        return math.hypot(self.width, self.height) / math.hypot(DEFAULT_WIDTH, DEFAULT_HEIGHT)

    def as_metadata(self) -> dict[str, str]:
        return {"mean_motion_px": f"{self.mean_motion_px:.4f}",
                "min_pixel_mean_motion_px": f"{self.min_pixel_mean_motion_px:.4f}",
                "max_motion_px": f"{self.max_motion_px:.4f}"}


def motion_statistics(trajectories: np.ndarray) -> MotionStatistics:
    """Statistics of trajectories float [T, 2, H, W] (pixels) for `check_motion`."""
    t, _, h, w = trajectories.shape
    per_pixel = np.zeros((h, w), np.float64)
    largest = 0.0
    for frame in trajectories:  # bounded memory
        magnitude = np.sqrt(frame[0].astype(np.float64) ** 2 + frame[1].astype(np.float64) ** 2)
        per_pixel += magnitude
        largest = max(largest, float(magnitude.max()))
    per_pixel /= t
    return MotionStatistics(float(per_pixel.mean()), float(per_pixel.min()), largest, w, h)


def check_motion(stats: MotionStatistics) -> str | None:
    """The paper's reason to drop a clip (one line), or None when it passes.

    Fails when the mean motion is over 8 px (flow most likely wrong) or when
    every pixel moves more than 1 px on average (camera motion); both
    thresholds are pixels at 256x160, scaled to the motion resolution.
    """
    s = stats.threshold_scale
    at = f"{stats.width}x{stats.height}"
    if stats.mean_motion_px > MAX_MEAN_MOTION_PX * s:
        return (f"mean motion {stats.mean_motion_px:.2f} px is over the {MAX_MEAN_MOTION_PX * s:.2f} px "
                f"limit at {at} (flow is probably wrong or the motion is not a small oscillation)")
    if stats.min_pixel_mean_motion_px > CAMERA_MOTION_PX * s:
        return (f"every pixel moves at least {stats.min_pixel_mean_motion_px:.2f} px on average "
                f"(limit {CAMERA_MOTION_PX * s:.2f} px at {at}): the camera moves")
    return None


# ---------------------------------------------------------------------------
# Video file -> spectral volume


def extract_volume(video_path, start: int = 0, window: int = DEFAULT_WINDOW,
                   num_bands: int = spectral.DEFAULT_BANDS, width: int = DEFAULT_WIDTH,
                   height: int | None = DEFAULT_HEIGHT, fps: float | None = None,
                   force: bool = False, progress: Progress | None = None) -> spectral.SpectralVolume:
    """The spectral volume [K, 4, height, width] of a video's motion (source "video").

    video_path: a video file (mp4, avi, mov, ... anything ffmpeg reads) or a
                folder of images (one frame each, in name order).
    width, height: motion resolution in pixels; height None follows the
                clip's aspect ratio (rounded to even).
    fps:        frame rate in frames per second; default the file's own rate
                (30 for image folders). Sets the band frequencies k * fps / T Hz.
    force:      keep a clip that fails the paper's filters (`check_motion`);
                otherwise such a clip raises UserError with the reason.
    Metadata records the clip, its frame rate and size, the start frame, the
    window, the flow method, the motion statistics and the filter outcome
    (`motion_check`: "passed" or "forced: <reason>").
    """
    if not 1 <= num_bands <= window // 2 + 1:
        raise UserError(f"--bands must be between 1 and {window // 2 + 1} for a {window}-frame "
                        f"window, got {num_bands}")
    if fps is not None and not fps > 0:
        raise UserError(f"--fps must be positive, got {fps}")
    info, frames = open_video(video_path, fps_for_sequences=fps or 30.0)
    if height is None:
        height = max(16, 2 * round(width * info.height / info.width / 2))
    try:
        trajectories = extract_trajectories(frames, start, window, width, height, progress)
    finally:
        close = getattr(frames, "close", None)
        if close is not None:
            close()  # release the decoder of a clip read only in part
    stats = motion_statistics(trajectories)
    reason = check_motion(stats)
    if reason is not None and not force:
        raise UserError(f"clip rejected: {reason}; pass --force to keep it anyway")
    clip_fps = float(fps or info.fps)
    metadata = {
        "clip": Path(video_path).name,
        "clip_fps": repr(clip_fps),
        "clip_size": f"{info.width}x{info.height}",
        "start_frame": str(start),
        "window_frames": str(window),
        "flow_method": FLOW_METHOD,
        "motion_check": "passed" if reason is None else f"forced: {reason}",
        **stats.as_metadata(),
    }
    return spectral.volume_from_trajectories(trajectories, clip_fps, num_bands, "video", metadata)

