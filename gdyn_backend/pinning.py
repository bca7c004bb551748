"""The pin mask: one rule for `gdyn animate`, `gdyn simulate` and the live preview.

A mask M is float32 [H, W] at the still's resolution, values 0..1: 1 moves,
0 is pinned, grey scales the motion. It acts in two steps, each once:

1. Upstream, `pinned(volume, M)`: M area-averaged to the motion resolution
   multiplies every band of the spectral volume. Everything made from the
   volume sees the pin, grey included: animate's motion textures, the mode
   shapes of the simulation (a pinned point cannot be poked or dragged), the
   renderer's weights W(p) = mean_t |F_t(p)| and the saved motion file.
2. At full resolution, `cut(field, M)`: pixels where M = 0 are set to
   exactly 0 in every displacement and in the weights. The area average
   lets at most one motion pixel of motion leak across a black edge; the cut
   removes it, so black is exactly 0 px. Grey was applied in step 1 and is
   not applied again (a uniform 0.5 mask halves the motion).
"""

from __future__ import annotations

import cv2
import numpy as np

from gdyn_backend import spectral


def motion_mask(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    """A mask [H, W] (0..1) at the motion resolution [height, width], float32, by area average.

    A motion pixel is exactly 0 only where its whole footprint is 0.
    """
    mask = np.asarray(mask, np.float32)
    if mask.shape == (height, width):
        return mask
    return cv2.resize(mask, (width, height), interpolation=cv2.INTER_AREA)


def pinned(volume: spectral.SpectralVolume, mask: np.ndarray | None) -> spectral.SpectralVolume:
    """Step 1: the volume with M (still resolution, area-averaged to the volume's) in every band.

    mask: float32 [H, W] 0..1 at the still's resolution, or None (volume unchanged).
    """
    if mask is None:
        return volume
    small = motion_mask(mask, volume.width, volume.height)
    return volume.with_amplitude(volume.amplitude * small[None, None])


def cut(field: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Step 2: a full-resolution field [..., H, W] with exactly 0 where M [H, W] is 0."""
    if mask is None:
        return field
    return field * (np.asarray(mask) > 0)
