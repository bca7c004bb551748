"""What moves and how, on photos nobody tuned the prior to (issue 13), and the what-moves map.

The measure (the issue's): motion M(p) = mean over time of |F_t(p)| in pixels
of the still, for the default preset; a photo's figure is the mean of M over
its 30 % most-moving pixels, averaged over seeds 0-3 (one draw varies by up
to 2x, the mean of four by about 10 %). Thresholds held:
- every still scene at most 0.15x the median plant scene;
- every plant scene at least 0.9x what main gave before this work (MAIN,
  measured the same way on commit 2f688af);
- in mixed scenes, the mean M over the mountain, sky, sea, bare rocks and
  bare trunks at most 0.15x the mean M over the vegetation (seeds 0 and 1).
The regions were drawn by looking at each photo with a 20x20 grid over it:
boxes hold only that material with a margin from any plant (the sea is the
blue pixels of its band, shrunk by 3 px away from the grass stalks crossing
it; trunks are 6 px wide polylines along the bare trunks below the canopy;
vegetation boxes are the meadow, the autumn forest, the grass or the green
pixels of the foliage).

Rigid sway (seeds 0-3): the leaf of leaf_on_twig turns about where its
petiole meets it, (0.49, 0.565) of the frame, read off the photo: its RMS
motion correlates with the distance from there (r >= 0.6, measured 0.69-0.71;
main -0.3..-0.06) and the 15 % of the leaf nearest to it moves at most 0.4x
the farthest 20 % (0.25-0.27; main 0.98-1.29). Inside the dandelion's seed
head (a disc of 0.7x its radius) the RMS spatial gradient of the motion times
that radius is at most 0.35x the head's RMS sway (0.23-0.26; main 1.2-1.9):
the head sways as one piece with a little flutter.
"""

import cv2
import numpy as np
import pytest
from synthetic import SHARED_STILLS, plant_scene

from gdyn_backend import io, spectral
from gdyn_backend.presets import DEFAULT_PRESET, load_preset
from gdyn_backend.sources.procedural import (motion_resolution, regions_for, sample_volume,
                                             what_moves)

PRESET = load_preset(DEFAULT_PRESET)
SEEDS = (0, 1, 2, 3)
STILL_SCENES = ["room_wine", "dog_window", "paint_brushes", "suzanne_render"]
PLANT_SCENES = ["dandelion", "green_meadow", "leaf_on_twig", "sunflowers", "tulips_garden",
                "tulips_vase", "tulips_yellow"]
# Mean over seeds 0-3 of the 30 %-most-moving motion on main (2f688af), pixels of the still.
MAIN = {"dandelion": 1.831, "green_meadow": 6.381, "leaf_on_twig": 0.578, "sunflowers": 3.757,
        "tulips_garden": 2.449, "tulips_vase": 4.629, "tulips_yellow": 2.625}


def motion_map(still: io.Still, seed: int) -> np.ndarray:
    """M(p) = mean_t |F_t(p)|, float32 [H, W] in pixels of the still, at the still's size."""
    volume = sample_volume(still, PRESET, seed=seed)
    scale = max(still.width, still.height) / max(volume.width, volume.height)
    return cv2.resize(spectral.mean_displacement_magnitude(volume) * scale, (still.width, still.height),
                      interpolation=cv2.INTER_LINEAR)


def top_motion(motion: np.ndarray, share: float = 0.3) -> float:
    """Mean of `motion` over its `share` most-moving pixels."""
    flat = np.sort(motion.ravel())[::-1]
    return float(flat[:max(1, int(share * flat.size))].mean())


@pytest.fixture(scope="module")
def figures():
    """{photo: mean over SEEDS of top_motion} for the still and plant scenes (computed once)."""
    if not SHARED_STILLS.is_dir():
        pytest.skip("../shared/data/stills is absent (it is not part of the project)")
    folder = SHARED_STILLS
    return {name: float(np.mean([top_motion(motion_map(io.read_image(folder / f"{name}.jpg"), seed))
                                 for seed in SEEDS]))
            for name in STILL_SCENES + PLANT_SCENES}


@pytest.mark.slow
def test_still_scenes_stay_still(figures):
    median = float(np.median([figures[name] for name in PLANT_SCENES]))
    for name in STILL_SCENES:
        assert figures[name] <= 0.15 * median, \
            f"{name}: {figures[name]:.3f} px against 0.15 x the plant median {median:.2f} px"


@pytest.mark.slow
def test_plant_scenes_move_as_much_as_before(figures):
    for name in PLANT_SCENES:
        assert figures[name] >= 0.9 * MAIN[name], f"{name}: {figures[name]:.3f} px, main {MAIN[name]} px"


def _box(shape, x0, y0, x1, y1):
    h, w = shape
    out = np.zeros(shape, bool)
    out[int(y0 * h):int(y1 * h), int(x0 * w):int(x1 * w)] = True
    return out


def _polylines(shape, lines, width):
    h, w = shape
    out = np.zeros(shape, np.uint8)
    for line in lines:
        points = np.array([(int(x * w), int(y * h)) for x, y in line], np.int32)
        cv2.polylines(out, [points], False, 1, max(1, int(width * w)))
    return out > 0


def mixed_regions(name: str, rgb: np.ndarray) -> dict[str, np.ndarray]:
    """{"vegetation": ..., other parts: ...} as bool maps of the photo (module docstring)."""
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    hue, sat = hsv[..., 0], hsv[..., 1]
    shape = rgb.shape[:2]
    green = (hue > 60) & (hue < 170) & (sat > 0.2)
    if name == "mountain_meadow":
        return {"vegetation": _box(shape, 0, 0.75, 1, 1) | _box(shape, 0.02, 0.35, 0.3, 0.58),
                "mountain": _box(shape, 0.2, 0.17, 0.9, 0.32) | _box(shape, 0.45, 0.32, 0.7, 0.42),
                "sky": _box(shape, 0, 0, 1, 0.08)}
    if name == "forest_stream":
        return {"vegetation": (_box(shape, 0.55, 0, 0.8, 0.2) | _box(shape, 0.86, 0.1, 1, 0.3)
                               | _box(shape, 0, 0.7, 0.08, 0.92)) & green,
                "rocks": (_box(shape, 0.56, 0.5, 0.74, 0.74) | _box(shape, 0.74, 0.62, 0.84, 0.84)
                          | _box(shape, 0.03, 0.33, 0.13, 0.47) | _box(shape, 0.25, 0.36, 0.4, 0.5)),
                "trunks": _polylines(shape, [[(0.8125, 0.15), (0.825, 0.225), (0.845, 0.376), (0.862, 0.52)],
                                             [(0.843, 0.15), (0.853, 0.356)],
                                             [(0.937, 0.22), (0.95, 0.38)]], 0.008)}
    if name == "dune_grass":
        blue = (hue > 170) & (hue < 235) & (sat > 0.3) & _box(shape, 0, 0.31, 1, 0.47)
        return {"vegetation": _box(shape, 0, 0.65, 1, 1), "sky": _box(shape, 0, 0, 1, 0.1),
                "sea": cv2.erode(blue.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0}
    if name == "dandelion_meadow":
        return {"vegetation": _box(shape, 0.15, 0.1, 0.44, 0.5) | _box(shape, 0, 0.75, 1, 1),
                "sky": _box(shape, 0.35, 0, 0.7, 0.08)}
    raise KeyError(name)


@pytest.mark.parametrize("name", ["mountain_meadow", "forest_stream", "dune_grass", "dandelion_meadow"])
@pytest.mark.slow
def test_mixed_scenes_move_only_their_vegetation(shared_stills, name):
    still = io.read_image(shared_stills / f"{name}.jpg")
    regions = mixed_regions(name, still.rgb)
    for seed in (0, 1):
        motion = motion_map(still, seed)
        vegetation = float(motion[regions["vegetation"]].mean())
        assert vegetation > 0.1, f"{name} seed {seed}: the vegetation barely moves ({vegetation:.3f} px)"
        for part, region in regions.items():
            if part != "vegetation":
                ratio = float(motion[region].mean()) / vegetation
                assert ratio <= 0.15, f"{name} seed {seed}: {part} moves {ratio:.3f}x the vegetation"


def rms_motion(volume: spectral.SpectralVolume) -> np.ndarray:
    """RMS over time of the displacement, sqrt(sum_k |A_k|^2 / 2), float64 [h, w] in motion pixels."""
    return np.sqrt((volume.amplitude.astype(np.float64) ** 2).sum(axis=(0, 1)) / 2.0)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.slow
def test_leaf_turns_about_its_petiole(shared_stills, seed):
    still = io.read_image(shared_stills / "leaf_on_twig.jpg")
    volume = sample_volume(still, PRESET, seed=seed)
    h, w = volume.height, volume.width
    hsv = cv2.cvtColor(cv2.resize(still.rgb, (w, h), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2HSV)
    yy, xx = np.mgrid[0:h, 0:w]
    leaf = (hsv[..., 0] < 60) & (hsv[..., 1] > 0.3) & _box((h, w), 0.27, 0.5, 0.6, 0.92)
    distance = np.hypot(xx - 0.49 * w, yy - 0.565 * h)[leaf]
    rms = rms_motion(volume)[leaf]
    near = rms[distance < np.percentile(distance, 15)].mean()
    far = rms[distance > np.percentile(distance, 80)].mean()
    assert np.corrcoef(distance, rms)[0, 1] >= 0.6 and near <= 0.4 * far, \
        (np.corrcoef(distance, rms)[0, 1], near / far)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.slow
def test_flower_head_sways_as_one_piece(shared_stills, seed):
    volume = sample_volume(io.read_image(shared_stills / "dandelion.jpg"), PRESET, seed=seed)
    h, w = volume.height, volume.width
    yy, xx = np.mgrid[0:h, 0:w]
    radius = 0.7 * 0.275 * h  # the seed head spans y 0.12..0.67 of the frame around (0.685, 0.395)
    head = np.hypot(xx - 0.685 * w, yy - 0.395 * h) < radius
    gy, gx = np.gradient(volume.amplitude.astype(np.float64), axis=(2, 3))
    gradient = np.sqrt((gx ** 2 + gy ** 2).sum(axis=(0, 1)) / 2.0)  # RMS |d displacement / d position|
    sway = rms_motion(volume)[head].mean()
    assert sway > 0.5 and gradient[head].mean() * radius <= 0.35 * sway, (gradient[head].mean() * radius, sway)


@pytest.mark.slow
def test_what_moves_map_is_the_priors_analysis_at_the_stills_size():
    rgb, foreground = plant_scene(384, 288)
    still = io.Still(rgb, None, 8)
    moves = what_moves(still, PRESET)
    assert moves.shape == (288, 384) and moves.dtype == np.float32
    assert moves.min() >= 0.0 and moves.max() <= 1.0
    assert moves[foreground].mean() > 0.5  # the plants are white
    far = cv2.dilate(foreground.astype(np.uint8), np.ones((15, 15), np.uint8)) == 0
    assert moves[far].max() < 0.05  # sky, wall and soil are black
    # The same analysis the prior samples from: zero motion exactly where the map is zero.
    w, h = motion_resolution(still.width, still.height)
    small = regions_for(still, PRESET, w, h).moveability
    assert np.allclose(cv2.resize(moves, (w, h), interpolation=cv2.INTER_AREA), small, atol=0.05)
    alpha = np.ones(rgb.shape[:2], np.float32)
    alpha[:, 192:] = 0.0
    assert np.all(what_moves(io.Still(rgb, alpha, 8), PRESET)[:, 192:] == 0.0)


def _table_scene(fruit: bool) -> np.ndarray:
    """A still life, float32 [240, 320, 3]: a beige wall, a brown table, a red bowl, a green apple."""
    rng = np.random.default_rng(5)
    img = np.empty((240, 320, 3), np.float32)
    img[:140] = (0.85, 0.80, 0.70)
    img[140:] = (0.45, 0.30, 0.18)
    img *= 0.97 + 0.06 * rng.random((240, 320, 1)).astype(np.float32)
    yy, xx = np.mgrid[0:240, 0:320].astype(np.float32)
    shade = np.clip(1.0 - ((xx - 150) ** 2 + (yy - 120) ** 2) / 9000.0, 0.55, 1.0)[..., None]
    bowl = ((xx - 160) / 80) ** 2 + ((yy - 160) / 40) ** 2 < 1.0
    img[bowl] = (np.array([0.85, 0.12, 0.10]) * shade)[bowl]
    if fruit:
        apple = (xx - 175) ** 2 + (yy - 115) ** 2 < 32 ** 2
        img[apple] = (np.array([0.45, 0.75, 0.20]) * shade)[apple]
    return np.clip(img, 0, 1)


@pytest.mark.parametrize("fruit", [False, True], ids=["red bowl", "bowl with a green apple"])
def test_a_bowl_on_a_table_stays_still(fruit):
    """Saturated, smooth, convex blobs with no plant attached do not sway (the rule, not a photo)."""
    volume = sample_volume(io.Still(_table_scene(fruit), None, 8), PRESET, seed=0)
    assert rms_motion(volume).max() < 0.02
