"""Live sessions of `gdyn serve`: the photo follows the user's hand, one frame per request.

    live_open   {image, motion, mask, damping, fps, width}  -> {session, width, height}
    live_step   {session, and at most one of hold: {x, y, dx, dy}, release: true,
                 poke: {x, y, dx, dy}}                      -> {frame, ms}
    live_close  {session}                                   -> {closed: true}

live_open: `image` the photo; `motion` a spectral volume file (default: the
procedural prior's volume for the photo with the default preset and seed 0,
what `gdyn animate IMAGE` would use); `mask` white moves, black is pinned
(the one rule, `gdyn_backend.pinning`, exactly as `gdyn simulate` applies it
to the photo); `damping` and `fps` as `gdyn simulate` (default 0.05 and 30:
one step is 1 / fps seconds of simulated time); `width` the preview's width
in pixels (default 512; a narrower photo keeps its size), its height keeps the
photo's aspect. The reply gives the session number and the preview's size.

live_step advances one frame. Positions and offsets are pixels of the PHOTO
(x right, y down, as `gdyn simulate`): `hold` holds pixel (x, y) displaced by
(dx, dy) from this step until `release` (send it again each step to drag);
`release` lets go, and the modes ring down from this step; `poke` pushes
(x, y) with strength (dx, dy) on this step (a one-frame `gdyn simulate`
poke). Step k of a session shows what frame k of `gdyn simulate` shows with
the same input: a hold at step k is a one-frame drag at frame k, a poke at
step k a poke at frame k - 1 (a poke acts on the step after its frame).

Frame files. Each step writes a new file `<session folder>/NNNNNN.rgba`
(NNNNNN = the step, from 1) and replies its path and `ms`, the time the
backend spent on the step (physics, render, file) in milliseconds. A file is
raw little-endian float32 RGBA, width x height x 4 values, rows from the
BOTTOM of the picture up: Blender's `Image.pixels` order, so the add-on
loads it with `array.array('f').fromfile` and `pixels.foreach_set`. Values
are those of `gdyn animate`'s PNG frames (the photo's own encoding, 0..1),
alpha 1 where the photo has none. Each session has its own temporary folder
(on the RAM disk /dev/shm where there is one) and keeps its last `FRAMES_KEPT` files (older ones are deleted, so read a
frame before asking for that many more); live_close and the server's exit
remove the folder. Every file appears whole (`io.atomic_path`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from gdyn_backend import io, params, spectral
from gdyn_backend.dynamics import DEFAULT_DAMPING
from gdyn_backend.errors import UserError
from gdyn_backend.live import LivePreview
from gdyn_backend.sequence import DEFAULT_FPS
from gdyn_backend.simulate import checked_point

DEFAULT_WIDTH = 512
MIN_WIDTH = 16
FRAMES_KEPT = 8
FRAME_SUFFIX = ".rgba"
# Frame folders go to this RAM disk where there is one (Linux), else to the system temp
# folder: writing a 512x341 frame took 1.7 ms there against 6.7 ms on the loaded disk.
FRAMES_ROOT = "/dev/shm"


@dataclass(frozen=True)
class LiveOpenOptions:
    """The params of `live_open` (see the module docstring)."""

    image: Path
    motion: Path | None = None
    mask: Path | None = None
    damping: float = DEFAULT_DAMPING
    fps: float = DEFAULT_FPS
    width: int = DEFAULT_WIDTH

    @classmethod
    def from_params(cls, request: dict) -> LiveOpenOptions:
        options = cls(**params.option_values(cls, request, "live_open"))
        if options.width < MIN_WIDTH:
            raise UserError(f"live_open: width must be at least {MIN_WIDTH} pixels, got {options.width}")
        if not (np.isfinite(options.fps) and options.fps > 0):
            raise UserError(f"live_open: fps must be a positive number, got {options.fps}")
        return options


@dataclass(frozen=True)
class LivePoint:
    """A point of the photo and an offset or strength, pixels (x right, y down)."""

    x: float
    y: float
    dx: float
    dy: float


@dataclass(frozen=True)
class LiveStepOptions:
    """The params of `live_step`: the session and at most one of hold, release, poke."""

    session: int
    hold: LivePoint | None = None
    release: bool = False
    poke: LivePoint | None = None

    @classmethod
    def from_params(cls, request: dict) -> LiveStepOptions:
        options = cls(**params.option_values(cls, request, "live_step"))
        if (options.hold is not None) + options.release + (options.poke is not None) > 1:
            raise UserError("live_step: give at most one of hold, release and poke")
        return options


@dataclass(frozen=True)
class LiveCloseOptions:
    """The params of `live_close`."""

    session: int


def preview_still(photo: io.Still, width: int) -> io.Still:
    """The photo scaled to `width` pixels (area average; never enlarged), aspect kept."""
    if photo.width <= width:
        return photo
    height = max(1, round(photo.height * width / photo.width))
    alpha = None if photo.alpha is None else cv2.resize(photo.alpha, (width, height), interpolation=cv2.INTER_AREA)
    return io.Still(cv2.resize(photo.rgb, (width, height), interpolation=cv2.INTER_AREA), alpha, photo.bit_depth)


def default_volume(photo: io.Still, mask: np.ndarray | None) -> spectral.SpectralVolume:
    """What `gdyn animate IMAGE [--mask M]` animates: the prior with the default preset, seed 0."""
    from gdyn_backend.presets import DEFAULT_PRESET, load_preset
    from gdyn_backend.sources import procedural

    return procedural.sample_volume(photo, load_preset(DEFAULT_PRESET), seed=0, mask=mask)


class LiveSession:
    """One open live session: a `LivePreview` of the photo and its folder of frame files.

    photo: the photo at its own size; mask: float32 [H, W] at the photo's size or None;
    volume: the motion; folder: an empty folder the session owns (removed by `close`).
    `steps` counts the steps taken; `displacement` is the last frame's forward
    displacement, float32 [2, h, w] in preview pixels (None before the first step).
    """

    def __init__(self, options: LiveOpenOptions, photo: io.Still, mask: np.ndarray | None,
                 volume: spectral.SpectralVolume, folder: Path):
        if not (volume.frequencies_hz > 0).any():
            raise UserError(f"live_open: {options.motion} has no oscillating bands (only 0 Hz), "
                            "so nothing can follow a drag")
        self.photo_size = photo.width, photo.height
        self.preview = LivePreview(volume, preview_still(photo, options.width), mask, damping=options.damping,
                                   fps=options.fps, image_size=self.photo_size)
        self.folder = folder
        self.steps = 0
        self.displacement: np.ndarray | None = None
        self._files: deque[Path] = deque()
        still = self.preview.still
        self._rgba = np.empty((still.height, still.width, 4), "<f4")

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the preview frames in pixels."""
        return self.preview.still.width, self.preview.still.height

    def step(self, options: LiveStepOptions) -> dict:
        """Apply the step's input, advance one frame, write it; {frame: path, ms}."""
        start = time.perf_counter()
        if options.hold is not None:
            self.preview.hold(*checked_point(options.hold, "live_step: hold", *self.photo_size))
        elif options.release:
            self.preview.release()
        elif options.poke is not None:
            self.preview.poke(*checked_point(options.poke, "live_step: poke", *self.photo_size))
        rgb, alpha, self.displacement = self.preview.frame()
        rgba = cv2.cvtColor(rgb, cv2.COLOR_RGB2RGBA)  # alpha 1; with cv2.flip 0.8 ms, numpy 3.4 ms
        if alpha is not None:
            rgba[:, :, 3] = alpha
        cv2.flip(rgba, 0, dst=self._rgba)
        self.steps += 1
        path = self.folder / f"{self.steps:06d}{FRAME_SUFFIX}"
        with io.atomic_path(path) as tmp:
            self._rgba.tofile(tmp)
        self._files.append(path)
        while len(self._files) > FRAMES_KEPT:
            self._files.popleft().unlink(missing_ok=True)
        return {"frame": str(path), "ms": round(1000.0 * (time.perf_counter() - start), 2)}

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


class LiveSessions:
    """The open sessions of one server, by number; the server calls these from one thread.

    The prior's volume of the last photo opened without `motion` is kept, so
    opening it again (another damping, fps or width) skips the prior: 1.1 s
    instead of 3.0 s measured for a 512 px photo on the loaded 2-core machine.
    """

    def __init__(self):
        self._sessions: dict[int, LiveSession] = {}
        self._next = 1
        self._last_prior: tuple[tuple, spectral.SpectralVolume] | None = None

    def _volume(self, options: LiveOpenOptions, photo: io.Still, mask: np.ndarray | None) -> spectral.SpectralVolume:
        """The motion file's volume, else the prior's for this photo and mask (kept for a re-open)."""
        if options.motion is not None:
            return spectral.load_volume(options.motion)
        key = tuple((str(Path(path).resolve()), Path(path).stat().st_mtime_ns)
                    for path in (options.image, options.mask) if path is not None)
        if self._last_prior is None or self._last_prior[0] != key:
            self._last_prior = key, default_volume(photo, mask)
        return self._last_prior[1]

    def open(self, request: dict) -> dict:
        options = LiveOpenOptions.from_params(request)
        photo = io.read_image(options.image)
        mask = io.read_mask(options.mask, photo.width, photo.height) if options.mask is not None else None
        volume = self._volume(options, photo, mask)
        root = FRAMES_ROOT if os.access(FRAMES_ROOT, os.W_OK) else None
        folder = Path(tempfile.mkdtemp(prefix="gdyn-live-", dir=root))
        try:
            session = LiveSession(options, photo, mask, volume, folder)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        number, self._next = self._next, self._next + 1
        self._sessions[number] = session
        width, height = session.size
        return {"session": number, "width": width, "height": height}

    def _session(self, number: int, request: str) -> LiveSession:
        if number not in self._sessions:
            raise UserError(f"{request}: no open live session {number}; open one with live_open")
        return self._sessions[number]

    def step(self, request: dict) -> dict:
        options = LiveStepOptions.from_params(request)
        return self._session(options.session, "live_step").step(options)

    def close(self, request: dict) -> dict:
        number = LiveCloseOptions(**params.option_values(LiveCloseOptions, request, "live_close")).session
        self._session(number, "live_close").close()
        del self._sessions[number]
        return {"closed": True}

    def close_all(self) -> None:
        for session in self._sessions.values():
            session.close()
        self._sessions.clear()
