"""What moves in a still: a CPU-only, weight-free analysis of the picture.

The procedural prior needs to know which pixels may sway (petals, leaves,
stems, flames) and which must stay put (sky, soil, walls, vases, dark or
uniform backgrounds), and how the moving pixels group into objects that move
as one. Everything here is classical image analysis:

1. SLIC-like superpixels (Achanta et al. 2012) in Lab colour + position,
   so decisions follow colour edges instead of pixel noise.
2. Per-pixel cues: hue/saturation/value (green foliage, saturated petals,
   bright textured white petals or seed heads; brown soil, blue sky, dark
   backgrounds, pale smooth walls), local detail (gradient energy: in-focus
   plants are textured, walls/sky/blurred backgrounds are smooth) and
   position (sky touches the top).
3. A score per superpixel (mean of the pixel cues), small enclosed gaps
   filled, then scaled per connected object by how sharp (in focus) the
   object is relative to the image, so a defocused background moves far
   less than the subject.

All maps are float32 [H, W] in 0..1 at the analysis resolution the caller
picks (the prior uses its motion resolution).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

MIN_OBJECT_FRACTION = 0.002  # objects smaller than this share of the image are dropped


@dataclass
class MotionRegions:
    """Result of `analyze`.

    moveability: float32 [H, W] in 0..1; 0 = pinned, 1 = free to sway.
    objects:     int32 [H, W]; 0 = still, 1..n = objects that move as units.
    """

    moveability: np.ndarray
    objects: np.ndarray

    @property
    def num_objects(self) -> int:
        return int(self.objects.max(initial=0))


def superpixels(rgb: np.ndarray, num_segments: int = 300, compactness: float = 12.0,
                iterations: int = 6) -> np.ndarray:
    """SLIC superpixels of an RGB image [H, W, 3] in 0..1; int32 labels [H, W].

    Centres start on a regular grid of step S = sqrt(H*W / num_segments); each
    pixel joins the nearest of the 3x3 neighbouring centres in the distance
    d = |Lab difference| + compactness * |position difference| / S.
    Deterministic (no random seeds). Labels are renumbered 0..n-1.
    """
    h, w = rgb.shape[:2]
    lab = cv2.cvtColor(np.ascontiguousarray(rgb, np.float32), cv2.COLOR_RGB2Lab)
    step = max(2.0, np.sqrt(h * w / max(num_segments, 1)))
    gy, gx = max(1, int(round(h / step))), max(1, int(round(w / step)))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    feats = np.concatenate([lab.reshape(-1, 3),
                            (compactness / step) * np.stack([yy.ravel(), xx.ravel()], 1)], axis=1)
    cy = (np.arange(gy) + 0.5) * h / gy
    cx = (np.arange(gx) + 0.5) * w / gx
    centre_pix = np.stack(np.meshgrid(cy, cx, indexing="ij"), -1).reshape(-1, 2).astype(int)
    centres = feats.reshape(h, w, 5)[centre_pix[:, 0], centre_pix[:, 1]].astype(np.float64)
    # Each pixel's own grid cell and the 3x3 cells around it are its candidates.
    cell_y = np.minimum((yy.ravel() * gy / h).astype(int), gy - 1)
    cell_x = np.minimum((xx.ravel() * gx / w).astype(int), gx - 1)
    candidates = []
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            candidates.append(np.clip(cell_y + dy, 0, gy - 1) * gx + np.clip(cell_x + dx, 0, gx - 1))
    candidates = np.stack(candidates)  # [9, HW]
    labels = candidates[4]
    for _ in range(iterations):
        dist = ((feats[None] - centres[candidates].astype(np.float32)) ** 2).sum(-1)  # [9, HW]
        labels = candidates[np.argmin(dist, axis=0), np.arange(h * w)]
        counts = np.bincount(labels, minlength=gy * gx).astype(np.float64)
        sums = np.stack([np.bincount(labels, feats[:, c], gy * gx) for c in range(5)], 1)
        alive = counts > 0
        centres[alive] = sums[alive] / counts[alive, None]
    _, labels = np.unique(labels, return_inverse=True)
    return labels.reshape(h, w).astype(np.int32)


def _hsv(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hue in degrees 0..360, saturation and value in 0..1, each [H, W]."""
    hsv = cv2.cvtColor(np.ascontiguousarray(rgb, np.float32), cv2.COLOR_RGB2HSV)
    return hsv[..., 0], hsv[..., 1], hsv[..., 2]


def local_detail(rgb: np.ndarray, colour: bool = False) -> np.ndarray:
    """Local texture energy, float32 [H, W]: blurred gradient magnitude (per pixel unit).

    Of luma, or with `colour` the largest over the R, G, B channels (so a red
    petal on brown soil, nearly equal in brightness, still has an edge).
    """
    h, w = rgb.shape[:2]
    rgb = np.ascontiguousarray(rgb, np.float32)
    planes = [rgb[..., c] for c in range(3)] if colour else [cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)]
    magnitude = np.zeros((h, w), np.float32)
    for plane in planes:
        gx = cv2.Sobel(plane, cv2.CV_32F, 1, 0, ksize=3) / 8.0
        gy = cv2.Sobel(plane, cv2.CV_32F, 0, 1, ksize=3) / 8.0
        magnitude = np.maximum(magnitude, np.sqrt(gx * gx + gy * gy))
    sigma = max(1.0, max(h, w) / 160.0)
    return cv2.GaussianBlur(magnitude, (0, 0), sigma)


def _ramp(x: np.ndarray, low: float, high: float) -> np.ndarray:
    """0 below `low`, 1 above `high`, linear between (float32)."""
    return np.clip((x - low) / (high - low), 0.0, 1.0).astype(np.float32)


def _hue_window(hue: np.ndarray, centre: float, half_width: float, soft: float = 15.0) -> np.ndarray:
    """1 within `half_width` degrees of `centre` on the hue circle, fading over `soft` degrees."""
    d = np.abs((hue - centre + 180.0) % 360.0 - 180.0)
    return 1.0 - _ramp(d, half_width, half_width + soft)


def plant_score(rgb: np.ndarray, detail: np.ndarray) -> np.ndarray:
    """How much each pixel looks like a swaying plant part, float32 [H, W] in 0..1.

    Moving cues: green or yellow-green foliage that is in focus (a blurred
    green background counts little), saturated bright petals of any hue but
    sky blue, pink/magenta petals even when pale, near-white petals, and
    bright textured white parts (seed heads). Still cues win over moving
    cues: very dark pixels (black backgrounds), brown soil (warm hue, dull),
    smooth pale tinted surfaces (walls, vases, clouds) unless near-white,
    blue sky, and smooth bright pale areas connected to the top edge
    (overcast sky).
    A picture without colour (grayscale) moves its textured, not-dark parts.
    """
    h, w = detail.shape
    hue, sat, val = _hsv(rgb)
    ref = max(float(np.percentile(detail, 99)), 1e-4)
    textured = _ramp(detail / ref, 0.08, 0.3)
    if float(np.percentile(sat, 99)) < 0.05:  # no colour (grayscale): texture decides
        return (textured * _ramp(val, 0.06, 0.14)).astype(np.float32)
    radius = max(1, int(round(max(h, w) / 40)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1,) * 2)
    in_focus = _ramp(cv2.dilate(detail, kernel) / ref, 0.35, 0.75)
    sky_hue = _hue_window(hue, 215.0, 35.0)
    green = _hue_window(hue, 105.0, 45.0) * _ramp(sat, 0.1, 0.25) * _ramp(val, 0.08, 0.2)
    green = green * (0.1 + 0.9 * in_focus)
    petal = (1.0 - sky_hue) * _ramp(sat, 0.35, 0.6) * _ramp(val, 0.35, 0.55)
    pink = _hue_window(hue, 330.0, 35.0, 10.0) * _ramp(sat, 0.1, 0.2) * _ramp(val, 0.45, 0.6)
    white = (1.0 - _ramp(sat, 0.22, 0.3)) * _ramp(val, 0.8, 0.9) * (1.0 - sky_hue * _ramp(sat, 0.04, 0.08))
    white_textured = (_ramp(val, 0.45, 0.65) * (1.0 - _ramp(sat, 0.2, 0.35)) * textured
                      * (1.0 - sky_hue * _ramp(sat, 0.08, 0.15)))
    moving = np.maximum.reduce([green, petal, pink, white, white_textured])
    dark = 1.0 - _ramp(val, 0.06, 0.14)
    soil = _hue_window(hue, 28.0, 18.0, 10.0) * (1.0 - _ramp(sat, 0.4, 0.6)) * (1.0 - _ramp(val, 0.75, 0.9))
    pale_smooth = _ramp(sat, 0.12, 0.18) * (1.0 - _ramp(sat, 0.25, 0.4)) * (1.0 - textured)
    sky = sky_hue * _ramp(sat, 0.1, 0.2) * (1.0 - textured)
    # Overcast sky or a lit ceiling: a smooth bright pale area reaching the top edge.
    smooth_bright = ((textured < 0.3) & (val > 0.6) & (sat < 0.3)).astype(np.uint8)
    count, labels = cv2.connectedComponents(smooth_bright, connectivity=8)
    top_labels = np.unique(labels[0][smooth_bright[0] > 0])
    open_sky = np.isin(labels, top_labels[top_labels > 0]).astype(np.float32)
    still = np.maximum.reduce([dark, soil * (1.0 - np.maximum(green, pink)), pale_smooth * (1.0 - white),
                               sky, open_sky])
    return np.clip(moving * (1.0 - still), 0.0, 1.0).astype(np.float32)


def flame_score(rgb: np.ndarray) -> np.ndarray:
    """Bright warm (red..yellow) pixels, the body of a flame, float32 [H, W] in 0..1."""
    hue, sat, val = _hsv(rgb)
    return (_hue_window(hue, 35.0, 30.0) * _ramp(val, 0.55, 0.8) * _ramp(sat, 0.15, 0.35)
            + _ramp(val, 0.92, 0.99) * (1.0 - _ramp(sat, 0.2, 0.4))).clip(0, 1).astype(np.float32)


def _segment_mean(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    n = int(labels.max()) + 1
    sums = np.bincount(labels.ravel(), values.ravel().astype(np.float64), n)
    counts = np.maximum(np.bincount(labels.ravel(), minlength=n), 1)
    return (sums / counts)[labels].astype(np.float32)


def fill_small_holes(moveability: np.ndarray, threshold: float = 0.3,
                     max_fraction: float = 0.01) -> np.ndarray:
    """Set enclosed pinned gaps smaller than `max_fraction` of the image to 1.

    A dark seed-head centre or a shaded fold inside a petal is part of the
    object around it; pinning it would tear the object apart.
    """
    from scipy import ndimage

    h, w = moveability.shape
    solid = moveability > threshold
    holes, count = ndimage.label(ndimage.binary_fill_holes(solid) & ~solid)
    if count == 0:
        return moveability
    sizes = np.bincount(holes.ravel(), minlength=count + 1)
    small = (sizes <= max_fraction * h * w) & (np.arange(count + 1) > 0)
    return np.where(small[holes], np.float32(1.0), moveability).astype(np.float32)


def connected_objects(moveability: np.ndarray, threshold: float = 0.3) -> np.ndarray:
    """Objects that move as units: 8-connected blobs of moveability > threshold.

    Blobs smaller than MIN_OBJECT_FRACTION of the image are dropped. Returns
    int32 labels [H, W], 0 = no object.
    """
    h, w = moveability.shape
    binary = (moveability > threshold).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    keep = np.zeros(count, np.int32)
    next_label = 1
    for i in range(1, count):
        if stats[i, cv2.CC_STAT_AREA] >= MIN_OBJECT_FRACTION * h * w:
            keep[i] = next_label
            next_label += 1
    return keep[labels]


def analyze(rgb: np.ndarray, what_moves: str = "plants", alpha: np.ndarray | None = None) -> MotionRegions:
    """Decide what moves in `rgb` [H, W, 3] (0..1), optional `alpha` [H, W] (0..1).

    what_moves: "plants", "flame" or "all" (see gdyn_backend.presets).
    Transparent pixels (alpha = 0) never move.
    """
    h, w = rgb.shape[:2]
    rgb = np.ascontiguousarray(rgb, np.float32)
    if what_moves == "all":
        score = np.ones((h, w), np.float32)
    else:
        detail = local_detail(rgb)
        pixel = plant_score(rgb, detail) if what_moves == "plants" else flame_score(rgb)
        labels = superpixels(rgb, num_segments=max(16, min(400, h * w // 150)))
        score = _segment_mean(pixel, labels)
    if alpha is not None:
        score = score * (alpha > 0)
    feather = max(0.7, max(h, w) / 256.0)
    moveability = cv2.GaussianBlur(fill_small_holes(_ramp(score, 0.2, 0.55)), (0, 0), feather)
    if alpha is not None:
        moveability = moveability * np.clip(alpha, 0.0, 1.0)
    moveability = np.clip(moveability, 0.0, 1.0).astype(np.float32)
    objects = connected_objects(moveability)
    if what_moves == "plants":
        moveability = moveability * focus_factor(objects, local_detail(rgb, colour=True))
    return MotionRegions(moveability, objects)


def focus_factor(objects: np.ndarray, detail: np.ndarray, floor: float = 0.1) -> np.ndarray:
    """Per object: how sharp (in focus) it is, float32 [H, W] in floor..1 (1 outside objects).

    Sharpness = 95th percentile of `local_detail` over the object and a 2 px
    ring around it (its outline: a smooth petal still has a crisp edge), relative
    to the sharpest object covering at least 1 % of the frame; 0.45 or less
    gives `floor` (a defocused background blob), 0.85 or more gives 1 (the
    subject and anything as sharp).
    """
    count = int(objects.max(initial=0))
    table = np.ones(count + 1, np.float32)
    if count == 0:
        return table[objects]
    areas = np.bincount(objects.ravel(), minlength=count + 1)[1:]
    ring = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    sharp = np.array([np.percentile(detail[cv2.dilate((objects == label).astype(np.uint8), ring) > 0], 95)
                      for label in range(1, count + 1)])
    sizeable = areas >= 0.01 * objects.size  # a tiny glint must not set the reference
    reference = float(sharp[sizeable].max() if sizeable.any() else sharp.max())
    relative = sharp / max(reference, 1e-6)
    table[1:] = floor + (1.0 - floor) * _ramp(relative.astype(np.float32), 0.45, 0.85)
    return table[objects]
