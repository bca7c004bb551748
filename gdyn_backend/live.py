"""The live preview: a still that responds to pokes and drags, one rendered frame at a time.

Where `gdyn simulate` renders a scheduled sequence to OUTDIR, a `LivePreview`
holds a running simulation that input changes between frames: `poke`,
`hold` and `release` take image pixels (as `gdyn simulate` does), `frame()`
advances the physics one step and renders it with the default renderer.
The preview may be smaller than the photo the user points at: coordinates
and the mask are in pixels of `image_size` (the photo), frames in pixels of
the preview still. The pin mask follows the one rule (`gdyn_backend.pinning`).
`gdyn serve` runs these as live sessions (`gdyn_backend.live_sessions`).
"""

from __future__ import annotations

import time

import numpy as np

from gdyn_backend import io, pinning, spectral
from gdyn_backend.dynamics import DEFAULT_DAMPING, ModalSimulator
from gdyn_backend.sequence import full_resolution_displacement, full_resolution_weights, make_renderer
from gdyn_backend.simulate import to_motion_pixels


class LivePreview:
    """The modal simulation of a still plus the default renderer: one displayed frame per `frame()`.

    volume:     the spectral volume (motion resolution, any source); its bands with
                f > 0 are the modes.
    still:      the preview shown (`io.Still`, any size, e.g. 512 px wide).
    mask:       float32 [H, W] at `image_size`, 1 moves, 0 pinned, grey scales, or None.
    damping, fps, integrator: as `dynamics.ModalSimulator` (fps default: the volume's).
    renderer:   object with `render(rgb, alpha, displacement, weights)`; default renderer if None.
    image_size: (width, height) of the photo whose pixels `poke`/`hold` and the mask
                use; default the still's own size.

    `simulator` is the `ModalSimulator` of the pinned volume (pinned exactly as
    `gdyn simulate` pins it for a photo of `image_size`). `frame()` steps it one
    frame and returns (rgb [h, w, 3] float32 0..1, alpha [h, w] or None,
    displacement [2, h, w] in preview pixels), h x w the preview's size.
    `timings` holds the last step, synthesis (modal sum and resize to the
    preview) and render times in seconds.
    """

    def __init__(self, volume: spectral.SpectralVolume, still: io.Still, mask: np.ndarray | None = None, *,
                 damping: float = DEFAULT_DAMPING, fps: float | None = None, integrator: str = "exact",
                 renderer=None, image_size: tuple[int, int] | None = None):
        volume = pinning.pinned(volume, mask)
        self.simulator = ModalSimulator(volume, damping, fps, integrator)
        self.still = still
        # The cut at the preview's size: 0 exactly where a preview pixel's whole footprint is black.
        self.mask = None if mask is None else pinning.motion_mask(mask, still.width, still.height)
        self.renderer = renderer or make_renderer()
        self.weights = full_resolution_weights(spectral.mean_displacement_magnitude(volume),
                                               still.width, still.height, self.mask)
        self._scale = image_size or (still.width, still.height), (volume.width, volume.height)
        self.timings = {"step": 0.0, "synthesis": 0.0, "render": 0.0}

    def poke(self, x: float, y: float, dx: float, dy: float, duration: int = 1) -> None:
        """Push image pixel (x, y) with strength (dx, dy) image pixels over the next `duration` frames."""
        self.simulator.apply_poke(*to_motion_pixels(x, y, dx, dy, *self._scale), duration)

    def hold(self, x: float, y: float, dx: float, dy: float) -> None:
        """Hold image pixel (x, y) displaced by (dx, dy) image pixels until `release()`."""
        self.simulator.hold(*to_motion_pixels(x, y, dx, dy, *self._scale))

    def release(self) -> None:
        self.simulator.release()

    def frame(self) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        t0 = time.perf_counter()
        self.simulator.advance()
        t1 = time.perf_counter()
        full = full_resolution_displacement(self.simulator.displacement(), self.still.width, self.still.height,
                                            self.mask)
        t2 = time.perf_counter()
        rgb, alpha = self.renderer.render(self.still.rgb, self.still.alpha, full, self.weights)
        t3 = time.perf_counter()
        self.timings = {"step": t1 - t0, "synthesis": t2 - t1, "render": t3 - t2}
        return rgb, alpha, full
