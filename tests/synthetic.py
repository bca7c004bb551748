"""Synthetic test inputs: clips with known motion, made by warping a still, and a tiny
still with a spectral volume for jobs (`tiny_inputs`).

The known motion is a forward displacement field F_t [2, H, W] in pixels:
the pixel at p in the still is at p + F_t(p) in frame t. Frames are made by
inverting that map with a fixed-point iteration and `cv2.remap`, which is
accurate to well under 0.01 px for the smooth fields used here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from gdyn_backend import io, spectral

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


def tiny_inputs(folder: Path, width: int = 48, height: int = 32, bands: int = 4) -> tuple[Path, Path]:
    """A random still PNG and a spectral volume [bands, 4, H, W] (30 fps, 60-frame window) beside
    it: a 2 px sway along x in band 1 and a 1 px sway along y in band 2 of the whole image.
    Returns (still.png, motion.safetensors) in `folder`."""
    rng = np.random.default_rng(0)
    image = folder / "still.png"
    io.write_png(image, rng.random((height, width, 3)).astype(np.float32))
    amplitude = np.zeros((bands, 4, height, width), np.float32)
    amplitude[1, 0] = 2.0  # Re x of band 1: 2 px sway
    amplitude[2, 3] = 1.0  # Im y of band 2
    volume = spectral.SpectralVolume(amplitude, spectral.band_frequencies(bands, 30.0, 60), 30.0, 60, "test")
    motion = spectral.save_volume(volume, folder / "motion.safetensors")
    return image, motion


def write_raw_motion(path: Path, amplitude: np.ndarray, fps: float = 30.0, period_frames: int = 60,
                     metadata: dict[str, str] | None = None) -> Path:
    """A motion file written as another program might, without `spectral.save_volume`'s checks
    (which refuse NaN or absurd motion): amplitude as given (any dtype), band frequencies
    k * fps / period_frames; `metadata` overrides any key ({"fps": "-30"})."""
    from safetensors.numpy import save_file

    meta = {"format": spectral.FORMAT_NAME, "version": spectral.FORMAT_VERSION, "fps": repr(float(fps)),
            "period_frames": str(period_frames), "source": "raw", "frequencies_hz": json.dumps(
                [float(f) for f in spectral.band_frequencies(amplitude.shape[0], fps, period_frames)])}
    meta.update(metadata or {})
    save_file({"amplitude": amplitude}, str(path), meta)
    return path


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


@dataclass
class OcclusionScene:
    """A foreground layer moving over a static background, with exact frames.

    background: float32 [H, W, 3], static, fully known (also where the still
                hides it, so exact frames show what a disocclusion reveals).
    foreground: float32 [H, W, 3] and fg_alpha [H, W] 0..1, the layer at t = 0.
    field:      float32 [2, H, W], smooth forward displacement of the layer at
                time 1 (pixels); frame t moves the layer by t * field.
    """

    background: np.ndarray
    foreground: np.ndarray
    fg_alpha: np.ndarray
    field: np.ndarray

    @property
    def still(self) -> np.ndarray:
        a = self.fg_alpha[..., None]
        return (a * self.foreground + (1 - a) * self.background).astype(np.float32)

    def still_displacement(self, t: float) -> np.ndarray:
        """Forward displacement of the still's pixels [2, H, W]: layer motion inside it, 0 outside."""
        return (t * self.field * (self.fg_alpha > 0.5)[None]).astype(np.float32)

    def exact_frame(self, t: float) -> np.ndarray:
        """Ground truth [H, W, 3]: the moved layer composited over the full background."""
        d = (t * self.field).astype(np.float32)
        fg = warp_forward(self.foreground, d)
        a = warp_forward(self.fg_alpha[..., None].repeat(3, axis=2), d)[..., :1]
        return (a * fg + (1 - a) * self.background).astype(np.float32)

    def weights(self) -> np.ndarray:
        """Renderer weights W = mean |F| for a motion swinging between 0 and `field`, [H, W]."""
        return (0.5 * np.sqrt((self.still_displacement(1.0) ** 2).sum(axis=0))).astype(np.float32)


def occlusion_scene(background: np.ndarray, foreground: np.ndarray, amplitude_px: float = 12.0,
                    seed: int = 0) -> OcclusionScene:
    """Blobs cut from `foreground` moving by a smooth field over `background` (both [H, W, 3])."""
    h, w = background.shape[:2]
    rng = np.random.default_rng(seed)
    alpha = np.zeros((h, w), np.float32)
    for _ in range(4):
        cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.25, 0.75) * h
        rx, ry = rng.uniform(0.08, 0.16) * w, rng.uniform(0.12, 0.25) * h
        cv2.ellipse(alpha, (int(cx), int(cy)), (int(rx), int(ry)), float(rng.uniform(0, 180)),
                    0, 360, 1.0, -1, cv2.LINE_AA)
    angle = rng.uniform(0, 2 * np.pi)
    env = smooth_envelope(w, h, seed, floor=0.5)
    field = np.stack([np.cos(angle) * env, np.sin(angle) * env]) * amplitude_px
    return OcclusionScene(background.astype(np.float32), foreground.astype(np.float32),
                          alpha, field.astype(np.float32))


def psnr(image: np.ndarray, reference: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of images in 0..1."""
    mse = float(np.mean((np.asarray(image, np.float64) - reference) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)


def ssim(image: np.ndarray, reference: np.ndarray) -> float:
    """Mean SSIM (Wang et al. 2004; Gaussian window sigma 1.5) of images in 0..1, over channels."""
    x, y = np.asarray(image, np.float64), np.asarray(reference, np.float64)
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    blur = lambda a: cv2.GaussianBlur(a, (11, 11), 1.5)  # noqa: E731
    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return float(s.mean())


def plant_scene(width: int = 192, height: int = 144, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A still with an exactly known moving foreground, for the procedural prior.

    Background: smooth blue sky (top), smooth pale beige wall (middle), dull
    brown grainy soil (bottom). Foreground: green textured stems and leaves
    rising from the soil and saturated red/yellow flower heads on them.
    Returns (rgb float32 [H, W, 3] in 0..1, foreground bool [H, W]).
    """
    rng = np.random.default_rng(seed)
    img = np.empty((height, width, 3), np.float32)
    sky_end, soil_start = int(0.35 * height), int(0.8 * height)
    t = np.linspace(0, 1, sky_end, dtype=np.float32)[:, None, None]
    img[:sky_end] = np.array([0.30, 0.50, 0.85], np.float32) * (1 - t) + np.array([0.55, 0.70, 0.92]) * t
    img[sky_end:soil_start] = np.array([0.80, 0.74, 0.62], np.float32)
    grain = cv2.GaussianBlur(rng.random((height - soil_start, width)).astype(np.float32), (0, 0), 0.8)
    img[soil_start:] = np.array([0.42, 0.30, 0.20], np.float32) * (0.8 + 0.4 * grain[..., None])
    fg = np.zeros((height, width), np.uint8)
    canvas = img.copy()
    leaf_texture = 0.75 + 0.5 * cv2.GaussianBlur(rng.random((height, width)).astype(np.float32), (0, 0), 0.7)
    for i, x in enumerate(np.linspace(0.2, 0.8, 3) * width):
        x, top = int(x), int(height * (0.15 + 0.1 * i))
        layer = np.zeros_like(fg)
        cv2.line(layer, (x, height - 1), (x, top), 1, max(2, width // 60))
        cv2.ellipse(layer, (x - width // 20, (top + height) // 2), (width // 14, height // 30), 30, 0, 360, 1, -1)
        green = np.array([0.20, 0.55, 0.15], np.float32) * leaf_texture[..., None]
        canvas = np.where(layer[..., None] > 0, green, canvas)
        fg |= layer
        head = np.zeros_like(fg)
        cv2.circle(head, (x, top), max(3, width // 16), 1, -1)
        colour = np.array([[0.85, 0.10, 0.10], [0.95, 0.80, 0.10], [0.90, 0.30, 0.60]][i], np.float32)
        canvas = np.where(head[..., None] > 0, colour * leaf_texture[..., None], canvas)
        fg |= head
    return np.clip(canvas, 0, 1).astype(np.float32), fg.astype(bool)
