"""Bench section `flow`: accuracy and speed of the video flow of `gdyn extract`.

A known smooth warp of the example still (a drawn scene with fine texture
and flat sky): frame_t(q) = still(q + B_t(q)) for six smooth fields B_t
(sums of low spatial frequencies, up to about 3 px at 256x160, scaled with
the resolution). The pixel q of frame_t is at q + B_t(q) in the still, so
the forward flow from frame_t to the still is exactly B_t: no inversion
error in the ground truth. Rows: mean end-point error (px) and the best
time per frame pair (ms) of gdyn's flow and, in the same run, of two
classic baselines: OpenCV DIS at its stock "medium" preset and Farneback's
polynomial-expansion pyramid (5 levels, 15 px window).
"""

from __future__ import annotations

import cv2
import numpy as np

from gdyn_backend.bench import best_time
from gdyn_backend.example import draw_example_still
from gdyn_backend.flow import DenseFlow, to_gray

SIZES = ((256, 160), (512, 288))


def known_warps(width: int, height: int, count: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(still gray uint8 [H, W], frame gray uint8 [H, W], flow frame -> still float32 [2, H, W] px)."""
    still = draw_example_still(width, height)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = xx / width, yy / height
    scale = width / 256.0
    out = []
    for i in range(count):
        phase = 2 * np.pi * i / count
        bx = scale * (1.8 * np.sin(2 * np.pi * (0.7 * u + 0.4 * v) + phase)
                      + 0.8 * np.cos(2 * np.pi * 1.9 * v - phase) * u)
        by = scale * (1.2 * np.cos(2 * np.pi * (0.5 * u - 0.9 * v) + 2 * phase)
                      + 0.6 * np.sin(2 * np.pi * 2.3 * u + phase))
        frame = cv2.remap(still, xx + bx, yy + by, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
        truth = np.stack([bx, by]).astype(np.float32)
        out.append((to_gray(still, width, height), to_gray(np.clip(frame, 0, 1), width, height), truth))
    return out


def _dis_medium(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM).calc(a, b, None).transpose(2, 0, 1)


def _farneback(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 5, 15, 5, 7, 1.5, 0).transpose(2, 0, 1)


def run(table, quick: bool) -> None:
    gdyn = DenseFlow()
    methods = {"gdyn (tuned DIS)": gdyn, "DIS medium preset": _dis_medium, "Farneback": _farneback}
    for width, height in SIZES[:1] if quick else SIZES:
        pairs = known_warps(width, height, 2 if quick else 6)
        still, frame, _ = pairs[0]
        ms = {}
        for name, method in methods.items():
            errors = [np.sqrt(((method(f, s) - truth) ** 2).sum(axis=0)) for s, f, truth in pairs]
            epe = np.stack(errors)
            ms[name] = 1000 * best_time(lambda: method(frame, still), repeats=2 if quick else 10)
            table.add("flow", f"{name} {width}x{height} end-point error",
                      f"{epe.mean():.3f} px", f"95th percentile {np.percentile(epe, 95):.3f} px")
            table.add("flow", f"{name} {width}x{height} time per pair", f"{ms[name]:.1f} ms",
                      "" if name == "gdyn (tuned DIS)" else
                      f"takes {ms[name] / ms['gdyn (tuned DIS)']:.2f}x the time of gdyn")
