"""Exact seamless loops of procedural motion for any frame count and fps.

For a loop of N frames the animation plays frames 0..N-1 and then frame 0
again, so frame N must equal frame 0 (position) and the step into it must
continue the motion (velocity). Held: |F_N - F_0| < 1e-3 px, velocity jump
|(F_{N+1} - F_N) - (F_1 - F_0)| < 1e-3 px, both well under the median
frame-to-frame step; the step across the seam (F_0 - F_{N-1}) is no larger
than the largest ordinary step. Frame 0 is the still: F_0 = 0 exactly.
Edits go through `animate.edited_volume` (amplitude, speed, then loop), the
order `gdyn animate` uses.
"""

import numpy as np
import pytest
from synthetic import plant_scene

from gdyn_backend import io, spectral
from gdyn_backend.animate import AnimateOptions, edited_volume
from gdyn_backend.presets import load_preset
from gdyn_backend.sources.procedural import sample_volume

CASES = [(97, 24.0), (150, 30.0), (61, 12.5), (10, 30.0), (33, 7.0), (2, 30.0)]
EDITS = [(1.0, 1.0), (2.3, 0.5), (0.4, 1.7)]  # (amplitude, speed)


@pytest.fixture(scope="module")
def volume():
    rgb, _ = plant_scene(seed=4)
    return sample_volume(io.Still(rgb, None, 8), load_preset("gusty_wind"), seed=5, motion_size=64)


def _step_norms(a, b):
    """Per-pixel displacement change |a - b| [H, W] in pixels."""
    return np.sqrt(((a - b) ** 2).sum(axis=0))


@pytest.mark.parametrize("frames, fps", CASES)
@pytest.mark.parametrize("amplitude, speed", EDITS)
def test_loop_closes_in_position_and_velocity(volume, frames, fps, amplitude, speed):
    options = AnimateOptions(frames=frames, fps=fps, loop=True, amplitude=amplitude, speed=speed)
    loop = edited_volume(volume, options)
    f = spectral.motion_texture(loop, spectral.frame_times(frames + 2, fps))  # [N+2, 2, H, W]
    assert np.all(f[0] == 0.0), "frame 0 must be the still"
    moving = np.sqrt((f ** 2).sum(axis=1)).max(axis=0) > 1e-3
    steps = np.stack([_step_norms(f[t + 1], f[t])[moving] for t in range(frames)])  # [N, M]
    typical = float(np.median(steps))
    seam = float(_step_norms(f[frames], f[0])[moving].max())
    jump = float(_step_norms(f[frames + 1] - f[frames], f[1] - f[0])[moving].max())
    assert typical > 1e-3, "the loop must move"
    assert seam < 1e-3 and seam < 0.01 * typical, f"|F_N - F_0| = {seam:.2e} px, typical step {typical:.3f}"
    assert jump < 1e-3 and jump < 0.01 * typical, f"velocity jump {jump:.2e} px, typical step {typical:.3f}"
    # The step from the last frame back to frame 0 is an ordinary step.
    across = _step_norms(f[0], f[frames - 1])[moving].mean()
    ordinary = steps[:-1].mean(axis=1)
    assert across <= ordinary.max() * 1.0001 + 1e-6, (across, ordinary.max())


@pytest.mark.parametrize("frames, fps", CASES[:3])
def test_loop_keeps_the_tempo_and_the_size(volume, frames, fps):
    """Snapping moves each band by at most half a cycle per loop; amplitude scales exactly."""
    options = AnimateOptions(frames=frames, fps=fps, loop=True, amplitude=2.0, speed=1.5)
    loop = edited_volume(volume, options)
    duration = frames / fps
    wanted = volume.frequencies_hz * 1.5
    nyquist_cycles = np.floor((frames - 1) / 2)
    ok = (wanted * duration >= 0.5) & (wanted * duration <= nyquist_cycles)
    assert np.all(np.abs(loop.frequencies_hz - wanted)[ok] <= 0.5 / duration + 1e-9)
    assert np.array_equal(loop.amplitude, volume.amplitude * np.float32(2.0))


def test_rendered_loop_returns_to_the_still(volume):
    """Render frame N of a 33-frame 7 fps loop: the still again, like frame 0."""
    from gdyn_backend.render.default import DefaultRenderer

    rgb, _ = plant_scene(seed=4)
    small = np.ascontiguousarray(rgb[::3, ::3][: volume.height, : volume.width])
    loop = edited_volume(volume, AnimateOptions(frames=33, fps=7.0, loop=True, speed=1.3))
    weights = spectral.mean_displacement_magnitude(loop)
    renderer = DefaultRenderer(device="cpu")
    first, _ = renderer.render(small, None, spectral.displacement_at(loop, 0.0), weights)
    middle, _ = renderer.render(small, None, spectral.displacement_at(loop, 16 / 7.0), weights)
    last, _ = renderer.render(small, None, spectral.displacement_at(loop, 33 / 7.0), weights)
    assert np.abs(last - first).max() < 1e-3
    assert np.abs(middle - first).max() > 0.05  # it did move in between
