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

Real video (`measure_window`): a variable-frame-rate file decoded at a
constant rate repeats frames exactly (OpenCV's tree.avi: 68 real frames
decode to 449). A decoded frame equal to the one before is not measured: its
flow is interpolated linearly in time between the real frames around it, and
a window whose real frames are too far apart for its highest band is refused
(`check_motion`). The filters look at every frame of the window, not only its
average: a frame whose mean motion is over the limit, or whose picture the
flow cannot explain (something entering the shot: a hand, a person), rejects
the window and names the frames.

Conventions: a flow / trajectory frame is a forward displacement
float32 [2, H, W] in pixels of the motion resolution (x right, y down): the
pixel at p in the start frame is at p + F_t(p) in frame t.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from itertools import pairwise
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
# Transient filter: a pixel of frame t is unexplained when the frame, warped back by the flow,
# differs from the start frame by more than UNEXPLAINED_LEVEL gray levels (of 255). Swaying
# leaves scatter such pixels along thin edges; something entering the shot makes a solid
# region. An opening with a disk of UNEXPLAINED_OPENING_PX (at 256x160, scaled) keeps only
# regions, and a frame is transient when they cover over TRANSIENT_SHARE of the picture.
# On waving_trees.mp4: swaying conifers 0.3 % at most (frames 0-286); a person walking in,
# 2-15 % in frames 243-258 and nowhere else.
UNEXPLAINED_LEVEL = 40
UNEXPLAINED_OPENING_PX = 7
TRANSIENT_SHARE = 0.02
# Where decoded frames repeat, real frames must come at least this often per period of the
# highest kept band (linear interpolation between them is then within 30 % of a sinusoid's peak).
REAL_FRAMES_PER_PERIOD = 4


def default_bands(window: int) -> int:
    """K when --bands is not given: 16 (paper), or T/2+1 for a window of T < 30 frames."""
    return min(spectral.DEFAULT_BANDS, window // 2 + 1)


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


@dataclass
class WindowMotion:
    """What `measure_window` measured in one window of T frames of a clip.

    trajectories: float32 [T, 2, H, W], pixels of the motion resolution; element 0 is zero.
    real:         bool [T]; False where the decoded frame repeats the one before exactly (a
                  variable-frame-rate file decoded at a constant rate). Their flow is
                  interpolated linearly in time between the real frames around them (held
                  after the last one). The start frame is real.
    unexplained:  float64 [T], share of frame t's picture in solid regions the flow does not
                  explain (see UNEXPLAINED_LEVEL); 0 for the start frame and for repeats.
    start:        the clip's index of element 0 (frame numbers in messages are the clip's).
    start_frame:  float32 [h, w, 3], the start frame as read (RGB 0..1, the clip's size).
    """

    trajectories: np.ndarray
    real: np.ndarray
    unexplained: np.ndarray
    start: int
    start_frame: np.ndarray


def measure_window(frames: Iterable[np.ndarray], start: int = 0, window: int = DEFAULT_WINDOW,
                   width: int = DEFAULT_WIDTH, height: int = DEFAULT_HEIGHT,
                   progress: Progress | None = None) -> WindowMotion:
    """Forward displacement of every pixel of frame `start` at the next frames, and what the filters need.

    frames: RGB frames float [h, w, 3] in 0..1 (any size; they are resized to
            width x height), e.g. the iterator of `io.open_video`.
    start:  index of the start frame in `frames`.
    window: T, frames in the window including the start frame (T >= 2).
    Each real frame's flow is measured directly from the start frame (not
    chained); repeats are filled in (`WindowMotion`). A clip that ends before
    start + T frames raises UserError saying how many frames it has.
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
    grid = np.mgrid[0:height, 0:width][::-1].astype(np.float32)  # [2, H, W]: x, y of each pixel
    side = round(UNEXPLAINED_OPENING_PX * math.hypot(width, height) / math.hypot(DEFAULT_WIDTH, DEFAULT_HEIGHT))
    opening = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (max(3, side | 1),) * 2)
    out = np.zeros((window, 2, height, width), np.float32)
    real = np.zeros(window, bool)
    real[0] = True
    unexplained = np.zeros(window, np.float64)
    previous = first
    progress.start("flow", window - 1)
    for t in range(1, window):
        frame = next(frames, None)
        if frame is None:
            _too_short(read, start, window)
        read += 1
        if not np.array_equal(frame, previous):
            gray = to_gray(frame, width, height)
            out[t] = flow(reference, gray)
            real[t] = True
            unexplained[t] = _unexplained_share(reference, gray, out[t], grid, opening)
        previous = frame
        progress.advance()
    _fill_repeats(out, real)
    return WindowMotion(out, real, unexplained, start, np.array(first[:, :, :3], np.float32))


def extract_trajectories(frames: Iterable[np.ndarray], start: int = 0, window: int = DEFAULT_WINDOW,
                         width: int = DEFAULT_WIDTH, height: int = DEFAULT_HEIGHT,
                         progress: Progress | None = None) -> np.ndarray:
    """Only the trajectories float32 [T, 2, height, width] of `measure_window` (same arguments)."""
    return measure_window(frames, start, window, width, height, progress).trajectories


def _unexplained_share(reference: np.ndarray, target: np.ndarray, flow: np.ndarray, grid: np.ndarray,
                       opening: np.ndarray) -> float:
    """Share of the picture in solid regions (what survives an opening with `opening`, a uint8
    disk) where `target` (uint8 [H, W]) sampled at p + flow(p) differs from `reference` at p by
    more than UNEXPLAINED_LEVEL gray levels; flow float32 [2, H, W], grid its pixel positions."""
    position = grid + flow
    back = cv2.remap(target, position[0], position[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    unexplained = (np.abs(back.astype(np.int16) - reference) > UNEXPLAINED_LEVEL).astype(np.uint8)
    return float(cv2.morphologyEx(unexplained, cv2.MORPH_OPEN, opening).mean())


def _fill_repeats(trajectories: np.ndarray, real: np.ndarray) -> None:
    """In place: frames that are not real get the linear interpolation in time of the real
    frames around them, or the last real frame's value after it. trajectories [T, 2, H, W]."""
    known = np.flatnonzero(real)
    for a, b in pairwise(known):
        for t in range(a + 1, b):
            w = (t - a) / (b - a)
            trajectories[t] = (1 - w) * trajectories[a] + w * trajectories[b]
    trajectories[known[-1] + 1:] = trajectories[known[-1]]


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
    """Summary of a window's trajectories [T, 2, H, W] used by the §7.2 filters (`check_motion`).

    mean_motion_px:             mean over frames and pixels of |F_t(p)|, pixels.
    min_pixel_mean_motion_px:   min over pixels p of mean_t |F_t(p)|, pixels
                                (> 1 px at 256x160 means every pixel moves: camera motion).
    max_motion_px:              largest |F_t(p)| anywhere, pixels.
    width, height:              motion resolution the pixels refer to.
    peak_frame_mean_motion_px:  largest mean over pixels of |F_t(p)| of one frame, pixels;
    peak_frame:                 that frame (the clip's index).
    frames:                     T, the window length in frames.
    repeated_frames:            decoded frames that repeat the one before (`WindowMotion.real`);
    largest_gap_frames:         most frames from one real frame to the next (1: no repeats).
    transient_frames:           (first, last) frame (the clip's indices) whose picture the flow
                                does not explain (see TRANSIENT_SHARE), or None;
    unexplained_share_peak:     the largest such share of one frame (`WindowMotion.unexplained`).
    """

    mean_motion_px: float
    min_pixel_mean_motion_px: float
    max_motion_px: float
    width: int
    height: int
    peak_frame_mean_motion_px: float = 0.0
    peak_frame: int = 0
    frames: int = 0
    repeated_frames: int = 0
    largest_gap_frames: int = 1
    transient_frames: tuple[int, int] | None = None
    unexplained_share_peak: float = 0.0

    @property
    def threshold_scale(self) -> float:
        """Factor from pixels at 256x160 to pixels at this resolution (diagonal ratio)."""
        return math.hypot(self.width, self.height) / math.hypot(DEFAULT_WIDTH, DEFAULT_HEIGHT)

    def as_metadata(self) -> dict[str, str]:
        return {"mean_motion_px": f"{self.mean_motion_px:.4f}",
                "min_pixel_mean_motion_px": f"{self.min_pixel_mean_motion_px:.4f}",
                "max_motion_px": f"{self.max_motion_px:.4f}",
                "peak_frame_mean_motion_px": f"{self.peak_frame_mean_motion_px:.4f}",
                "repeated_frames": str(self.repeated_frames),
                "unexplained_share_peak": f"{self.unexplained_share_peak:.4f}"}


def motion_statistics(trajectories: np.ndarray, start: int = 0) -> MotionStatistics:
    """Statistics of trajectories float [T, 2, H, W] (pixels) for `check_motion`; frame numbers
    count from `start`, the clip's index of element 0."""
    t, _, h, w = trajectories.shape
    per_pixel = np.zeros((h, w), np.float64)
    largest = 0.0
    frame_means = np.zeros(t)
    for i, frame in enumerate(trajectories):  # bounded memory
        magnitude = np.sqrt(frame[0].astype(np.float64) ** 2 + frame[1].astype(np.float64) ** 2)
        per_pixel += magnitude
        largest = max(largest, float(magnitude.max()))
        frame_means[i] = magnitude.mean()
    per_pixel /= t
    peak = int(frame_means.argmax())
    return MotionStatistics(float(per_pixel.mean()), float(per_pixel.min()), largest, w, h,
                            float(frame_means[peak]), start + peak, t)


def window_statistics(motion: WindowMotion) -> MotionStatistics:
    """`motion_statistics` of a measured window with its repeats and transient frames."""
    stats = motion_statistics(motion.trajectories, motion.start)
    known = np.flatnonzero(motion.real)
    largest_gap = int(np.diff(np.append(known, len(motion.real))).max())  # after the last: as if one came next
    transient = np.flatnonzero(motion.unexplained > TRANSIENT_SHARE)
    return replace(stats, repeated_frames=int(len(motion.real) - len(known)), largest_gap_frames=largest_gap,
                   transient_frames=(motion.start + int(transient[0]), motion.start + int(transient[-1]))
                   if len(transient) else None,
                   unexplained_share_peak=float(motion.unexplained.max()))


def check_motion(stats: MotionStatistics, num_bands: int | None = None) -> str | None:
    """The reason to drop a window (one line), or None when it passes.

    Given the K bands kept: real frames too far apart where decoded frames
    repeat (variable frame rate). Then the paper's filters (§7.2): mean motion
    over 8 px over the window (flow most likely wrong), every pixel moving
    more than 1 px on average (camera motion), and the first one again on
    every frame (a transient large motion); the thresholds are pixels at
    256x160, scaled to the motion resolution. Last, frames the flow cannot
    explain (something entering the shot).
    """
    s = stats.threshold_scale
    at = f"{stats.width}x{stats.height}"
    limit = MAX_MEAN_MOTION_PX * s
    if num_bands is not None and num_bands > 1 and stats.largest_gap_frames > 1:
        period = stats.frames / (num_bands - 1)  # frames per cycle of the highest band
        if stats.largest_gap_frames > period / REAL_FRAMES_PER_PERIOD:
            most = int(stats.frames // (REAL_FRAMES_PER_PERIOD * stats.largest_gap_frames)) + 1
            advice = f"use --bands {most} or fewer, or" if most >= 2 else "use"
            return (f"{stats.repeated_frames} of the {stats.frames} decoded frames repeat the frame before "
                    f"(a variable frame rate, or a frozen picture) and real frames are up to {stats.largest_gap_frames} frames apart; "
                    f"{num_bands} bands need one at least every {period / REAL_FRAMES_PER_PERIOD:.1f} frames: "
                    f"{advice} a clip with a steady frame rate")
    if stats.mean_motion_px > limit:
        return (f"mean motion {stats.mean_motion_px:.2f} px is over the {limit:.2f} px "
                f"limit at {at} (flow is probably wrong or the motion is not a small oscillation)")
    if stats.min_pixel_mean_motion_px > CAMERA_MOTION_PX * s:
        return (f"every pixel moves at least {stats.min_pixel_mean_motion_px:.2f} px on average "
                f"(limit {CAMERA_MOTION_PX * s:.2f} px at {at}): the camera moves")
    if stats.peak_frame_mean_motion_px > limit:
        return (f"frame {stats.peak_frame}: mean motion {stats.peak_frame_mean_motion_px:.2f} px is over the "
                f"{limit:.2f} px limit at {at} (a transient large motion, or the flow is wrong)")
    if stats.transient_frames is not None:
        first, last = stats.transient_frames
        return (f"frames {first}-{last}: the flow cannot explain a region of up to {stats.unexplained_share_peak:.0%} "
                f"of the picture (over {TRANSIENT_SHARE:.0%}): something entered the shot, or the light changed")
    return None


# ---------------------------------------------------------------------------
# Video file -> spectral volume


def extract_volume(video_path, start: int = 0, window: int = DEFAULT_WINDOW,
                   num_bands: int | None = None, width: int = DEFAULT_WIDTH,
                   height: int | None = DEFAULT_HEIGHT, fps: float | None = None,
                   force: bool = False, progress: Progress | None = None
                   ) -> tuple[spectral.SpectralVolume, np.ndarray]:
    """The spectral volume [K, 4, height, width] of a video's motion (source "video") and its
    start frame, float32 [h, w, 3] RGB in 0..1 at the clip's size (the still it belongs to).

    video_path: a video file (mp4, avi, mov, ... anything ffmpeg reads) or a
                folder of images (one frame each, in name order).
    width, height: motion resolution in pixels; height None follows the
                clip's aspect ratio (rounded to even).
    num_bands:  K, the bands kept; None = `default_bands(window)`.
    fps:        frame rate in frames per second; default the file's own rate
                (30 for image folders). Sets the band frequencies k * fps / T Hz.
    force:      keep a window that fails the filters (`check_motion`);
                otherwise such a window raises UserError with the reason.
    Metadata records the clip, its frame rate and size, the start frame, the
    window, the flow method, the motion statistics and the filter outcome
    (`motion_check`: "passed" or "forced: <reason>").
    """
    if window < 2:
        raise UserError(f"--frames must be at least 2, got {window}")
    num_bands = default_bands(window) if num_bands is None else num_bands
    if not 1 <= num_bands <= window // 2 + 1:
        raise UserError(f"--bands must be between 1 and {window // 2 + 1} for a {window}-frame "
                        f"window, got {num_bands}")
    if fps is not None and not fps > 0:
        raise UserError(f"--fps must be positive, got {fps}")
    info, frames = open_video(video_path, fps_for_sequences=fps or 30.0)
    if height is None:
        height = max(16, 2 * round(width * info.height / info.width / 2))
    try:
        motion = measure_window(frames, start, window, width, height, progress)
    finally:
        close = getattr(frames, "close", None)
        if close is not None:
            close()  # release the decoder of a clip read only in part
    stats = window_statistics(motion)
    reason = check_motion(stats, num_bands)
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
    volume = spectral.volume_from_trajectories(motion.trajectories, clip_fps, num_bands, "video", metadata)
    return volume, motion.start_frame
