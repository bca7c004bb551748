"""Pictures for looking at motion: X-t slices (paper fig. 1) and preview montages.

An X-t slice stacks one scanline of every frame, top to bottom in time:
a still pixel draws a straight vertical streak, a swaying one a wavy streak.
A preview montage of a still shows, on one PNG:

    top:    the still with the two sliced rows marked | what may move (white =
            free, black = pinned) | motion energy W(p) = mean_t |F_t(p)|
    bottom: the X-t slices of those two rows over `num_frames` frames

Command (writes one `<name>_preview.png` per image into OUTDIR):

    python -m gdyn_backend.visualize IMAGE [IMAGE ...] -o OUTDIR [--preset NAME] [--seed N]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from gdyn_backend import io, spectral
from gdyn_backend.presets import DEFAULT_PRESET

PANEL_WIDTH = 384  # px, width of each panel of the montage


def xt_slice(frames: np.ndarray, row: int) -> np.ndarray:
    """Scanline `row` of every frame, [T, W, C] from frames [T, H, W, C] (time runs down)."""
    return np.ascontiguousarray(frames[:, row])


def render_frames(rgb: np.ndarray, alpha: np.ndarray | None, volume: spectral.SpectralVolume,
                  num_frames: int, fps: float) -> np.ndarray:
    """Frames [T, h, w, 3] (0..1) of the still `rgb` [h, w, 3] at the volume's resolution.

    Uses the default renderer (softmax splatting + hole filling) on anchored
    displacements at frames 0..num_frames-1 of `fps`.
    """
    from gdyn_backend.render.default import DefaultRenderer

    renderer = DefaultRenderer(device="cpu")
    weights = spectral.mean_displacement_magnitude(volume)
    times = spectral.frame_times(num_frames, fps)
    return np.stack([renderer.render(rgb, alpha, displacement, weights)[0]
                     for displacement in spectral.displacements(volume, times)])


def _label(image: np.ndarray, text: str) -> np.ndarray:
    out = image.copy()
    cv2.putText(out, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(out, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (1, 1, 1), 1, cv2.LINE_AA)
    return out


def _panel(image: np.ndarray, width: int = PANEL_WIDTH) -> np.ndarray:
    h, w = image.shape[:2]
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return cv2.resize(image.astype(np.float32), (width, max(1, round(h * width / w))),
                      interpolation=cv2.INTER_AREA if w > width else cv2.INTER_LINEAR)


def montage(rgb: np.ndarray, moveability: np.ndarray, volume: spectral.SpectralVolume,
            frames: np.ndarray, rows: list[int]) -> np.ndarray:
    """The preview montage (module docstring), float32 RGB [H', W', 3] in 0..1.

    rgb [h, w, 3], moveability [h, w] in 0..1, frames [T, h, w, 3] and the
    volume all at the motion resolution; rows: two scanlines (pixels).
    """
    energy = spectral.mean_displacement_magnitude(volume)
    top = max(float(np.percentile(energy, 99.5)), 1e-3)
    heat = cv2.applyColorMap((np.clip(energy / top, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_INFERNO)
    heat = heat[:, :, ::-1].astype(np.float32) / 255.0
    marked = rgb.copy()
    colours = [(0.1, 1.0, 0.2), (0.2, 0.6, 1.0)]
    for row, colour in zip(rows, colours):
        marked[max(0, row - 1):row + 1] = colour
    upper = np.concatenate([
        _label(_panel(marked), "still, sliced rows"),
        _label(_panel(moveability), "may move (white)"),
        _label(_panel(heat), f"mean |F| (top = {top * PANEL_WIDTH / volume.width:.1f} px)"),
    ], axis=1)
    slices = []
    for row, colour in zip(rows, colours):
        xt = _panel(xt_slice(frames, row), int(1.5 * PANEL_WIDTH))
        xt[:3] = colour
        slices.append(_label(xt, f"X-t row {row} ({frames.shape[0]} frames, time down)"))
    lower = np.concatenate(slices, axis=1)
    width = max(upper.shape[1], lower.shape[1])
    pad = lambda a: np.pad(a, ((0, 0), (0, width - a.shape[1]), (0, 0)))  # noqa: E731
    return np.concatenate([pad(upper), np.zeros((6, width, 3), np.float32), pad(lower)], axis=0)


def preview(image, out_png, preset: str = DEFAULT_PRESET, seed: int = 0, mask=None,
            num_frames: int = 120, fps: float = 30.0) -> Path:
    """Sample the procedural motion for `image`, render it, save the montage PNG.

    Rows sliced: the row with the most motion (5 % margin from the edges) and
    the middle row (or the row at 1/5 of the height when those two are close).
    Returns the path written.
    """
    from gdyn_backend.presets import load_preset
    from gdyn_backend.sources import procedural

    still = io.read_image(image)
    chosen = load_preset(preset)
    user_mask = io.read_mask(mask, still.width, still.height) if mask is not None else None
    volume = procedural.sample_volume(still, chosen, seed=seed, mask=user_mask, fps=fps)
    w, h = volume.width, volume.height
    rgb = cv2.resize(still.rgb, (w, h), interpolation=cv2.INTER_AREA)
    alpha = None if still.alpha is None else cv2.resize(still.alpha, (w, h), interpolation=cv2.INTER_AREA)
    regions = procedural.regions_for(still, chosen, w, h, user_mask)
    frames = render_frames(rgb, alpha, volume, num_frames, fps)
    energy = spectral.mean_displacement_magnitude(volume)
    margin = h // 20  # rows at the frame's edge show border fill, not the motion
    busiest = margin + int(np.argmax(energy[margin:h - margin].mean(axis=1)))
    rows = [busiest, h // 2 if abs(busiest - h // 2) > h // 10 else h // 5]
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    io.write_png(out_png, montage(rgb, regions.moveability, volume, frames, rows))
    return out_png


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gdyn_backend.visualize",
                                     description="Preview montages (X-t slices) of procedural motion.")
    parser.add_argument("images", nargs="+", type=Path)
    parser.add_argument("-o", "--outdir", type=Path, required=True)
    parser.add_argument("--preset", default=DEFAULT_PRESET)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frames", type=int, default=120)
    args = parser.parse_args(argv)
    for image in args.images:
        print(preview(image, args.outdir / f"{image.stem}_preview.png", args.preset, args.seed,
                      num_frames=args.frames))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
