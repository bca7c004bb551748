"""`gdyn bench` section `prior`: the procedural motion prior and the whole default job.

Rows:
- seconds to sample the procedural spectral volume (what-moves analysis +
  16 bands at the 384 px motion resolution) for a 1024x640 still;
- seconds of the same analysis + sampling on a 512x320 still;
- seconds for that sampling plus the 150 looped displacement maps upsampled
  to 512x320 (the motion part of the job, no rendering, no files);
- seconds for the whole `gdyn animate` job (`animate.animate`: read the
  still, prior, 150-frame exact loop, default renderer, PNG frames and EXR
  displacement maps written) for a 1024 px still downscaled to a 512-wide
  still, against the target of 10 s, with the prior's share of it.
Quick mode: 8 frames of a 128-wide still.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import cv2

from gdyn_backend.bench import best_time

TARGET_S = 10.0


def run(table, quick: bool) -> None:
    from gdyn_backend import animate, io, spectral
    from gdyn_backend.example import draw_example_still
    from gdyn_backend.presets import DEFAULT_PRESET, load_preset
    from gdyn_backend.sources.procedural import sample_volume

    preset = load_preset(DEFAULT_PRESET)
    big = io.Still(draw_example_still(1024, 640), None, 8)
    repeats, warmup = (1, 0) if quick else (3, 1)
    t_big = best_time(lambda: sample_volume(big, preset, seed=0), repeats=repeats, warmup=warmup)
    table.add("prior", "sample volume, 1024x640 still", f"{t_big:.2f} s", "analysis + 16 bands at 384x240")
    width, frames = (128, 8) if quick else (512, 150)
    height = round(640 * width / 1024)
    small_rgb = cv2.resize(big.rgb, (width, height), interpolation=cv2.INTER_AREA)
    small = io.Still(small_rgb, None, 8)
    t_small = best_time(lambda: sample_volume(small, preset, seed=0), repeats=repeats, warmup=warmup)
    table.add("prior", f"sample volume, {width}x{height} still", f"{t_small:.2f} s", "")

    def motion_only():
        volume = spectral.looped(sample_volume(small, preset, seed=0), frames, 30.0)
        spectral.mean_displacement_magnitude(volume)
        for displacement in spectral.displacements(volume, spectral.frame_times(frames, 30.0)):
            spectral.resample_displacement(displacement, width, height)

    t_motion = best_time(motion_only, repeats=1, warmup=0)
    table.add("prior", f"prior + {frames} displacement maps, {width}x{height}", f"{t_motion:.1f} s",
              "no rendering or writing: the motion part of the job")

    with tempfile.TemporaryDirectory() as tmp:
        still_path = Path(tmp) / "still.png"
        io.write_png(still_path, small_rgb)
        options = animate.AnimateOptions(frames=frames, fps=30.0, loop=True)
        start = time.perf_counter()
        animate.animate(still_path, Path(tmp) / "out", options)
        total = time.perf_counter() - start
    verdict = "meets" if total < TARGET_S else "misses"
    table.add("prior", f"gdyn animate, {width}x{height}, {frames}-frame loop", f"{total:.1f} s",
              f"{verdict} the {TARGET_S:.0f} s target (full job incl. rendering + writing); "
              f"motion (prior + maps) {100 * t_motion / total:.0f} % of it")
