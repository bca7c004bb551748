"""Training examples of the learned renderer: (start, target, flow, W) triples from videos.

Flow is measured by `gdyn_backend.flow` (tests use synthetic clips with known
flow instead). Clips are found as for the motion model's training pairs
(`gdyn_backend.model.data.find_clips`: video files and folders of frames).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from gdyn_backend.errors import UserError
from gdyn_backend.flow import DenseFlow, to_gray
from gdyn_backend.io import open_video
from gdyn_backend.model.data import find_clips
from gdyn_backend.progress import Progress


@dataclass
class Triple:
    """One training example (numpy, float32).

    start, target: [H, W, 3] 0..1 frames; flow: [2, H, W] forward flow from
    start to target in pixels; weights: [H, W] W(p) = mean_t |F_t(p)| of the
    window the pair came from, pixels.
    """

    start: np.ndarray
    target: np.ndarray
    flow: np.ndarray
    weights: np.ndarray


def triples_from_video(path, width: int, height: int, window: int = 30, pairs_per_window: int = 6,
                       max_windows: int = 8) -> Iterator[Triple]:
    """Training triples from one video or image folder.

    Frames are resized to width x height pixels; each window of `window`
    frames gives `pairs_per_window` (frame 0 -> frame t) pairs, t spread over
    the window, with W = mean over the window's flows of |F_t| (as for a
    spectral volume). At most `max_windows` windows are read.
    """
    _, frames = open_video(path)
    flow = DenseFlow()
    buffer: list[np.ndarray] = []
    done = 0
    for frame in frames:
        buffer.append(cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA))
        if len(buffer) < window:
            continue
        gray0 = to_gray(buffer[0], width, height)
        flows = [flow(gray0, to_gray(f, width, height)) for f in buffer[1:]]
        weights = np.mean([np.sqrt((f ** 2).sum(axis=0)) for f in flows], axis=0).astype(np.float32)
        for t in np.linspace(1, window - 1, pairs_per_window).round().astype(int):
            yield Triple(buffer[0], buffer[t], flows[t - 1], weights)
        buffer, done = [], done + 1
        if done >= max_windows:
            return


def triples_from_folder(videos_dir, width: int, height: int, window: int = 30,
                        progress: Progress | None = None) -> list[Triple]:
    """The triples of every clip under `videos_dir` (see `triples_from_video`).

    UserError when the folder is missing, holds no clips, or no clip has
    `window` frames.
    """
    clips = find_clips(videos_dir)
    progress = progress or Progress()
    progress.start("flow", len(clips))
    triples: list[Triple] = []
    for clip in clips:
        triples.extend(triples_from_video(clip, width, height, window))
        progress.advance()
    if not triples:
        raise UserError(f"no clip in {Path(videos_dir)} has {window} frames; use a smaller --window")
    return triples
