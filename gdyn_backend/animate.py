"""The animation pipeline: still + spectral volume -> frames, displacement maps, video.

`animate` is what `gdyn animate` and the add-on's backend (`gdyn serve`)
both run: read the still, get a spectral volume (a motion file, the
procedural prior or the learned model), apply amplitude, speed and loop
edits and the pin mask (`gdyn_backend.pinning`), then stream its motion
textures to disk with `sequence.write_sequence` (the OUTDIR layout is there).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gdyn_backend import io, params, pinning, spectral
from gdyn_backend.errors import UserError
from gdyn_backend.presets import DEFAULT_PRESET
from gdyn_backend.progress import Progress
from gdyn_backend.sequence import (DEFAULT_FPS, DEFAULT_FRAMES, RenderResult, check_resources,
                                   check_sequence_options, make_renderer, write_sequence)

SOURCES = ("procedural", "model")


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
        if self.source not in SOURCES:
            raise UserError(f"unknown motion source {self.source!r}; choose from {', '.join(SOURCES)}")
        check_sequence_options(self.frames, self.fps, self.bit_depth, self.video)
        if not (np.isfinite(self.amplitude) and self.amplitude >= 0):
            raise UserError(f"--amplitude must be a number >= 0, got {self.amplitude}")
        if not (np.isfinite(self.speed) and self.speed > 0):
            raise UserError(f"--speed must be a positive number, got {self.speed}")
        if self.steps is not None and int(self.steps) < 1:
            raise UserError(f"--steps must be at least 1, got {self.steps}")
        if self.loop and int(self.frames) < 2:
            raise UserError(f"--loop needs at least 2 frames, got {self.frames}")
        params.check_seed(self.seed)

    @classmethod
    def from_params(cls, request: dict) -> AnimateOptions:
        """The options of an `animate` request's JSON params (the CLI's option names, `params`
        reads them); `source` "motion" means: use `motion`. UserError naming a bad key."""
        values = params.option_values(cls, request, "animate", extra=("image", "output"))
        if values.get("source") == "motion":
            if values.get("motion") is None:
                raise UserError('animate: source "motion" needs a "motion" file')
            del values["source"]
        return cls(**values)


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


def edited_volume(volume: spectral.SpectralVolume, options: AnimateOptions) -> spectral.SpectralVolume:
    """Apply --amplitude, --speed and --loop (in that order; the loop snaps last)."""
    volume = spectral.scaled(volume, options.amplitude)
    problem = spectral.implausible(volume.amplitude)
    if problem is not None:
        raise UserError(f"--amplitude {options.amplitude:g} is too large: the motion {problem}")
    volume = spectral.retimed(volume, options.speed)
    if options.loop:
        volume = spectral.looped(volume, int(options.frames), float(options.fps))
    return volume


def animate(image, outdir, options: AnimateOptions | None = None,
            progress: Progress | None = None) -> RenderResult:
    """Animate a still into OUTDIR (whole or not at all); see the module docstring."""
    options = options or AnimateOptions()
    options.validate()
    progress = progress or Progress()
    check_resources(image, outdir, options.frames, options.bit_depth)
    still = io.read_image(image)
    mask = io.read_mask(options.mask, still.width, still.height) if options.mask is not None else None
    renderer = make_renderer(options.renderer_checkpoint)
    volume = pinning.pinned(edited_volume(_motion_volume(still, options, mask, progress), options), mask)
    times = spectral.frame_times(int(options.frames), float(options.fps))
    return write_sequence(still, volume, spectral.displacements(volume, times), outdir,
                          fps=float(options.fps), source=volume.source, renderer=renderer, mask=mask,
                          bit_depth=options.bit_depth, video=options.video, progress=progress,
                          total=len(times))
