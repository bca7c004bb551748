"""`gdyn bench` section `dynamics`: one live-preview frame of the modal simulation.

A preview frame is what the add-on shows while the user drags a point:
modal step (all modes, one frame) + displacement synthesis (Re sum_k A_k q_k
at the motion resolution, resized to the preview) + the default renderer.
Measured at a 512x288 preview of a 256x144 motion volume with K = 16 bands
(15 modes; the paper's 256x160 motion resolution at 16:9), target < 40 ms
(25 fps). Rows give the median of each part over 120 frames of a ringing
simulation (the total also its fastest frame, which is what a loaded machine
still manages), and as baselines in the same run: forward Euler's step and
a naive synthesis (complex broadcast-multiply-sum over the modes).
"""

from __future__ import annotations

import time

import numpy as np

from gdyn_backend.bench import best_time

PREVIEW = (512, 288)
MOTION = (256, 144)
TARGET_MS = 40.0


def _volume(width: int, height: int, num_bands: int = 16, seed: int = 0):
    """Smooth random complex modes, a few pixels, K bands at k * 30 / 150 Hz."""
    import cv2

    from gdyn_backend import spectral

    rng = np.random.default_rng(seed)
    amp = np.zeros((num_bands, 4, height, width), np.float32)
    for k in range(1, num_bands):
        coarse = rng.standard_normal((4, 5, 8)).astype(np.float32) * (3.0 / k)
        amp[k] = np.stack([cv2.resize(c, (width, height), interpolation=cv2.INTER_CUBIC) for c in coarse])
    return spectral.SpectralVolume(amp, spectral.band_frequencies(num_bands, 30.0, 150), 30.0, 150, "bench")


def _still(width: int, height: int):
    import cv2

    from gdyn_backend.io import Still

    rng = np.random.default_rng(1)
    rgb = cv2.resize(rng.random((height // 8, width // 8, 3)).astype(np.float32), (width, height))
    return Still(rgb, None, 8)


def run(table, quick: bool) -> None:
    from gdyn_backend.dynamics import ModalSimulator
    from gdyn_backend.live import LivePreview

    frames = 10 if quick else 120
    volume = _volume(*MOTION)
    preview = LivePreview(volume, _still(*PREVIEW))
    simulator = preview.simulator
    preview.poke(256, 144, 8.0, 3.0, duration=2)
    preview.frame()  # warm-up (first renderer call prepares the still)
    parts = {"step": [], "synthesis": [], "render": [], "total": []}
    for _ in range(frames):
        t0 = time.perf_counter()
        preview.frame()
        parts["total"].append(time.perf_counter() - t0)
        for key, value in preview.timings.items():
            parts[key].append(value)
    ms = {k: 1000.0 * float(np.median(v)) for k, v in parts.items()}
    repeats = 3 if quick else 20
    euler = ModalSimulator(volume, integrator="euler", basis=simulator.basis)
    euler.apply_poke(128, 72, 4.0, 1.5)
    t_euler = best_time(euler.advance, repeats)
    t_exact = best_time(simulator.advance, repeats)
    size = f"{PREVIEW[0]}x{PREVIEW[1]} preview, {MOTION[0]}x{MOTION[1]} motion, {simulator.basis.num_modes} modes"
    best = 1000.0 * min(parts["total"])
    table.add("dynamics", "preview frame (median)", f"{ms['total']:.1f} ms",
              f"{size}; target < {TARGET_MS:.0f} ms: {'met' if ms['total'] < TARGET_MS else 'NOT met'} "
              f"({1000.0 / ms['total']:.0f} fps); fastest frame {best:.1f} ms")
    table.add("dynamics", "  modal step (exact)", f"{1000 * ms['step']:.0f} us",
              f"median in the frame loop; best {1e6 * t_exact:.0f} us ({simulator.basis.num_modes} complex oscillators, one frame)")
    table.add("dynamics", "  displacement synthesis", f"{ms['synthesis']:.2f} ms",
              "Re(sum A_k q_k) as one float32 matrix-vector sum (einsum) + bilinear resize to the preview")
    table.add("dynamics", "  default render", f"{ms['render']:.1f} ms", "softmax splat + push-pull fill")

    table.add("dynamics", "baseline: modal step (forward Euler)", f"{1e6 * t_euler:.0f} us",
              f"exact/Euler step time {t_exact / t_euler:.2f}x (same cost: both are one 2x2 map per mode)")
    shapes, q = simulator.basis.shapes, simulator.q.astype(np.complex64)
    t_naive = best_time(lambda: (shapes * q[:, None, None, None]).sum(axis=0).real, repeats)
    t_fast = best_time(lambda: simulator.basis.displacement(q), repeats)
    table.add("dynamics", "baseline: naive synthesis", f"{1000 * t_naive:.2f} ms",
              f"complex broadcast-sum at {MOTION[0]}x{MOTION[1]}; real matrix-vector form is "
              f"{t_naive / t_fast:.1f}x faster ({1000 * t_fast:.2f} ms)")
