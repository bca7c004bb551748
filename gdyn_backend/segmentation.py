"""What moves in a still: a CPU-only, weight-free analysis of the picture.

The procedural prior needs to know which pixels may sway (leaves, stems,
petals, seed heads, flames) and which must stay put (sky, soil, walls,
rocks, trunks, bowls, rooms, renders), how the moving pixels group into
objects, and which parts sway as rigid pieces. Everything here is classical
image analysis, and where the picture is ambiguous it stays still:

1. SLIC-like superpixels (Achanta et al. 2012) in Lab colour + position,
   so decisions follow colour edges instead of pixel noise.
2. Per-pixel cues (`plant_cues`): green foliage (weighted by focus), bloom
   colours (saturated petals, pink, near-white, bright textured pale parts)
   and background (dark, soil, pale smooth surfaces, sky).
3. Blooms count only on a plant (`attached_blooms`: foliage contact, green
   surroundings, a bunch, a free lobed leaf); solid smooth green blobs are
   fruit (`rigid_blobs`); trunks and dull pixels inside foliage are pinned
   (`trunks`); a grayscale picture moves little and not its flat facets.
4. Small enclosed gaps filled, objects (connected blobs) scaled by how sharp
   they are, and rigid pieces with their hinges (`rigid_pieces`).

All maps are float32 [H, W] in 0..1 at the analysis resolution the caller
picks (the prior uses its motion resolution).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

MIN_OBJECT_FRACTION = 0.002  # objects smaller than this share of the image are dropped
GRAYSCALE_GAIN = 0.3  # a grayscale picture's plants cannot be told by colour: move them this much


@dataclass
class MotionRegions:
    """Result of `analyze`.

    moveability: float32 [H, W] in 0..1; 0 = pinned, 1 = free to sway.
    objects:     int32 [H, W]; 0 = still, 1..n = objects that move as units.
    pieces:      int32 [H, W]; 0 = none, 1..m = rigid pieces (flower heads,
                 free-hanging leaves) that sway as one about a hinge.
    hinges:      float32 [m, 2]; (x, y) in pixels of piece j's hinge in row j - 1.
    """

    moveability: np.ndarray
    objects: np.ndarray
    pieces: np.ndarray | None = None
    hinges: np.ndarray | None = None

    def __post_init__(self):
        if self.pieces is None:
            self.pieces = np.zeros(self.objects.shape, np.int32)
            self.hinges = np.zeros((0, 2), np.float32)

    @property
    def num_objects(self) -> int:
        return int(self.objects.max(initial=0))

    @property
    def num_pieces(self) -> int:
        return int(self.hinges.shape[0])


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


@dataclass
class PlantCues:
    """Per-pixel evidence for the plant analysis, each float32 [H, W] in 0..1.

    foliage:    green plant tissue (leaves, stems, grass blades); in focus counts
                more than a blurred green background.
    bloom:      petal and seed-head colours (saturated hues but sky blue, pink,
                near-white, bright textured pale parts). The same colours
                describe fruit, bowls, brushes, rocks and walls, so a bloom
                moves only where `attached_blooms` finds it on a plant.
    colourless: how grey or white each pixel is (1 = no hue at all).
    green:      green of any sharpness (the context a flower grows in).
    still:      background: very dark pixels, brown soil, smooth pale tinted
                surfaces, blue sky, smooth bright areas reaching the top edge.
    """

    foliage: np.ndarray
    bloom: np.ndarray
    colourless: np.ndarray
    green: np.ndarray
    still: np.ndarray


def is_grayscale(rgb: np.ndarray) -> bool:
    """True when `rgb` [H, W, 3] has no colour to speak of (99 % of saturations under 0.05)."""
    return float(np.percentile(_hsv(rgb)[1], 99)) < 0.05


def plant_cues(rgb: np.ndarray, detail: np.ndarray) -> PlantCues:
    """Pixel cues of a colour picture `rgb` [H, W, 3] (0..1), `local_detail` [H, W] (see PlantCues)."""
    h, w = detail.shape
    hue, sat, val = _hsv(rgb)
    ref = max(float(np.percentile(detail, 99)), 1e-4)
    textured = _ramp(detail / ref, 0.08, 0.3)
    radius = max(1, int(round(max(h, w) / 40)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1,) * 2)
    in_focus = _ramp(cv2.dilate(detail, kernel) / ref, 0.35, 0.75)
    sky_hue = _hue_window(hue, 215.0, 35.0)
    green = _hue_window(hue, 105.0, 45.0) * _ramp(sat, 0.1, 0.25) * _ramp(val, 0.08, 0.2)
    foliage = green * (0.1 + 0.9 * in_focus)
    petal = (1.0 - sky_hue) * _ramp(sat, 0.35, 0.6) * _ramp(val, 0.35, 0.55)
    pink = _hue_window(hue, 330.0, 35.0, 10.0) * _ramp(sat, 0.1, 0.2) * _ramp(val, 0.45, 0.6)
    white = (1.0 - _ramp(sat, 0.22, 0.3)) * _ramp(val, 0.8, 0.9) * (1.0 - sky_hue * _ramp(sat, 0.04, 0.08))
    white_textured = (_ramp(val, 0.45, 0.65) * (1.0 - _ramp(sat, 0.2, 0.35)) * textured
                      * (1.0 - sky_hue * _ramp(sat, 0.08, 0.15)))
    bloom = np.maximum.reduce([petal, pink, white, white_textured])
    dark = 1.0 - _ramp(val, 0.06, 0.14)
    soil = _hue_window(hue, 28.0, 18.0, 10.0) * (1.0 - _ramp(sat, 0.4, 0.6)) * (1.0 - _ramp(val, 0.75, 0.9))
    pale_smooth = _ramp(sat, 0.12, 0.18) * (1.0 - _ramp(sat, 0.25, 0.4)) * (1.0 - textured)
    sky = sky_hue * _ramp(sat, 0.1, 0.2) * (1.0 - textured)
    # Overcast sky or a lit ceiling: a smooth bright pale area reaching the top edge.
    smooth_bright = ((textured < 0.3) & (val > 0.6) & (sat < 0.3)).astype(np.uint8)
    count, labels = cv2.connectedComponents(smooth_bright, connectivity=8)
    top_labels = np.unique(labels[0][smooth_bright[0] > 0])
    open_sky = np.isin(labels, top_labels[top_labels > 0]).astype(np.float32)
    still = np.maximum.reduce([dark, soil * (1.0 - np.maximum(foliage, pink)), pale_smooth * (1.0 - white),
                               sky, open_sky])
    return PlantCues(foliage, bloom, 1.0 - _ramp(sat, 0.15, 0.3), green, still)


def _blobs(mask: np.ndarray, min_area: int):
    """Yield (bool mask [H, W], touches_frame_edge) per 8-connected blob of `mask` of >= min_area pixels."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    h, w = mask.shape
    for i in range(1, count):
        x, y, bw, bh, area = stats[i]
        if area >= min_area:
            yield labels == i, bool(x == 0 or y == 0 or x + bw == w or y + bh == h)


def _disc(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1,) * 2)


def _solidity(blob: np.ndarray) -> float:
    """Area of a bool blob [H, W] over the area of its convex hull (1 = convex, small = lobed)."""
    contours, _ = cv2.findContours(blob.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    hull = cv2.contourArea(cv2.convexHull(np.concatenate(contours)))
    return float(blob.sum()) / max(hull, 1.0)


def rigid_blobs(mask: np.ndarray, textured: np.ndarray) -> np.ndarray:
    """Blobs of `mask` [H, W] (bool) that look like solid smooth things, bool [H, W].

    A fruit, a bowl, a ball or a clock face is convex (solidity >= 0.9),
    thick (its inscribed circle's radius is at least 4 % of the long side,
    so not a blade or a stem), smooth inside (mean `textured` [H, W] over its
    interior under 0.5) and whole in the frame (touches no edge). Leaves,
    flower clusters and grass fail at least one of these.
    """
    h, w = mask.shape
    out = np.zeros((h, w), bool)
    for blob, touches_edge in _blobs(mask, max(4, int(MIN_OBJECT_FRACTION * h * w))):
        if touches_edge:
            continue
        depth = cv2.distanceTransform(blob.astype(np.uint8), cv2.DIST_L2, 3)
        if depth.max() < 0.04 * max(h, w) or _solidity(blob) < 0.9:
            continue
        if float(textured[depth > 0.5 * depth.max()].mean()) < 0.5:
            out |= blob
    return out


def flat_shaded_blobs(mask: np.ndarray, gray: np.ndarray) -> np.ndarray:
    """Blobs of `mask` [H, W] (bool) made of flat facets (a rendering, a painted wall), bool [H, W].

    Flat: more than half of the blob's pixels have a gradient under 0.01 per
    pixel in `gray` [H, W] (0..1), i.e. under 2.5 levels of 8 bits. Real
    surfaces (leaves, bark, petals) carry fine texture and camera noise; the
    facets of a render or a flat-shaded model do not.
    """
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3) / 8.0
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3) / 8.0
    flat = np.sqrt(gx * gx + gy * gy) < 0.01
    h, w = mask.shape
    out = np.zeros((h, w), bool)
    for blob, _ in _blobs(mask, 1):
        if float(flat[blob].mean()) > 0.5:
            out |= blob
    return out


def trunks(rgb: np.ndarray, detail: np.ndarray) -> np.ndarray:
    """Tree trunks, poles and posts: bool [H, W] for `rgb` [H, W, 3] (0..1), `local_detail` [H, W].

    Upright (the local structure tensor, over 1.2 % of the long side, has
    coherence over 0.35 and over 70 % of its gradient energy across x),
    unsaturated (under 0.35), neither dark nor bright (value 0.08..0.6), in
    focus (detail over 15 % of the image's 99th percentile) and tall (it
    survives an opening with a vertical line of 6 % of the long side); then
    grown along its length over like-coloured pixels. A trunk inside a
    crown is too thin for the superpixels, so this is applied per pixel.
    Grass blades and stems are saturated and fail.
    """
    h, w = detail.shape
    long_side = max(h, w)
    _, sat, val = _hsv(rgb)
    gray = cv2.cvtColor(np.ascontiguousarray(rgb, np.float32), cv2.COLOR_RGB2GRAY)
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3)
    sigma = max(1.0, 0.006 * long_side)
    jxx, jxy, jyy = (cv2.GaussianBlur(a, (0, 0), sigma) for a in (gx * gx, gx * gy, gy * gy))
    total = jxx + jyy + 1e-9
    coherence = np.sqrt((jxx - jyy) ** 2 + 4.0 * jxy * jxy) / total
    ref = max(float(np.percentile(detail, 99)), 1e-4)
    upright = ((coherence > 0.3) & (jxx > 0.6 * total) & (sat < 0.35) & (val > 0.08) & (val < 0.6)
               & (detail > 0.15 * ref)).astype(np.uint8)
    length = max(5, int(0.06 * long_side))
    tall = cv2.morphologyEx(upright, cv2.MORPH_OPEN, np.ones((length, 1), np.uint8))
    alike = (sat < 0.4) & (val < 0.65)
    return (cv2.dilate(tall, np.ones((length, 3), np.uint8)) > 0) & alike


def attached_blooms(bloom: np.ndarray, foliage: np.ndarray, colourless: np.ndarray, cues: PlantCues,
                    value: np.ndarray, threshold: float = 0.375) -> np.ndarray:
    """`bloom` [H, W] (0..1) kept only on blobs that belong to plants; float32 [H, W].

    A petal colour alone also describes a red bowl, a fruit, a paint brush or
    a wall; a flower is told apart by the plant it grows on. Blobs of
    `bloom > threshold` are judged apart for coloured parts and colourless
    ones (`colourless` > 0.5: white petals and seed heads, but also rocks,
    clouds, snow, white walls and mountains, so they need more evidence).
    "Attached" means touching (within 1.5 % of the long side) a blob of
    `foliage > threshold` of at least 3 % of the bloom blob's area: a
    flower's stem and leaves show, a few green specks on a brush do not.
    The ring is the surroundings, 4 % of the long side wide.

    - A coloured blob is kept when attached, or when at least 30 % of its
      ring is green (flowers among leaves), or when its ring meets a kept
      coloured blob (a bunch of flowers), or as a free-hanging leaf: it
      touches no edge of the frame, its outline is lobed (solidity under
      0.85) and at least 60 % of its ring is still background (sky).
    - A colourless blob is kept when attached, at least 40 % of its ring is
      plant (green or a kept coloured blob) and it is brighter than its
      ring by 0.1 in value (a seed head or white petals lit among leaves;
      a rock or a wall between bushes is not).
    """
    h, w = bloom.shape
    long_side = max(h, w)
    near, reach = max(1, int(round(0.015 * long_side))), max(2, int(round(0.04 * long_side)))
    count, leaf_labels = cv2.connectedComponents((foliage > threshold).astype(np.uint8), connectivity=8)
    leaf_areas = np.bincount(leaf_labels.ravel(), minlength=count)
    leaf_areas[0] = 0
    keep = np.zeros((h, w), bool)
    for colourless_pass in (False, True):
        pending = []
        parts = (bloom > threshold) & ((colourless > 0.5) == colourless_pass)
        for blob, touches_edge in _blobs(parts, max(4, int(MIN_OBJECT_FRACTION * h * w))):
            blob8 = blob.astype(np.uint8)
            touched = leaf_labels[(cv2.dilate(blob8, _disc(near)) > 0) & (leaf_labels > 0)]
            attached = touched.size > 0 and leaf_areas[touched].max() >= 0.03 * blob.sum()
            ring = (cv2.dilate(blob8, _disc(reach)) > 0) & ~blob
            if not ring.any():
                continue
            if colourless_pass:
                ok = (attached and float(((cues.green > 0.5) | keep)[ring].mean()) >= 0.4
                      and float(value[blob].mean()) > float(value[ring].mean()) + 0.1)
            else:
                ok = (attached or float(cues.green[ring].mean()) >= 0.3
                      or (not touches_edge and _solidity(blob) < 0.85 and float(cues.still[ring].mean()) >= 0.6))
                if not ok:
                    pending.append((blob, ring))
            if ok:
                keep |= blob
        grown = True  # a bunch: coloured blobs whose ring meets a kept one join it
        while grown:
            grown = False
            for blob, ring in pending:
                if not keep[blob].any() and (ring & keep).any():
                    keep |= blob
                    grown = True
    return (bloom * keep).astype(np.float32)


@dataclass
class PlantMap:
    """Result of `plant_map`, both [H, W].

    score:  float32 0..1, how much each superpixel looks like a swaying plant part.
    pinned: bool, pixels that never move although their superpixel may: trunks,
            bare stone and bark inside foliage, too thin for the superpixels.
    heads:  bool, the kept blooms (flower heads, seed heads) for `rigid_pieces`.
    """

    score: np.ndarray
    pinned: np.ndarray
    heads: np.ndarray


def plant_map(rgb: np.ndarray, labels: np.ndarray) -> PlantMap:
    """What may sway in `rgb` [H, W, 3] (0..1), per superpixel (`labels` [H, W]) and per pixel.

    Colour pictures: foliage, less green blobs that are solid and smooth
    (`rigid_blobs`: a green apple), plus the blooms `attached_blooms` keeps. Within foliage, dull pixels (grey or
    brown: saturation under 0.2, value 0.14..0.65, not a kept bloom) and
    `trunks` are pinned: moss moves, the rock under it does not.
    Grayscale pictures, whose plants cannot be told by colour: textured,
    not-dark parts, less flat-shaded blobs (`flat_shaded_blobs`); `analyze`
    also moves them less.
    """
    h, w = labels.shape
    detail = local_detail(rgb)
    ref = max(float(np.percentile(detail, 99)), 1e-4)
    textured = _ramp(detail / ref, 0.08, 0.3)
    if is_grayscale(rgb):
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        score = _segment_mean(textured * _ramp(gray, 0.06, 0.14), labels)
        score = np.where(flat_shaded_blobs(score > 0.375, gray), 0.0, score).astype(np.float32)
        return PlantMap(score, np.zeros((h, w), bool), np.zeros((h, w), bool))
    cues = plant_cues(rgb, detail)
    free = 1.0 - cues.still
    foliage = _segment_mean(cues.foliage * free, labels)
    solid = rigid_blobs(_segment_mean(cues.green * free, labels) > 0.375, textured)
    foliage = np.where(solid, 0.0, foliage).astype(np.float32)
    bloom = _segment_mean(cues.bloom * free, labels)
    colourless = _segment_mean(cues.colourless, labels)
    _, sat, val = _hsv(rgb)
    blooms = attached_blooms(bloom, foliage, colourless, cues, val)
    dull = (sat < 0.2) & (val > 0.14) & (val < 0.65)
    dull = cv2.morphologyEx(dull.astype(np.uint8), cv2.MORPH_OPEN, np.ones((2, 2), np.uint8)) > 0
    pinned = (dull & (foliage > 0.375) & (blooms <= 0.375)) | trunks(rgb, detail)
    return PlantMap(np.maximum(foliage, blooms), pinned, (blooms > 0.375) & (blooms > foliage))


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


def _hanging_point(blob: np.ndarray, textured: np.ndarray, near: int, far: int) -> tuple[float, float] | None:
    """Where a free blob hangs from: (x, y) pixels, or None.

    The support (a twig, a stalk) is the textured structure (`textured`,
    bool [H, W]) outside the blob that reaches farthest from it, at least
    3 * `far` pixels (or to the frame's edge); the hinge is the blob's pixel
    nearest to where that structure enters the band `near`..`far` pixels
    around the blob. Bits of the blob's own edge or texture close to it do
    not reach far and are ignored.
    """
    h, w = blob.shape
    outside = (~blob).astype(np.uint8)
    distance = cv2.distanceTransform(outside, cv2.DIST_L2, 3)
    candidates = (textured & (distance > near)).astype(np.uint8)
    count, labels = cv2.connectedComponents(candidates, connectivity=8)
    if count < 2:
        return None
    reach = np.zeros(count)
    np.maximum.at(reach, labels.ravel(), distance.ravel())
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    reach[border] = np.inf
    entering = np.unique(labels[(distance <= far) & (labels > 0)])
    if entering.size == 0:
        return None
    best = entering[np.argmax(reach[entering])]
    if reach[best] < 3 * far:
        return None
    sy, sx = np.nonzero((labels == best) & (distance <= far))
    ys, xs = np.nonzero(blob)
    nearest = np.argmin((ys - sy.mean()) ** 2 + (xs - sx.mean()) ** 2)
    return float(xs[nearest]), float(ys[nearest])


def rigid_pieces(objects: np.ndarray, heads: np.ndarray | None, detail: np.ndarray,
                 core: np.ndarray | None = None, max_fraction: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """Parts that sway as one rigid piece, and the hinge each turns about.

    objects: int32 [H, W] from `connected_objects`; heads: bool [H, W] flower
    heads (kept blooms) or None; detail: `local_detail` [H, W]; core: bool
    [H, W] where the map is plainly plant before feathering (a head's fringe
    stays in it), or None for all of the objects.
    A piece is a blob of `heads` inside an object that stands on the frame
    (a flower head on its stem; hinge: where it meets the rest of its
    object below its centre, else its lowest point; with its fringe, the
    object's pixels within 3 % of the long side not below the hinge), or a whole object that touches no edge
    of the frame (a leaf on a still twig; hinge: `_hanging_point`, else its
    lowest point, as for a flower whose stem is not seen). Pieces over
    `max_fraction` of the frame (a hedge), and lobed heads over 5 % of it (a
    bunch, solidity under 0.8), bend instead.
    Returns (pieces int32 [H, W], 0 = none, 1..m; hinges float32 [m, 2] as (x, y) pixels).
    """
    from scipy import ndimage

    h, w = objects.shape
    long_side = max(h, w)
    pieces = np.zeros((h, w), np.int32)
    hinges = []
    rows, cols = np.mgrid[0:h, 0:w]
    ref = max(float(np.percentile(detail, 99)), 1e-4)

    def lowest_point(blob):
        ys, xs = np.nonzero(blob)
        return float(xs[ys == ys.max()].mean()), float(ys.max())

    def add(blob, hinge):
        pieces[blob] = len(hinges) + 1
        hinges.append(hinge)

    near, far = max(1, int(round(0.02 * long_side))), max(2, int(round(0.06 * long_side)))
    for label in range(1, int(objects.max(initial=0)) + 1):
        whole = objects == label
        ys, xs = np.nonzero(whole)
        if ys.min() > 0 and xs.min() > 0 and ys.max() < h - 1 and xs.max() < w - 1:
            if whole.sum() > max_fraction * h * w:
                continue
            hinge = _hanging_point(whole, detail > 0.3 * ref, near, far)
            add(whole, hinge if hinge is not None else lowest_point(whole))
        elif heads is not None:
            for blob, _ in _blobs(heads & whole, max(4, int(MIN_OBJECT_FRACTION * h * w))):
                blob = ndimage.binary_fill_holes(blob) & whole  # a dark centre is part of the head
                # One head is compact; a lobed blob of over 5 % of the frame is a bunch, which bends.
                limit = max_fraction if _solidity(blob) >= 0.8 else 0.05
                if blob.sum() > limit * h * w or (pieces[blob] > 0).any():
                    continue
                joint = (cv2.dilate(blob.astype(np.uint8), _disc(near)) > 0) & whole & ~blob
                joint &= rows > rows[blob].mean()  # a stem carries its head from below
                hinge = (float(cols[joint].mean()), float(rows[joint].mean())) if joint.any() else lowest_point(blob)
                # The head's fringe (fuzzy or pale edges the colour cues missed) goes with it, the stem not.
                fringe = (cv2.dilate(blob.astype(np.uint8), _disc(far // 2)) > 0) & whole & (rows <= hinge[1])
                if core is not None:
                    fringe &= core
                add(blob | (fringe & (pieces == 0)), hinge)
    return pieces, np.asarray(hinges, np.float32).reshape(-1, 2)


def analyze(rgb: np.ndarray, what_moves: str = "plants", alpha: np.ndarray | None = None) -> MotionRegions:
    """Decide what moves in `rgb` [H, W, 3] (0..1), optional `alpha` [H, W] (0..1).

    what_moves: "plants", "flame" or "all" (see gdyn_backend.presets).
    Transparent pixels (alpha = 0) never move.
    """
    h, w = rgb.shape[:2]
    rgb = np.ascontiguousarray(rgb, np.float32)
    pinned = None
    if what_moves == "all":
        score = np.ones((h, w), np.float32)
    else:
        labels = superpixels(rgb, num_segments=max(16, min(400, h * w // 150)))
        if what_moves == "plants":
            plants = plant_map(rgb, labels)
            score, pinned = plants.score, plants.pinned
        else:
            score = _segment_mean(flame_score(rgb), labels)
    if alpha is not None:
        score = score * (alpha > 0)
    feather = max(0.7, max(h, w) / 256.0)
    moveability = fill_small_holes(_ramp(score, 0.2, 0.55))
    if pinned is not None:
        moveability = np.where(pinned, np.float32(0.0), moveability)
    core = moveability > 0.5  # before feathering: where the map is plainly plant
    moveability = cv2.GaussianBlur(moveability, (0, 0), feather)
    if alpha is not None:
        moveability = moveability * np.clip(alpha, 0.0, 1.0)
    moveability = np.clip(moveability, 0.0, 1.0).astype(np.float32)
    objects = connected_objects(moveability)
    heads = None
    if what_moves == "plants":
        moveability = moveability * focus_factor(objects, local_detail(rgb, colour=True))
        if is_grayscale(rgb):
            moveability *= np.float32(GRAYSCALE_GAIN)
        else:
            heads = plants.heads
    pieces, hinges = rigid_pieces(objects, heads, local_detail(rgb), core)
    return MotionRegions(moveability, objects, pieces, hinges)


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
