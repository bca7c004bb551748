"""A drawn example still (flowers on a meadow under a sky) for demos and smoke tests.

The README's main-job command animates it, so a fresh machine with no photos
can run the whole pipeline. It is a drawing, not a photo: stems and petals on
a sky gradient over soil, with texture so flow and rendering have detail.
"""

from __future__ import annotations

import cv2
import numpy as np

from gdyn_backend import io


def draw_example_still(width: int = 640, height: int = 400, seed: int = 7) -> np.ndarray:
    """The example scene, float32 [height, width, 3] RGB in 0..1."""
    rng = np.random.default_rng(seed)
    horizon = int(height * 0.62)
    rows = np.linspace(0.0, 1.0, horizon, dtype=np.float32)[:, None, None]
    sky_top, sky_low = np.array([0.35, 0.58, 0.90], np.float32), np.array([0.78, 0.88, 0.97], np.float32)
    img = np.empty((height, width, 3), np.float32)
    img[:horizon] = sky_top * (1 - rows) + sky_low * rows
    soil = np.array([0.36, 0.25, 0.16], np.float32)
    grain = cv2.GaussianBlur(rng.random((height - horizon, width)).astype(np.float32), (0, 0), 1.0)
    img[horizon:] = soil * (0.75 + 0.5 * grain[..., None])
    canvas = (img[:, :, ::-1] * 255).astype(np.uint8).copy()  # draw in BGR
    palette = [(40, 60, 220), (30, 200, 250), (200, 80, 210), (60, 140, 250), (235, 235, 240)]
    n_flowers = 7
    for i in range(n_flowers):
        base_x = int((i + 0.5 + rng.uniform(-0.25, 0.25)) * width / n_flowers)
        base_y = horizon + int(rng.uniform(0.05, 0.25) * (height - horizon))
        top_y = int(rng.uniform(0.12, 0.38) * height)
        bend = rng.uniform(-0.08, 0.08) * width
        ts = np.linspace(0, 1, 24)
        xs = base_x + bend * ts ** 2
        ys = base_y + (top_y - base_y) * ts
        stem = np.stack([xs, ys], 1).astype(np.int32)
        thickness = max(2, width // 160)
        cv2.polylines(canvas, [stem], False, (40, 120, 45), thickness, cv2.LINE_AA)
        for j in (8, 13):
            cx, cy = int(xs[j]), int(ys[j])
            side = 1 if j == 8 else -1
            cv2.ellipse(canvas, (cx + side * width // 45, cy), (width // 40, width // 110),
                        side * 25, 0, 360, (50, 150, 60), -1, cv2.LINE_AA)
        head = (int(xs[-1]), int(ys[-1]))
        colour = palette[i % len(palette)]
        r = width // 38
        for k in range(8):
            ang = 2 * np.pi * k / 8 + rng.uniform(0, 0.3)
            c = (int(head[0] + 0.9 * r * np.cos(ang)), int(head[1] + 0.9 * r * np.sin(ang)))
            cv2.ellipse(canvas, c, (r, r // 2), np.degrees(ang), 0, 360, colour, -1, cv2.LINE_AA)
        cv2.circle(canvas, head, r // 2, (20, 90, 140), -1, cv2.LINE_AA)
    out = canvas[:, :, ::-1].astype(np.float32) / 255.0
    texture = cv2.GaussianBlur(rng.normal(0, 0.025, (height, width)).astype(np.float32), (0, 0), 0.7)
    return np.clip(out + texture[..., None], 0.0, 1.0)


def write_example_still(path, width: int = 640, height: int = 400, seed: int = 7) -> None:
    """Save the example scene as an 8-bit PNG."""
    io.write_png(path, draw_example_still(width, height, seed))
