"""Synthetic clips with known motion, made by warping a still.

The known motion is a forward displacement field F_t [2, H, W] in pixels:
the pixel at p in the still is at p + F_t(p) in frame t. Frames are made by
inverting that map with a fixed-point iteration and `cv2.remap`, which is
accurate to well under 0.01 px for the smooth fields used here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

SHARED_STILLS = Path(__file__).resolve().parents[2] / "shared" / "data" / "stills"


def synthetic_still(width: int = 256, height: int = 160, seed: int = 0) -> np.ndarray:
    """A textured test picture, float32 [H, W, 3] in 0..1, with no outside data."""
    rng = np.random.default_rng(seed)
    noise = rng.random((height // 4 + 1, width // 4 + 1, 3)).astype(np.float32)
    base = cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC)
    detail = cv2.GaussianBlur(rng.random((height, width, 3)).astype(np.float32), (0, 0), 1.2)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    stripes = 0.5 + 0.5 * np.sin(xx / 5.0)[..., None] * np.cos(yy / 7.0)[..., None]
    return np.clip(0.45 * base + 0.35 * detail + 0.2 * stripes, 0, 1).astype(np.float32)


def load_still(name: str, width: int, height: int) -> np.ndarray:
    """A real photo from ../shared/data/stills resized to width x height, RGB 0..1."""
    bgr = cv2.imread(str(SHARED_STILLS / name), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(SHARED_STILLS / name)
    bgr = cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA)
    return (bgr[:, :, ::-1].astype(np.float32) / 255.0).copy()


@dataclass
class SinusoidMotion:
    """F_t(p) = sum_j m(p) * a_j * d_j * (sin(2 pi f_j t / fps + phi_j) - sin(phi_j)).

    amplitudes_px [J], frequencies_hz [J], phases [J], directions [J, 2] (unit
    x, y) and a smooth spatial envelope m(p) in 0..1 [H, W]. F_0 = 0.
    """

    amplitudes_px: np.ndarray
    frequencies_hz: np.ndarray
    phases: np.ndarray
    directions: np.ndarray
    envelope: np.ndarray

    def displacement(self, t_frames: float, fps: float) -> np.ndarray:
        """Forward displacement at frame t, float32 [2, H, W] in pixels."""
        out = np.zeros((2,) + self.envelope.shape, np.float64)
        for a, f, phi, d in zip(self.amplitudes_px, self.frequencies_hz, self.phases, self.directions):
            s = a * (np.sin(2 * np.pi * f * t_frames / fps + phi) - np.sin(phi))
            out[0] += s * d[0] * self.envelope
            out[1] += s * d[1] * self.envelope
        return out.astype(np.float32)

    def trajectories(self, num_frames: int, fps: float) -> np.ndarray:
        """[T, 2, H, W] displacements of frames 0..T-1."""
        return np.stack([self.displacement(t, fps) for t in range(num_frames)])


def smooth_envelope(width: int, height: int, seed: int = 0, floor: float = 0.3) -> np.ndarray:
    """A smooth spatial weighting in floor..1, float32 [H, W]."""
    rng = np.random.default_rng(seed + 100)
    coarse = rng.random((3, 4)).astype(np.float32)
    env = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    env = (env - env.min()) / max(float(np.ptp(env)), 1e-6)
    return (floor + (1 - floor) * env).astype(np.float32)


def band_motion(width: int, height: int, fps: float, period_frames: int,
                bands=(2, 5, 9), amplitudes_px=(2.0, 1.0, 0.5), seed: int = 0) -> SinusoidMotion:
    """Sinusoids exactly at band frequencies k * fps / T, so K bands recover them."""
    rng = np.random.default_rng(seed)
    angles = rng.uniform(0, 2 * np.pi, len(bands))
    return SinusoidMotion(
        amplitudes_px=np.array(amplitudes_px, np.float64),
        frequencies_hz=np.array(bands, np.float64) * fps / period_frames,
        phases=rng.uniform(0, 2 * np.pi, len(bands)),
        directions=np.stack([np.cos(angles), np.sin(angles)], axis=1),
        envelope=smooth_envelope(width, height, seed),
    )


def warp_forward(still: np.ndarray, displacement: np.ndarray, iterations: int = 6) -> np.ndarray:
    """Frame where each still pixel p has moved to p + D(p), [H, W, C] float32.

    Solves q = p + D(p) for p at every output pixel q by fixed-point
    iteration, then samples the still there (bilinear, border replicated).
    """
    h, w = still.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    px, py = xx.copy(), yy.copy()
    for _ in range(iterations):
        dx = cv2.remap(displacement[0], px, py, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        dy = cv2.remap(displacement[1], px, py, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        px, py = xx - dx, yy - dy
    return cv2.remap(still, px, py, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def make_clip(still: np.ndarray, motion: SinusoidMotion, num_frames: int, fps: float) -> np.ndarray:
    """Frames [T, H, W, 3] float32 of the still moved by `motion`."""
    return np.stack([warp_forward(still, motion.displacement(t, fps)) for t in range(num_frames)])


def write_frames_folder(frames: np.ndarray, folder: Path) -> Path:
    """Save frames as a lossless PNG sequence (a clip `gdyn extract` can read)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:04d}.png"), (np.clip(f, 0, 1)[:, :, ::-1] * 255 + 0.5).astype(np.uint8))
    return folder


def write_mp4(frames: np.ndarray, path: Path, fps: float) -> Path:
    """Save frames as a near-lossless H.264 MP4."""
    import imageio.v2 as imageio

    with imageio.get_writer(str(path), format="ffmpeg", fps=fps, codec="libx264",
                            macro_block_size=2, output_params=["-crf", "10"]) as w:
        for f in frames:
            w.append_data((np.clip(f, 0, 1) * 255 + 0.5).astype(np.uint8))
    return path
