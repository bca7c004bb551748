"""The procedural prior: what moves, spectrum shape, seeds, masks, odd stills.

Motion energy of a pixel is sum_k |A_k(p)|^2 (twice its mean squared
displacement over time). Thresholds held (measured values in the README):
synthetic scene with an exact foreground: >= 95 % of the energy inside it;
real photos (seeds 0 and 1): moving-region energy density >= 5x the still
region's and >= 85 % of their combined energy in the moving region.

Set GDYN_PREVIEW_DIR=/some/folder to also save the preview montages
(X-t slices, gdyn_backend.visualize) of every shared photo there.
"""

import os

import cv2
import numpy as np
import pytest
from synthetic import plant_scene

from gdyn_backend import io, spectral
from gdyn_backend.errors import UserError
from gdyn_backend.presets import REFERENCE_SIZE_PX, list_presets, load_preset
from gdyn_backend.sources.procedural import sample_volume, spectral_envelope

BREEZE = load_preset("gentle_breeze")


def energy(volume: spectral.SpectralVolume) -> np.ndarray:
    return (volume.amplitude.astype(np.float64) ** 2).sum(axis=(0, 1))


def scene_still(seed: int = 0) -> tuple[io.Still, np.ndarray]:
    rgb, foreground = plant_scene(seed=seed)
    return io.Still(rgb, None, 8), foreground


@pytest.mark.parametrize("name", ["gentle_breeze", "gusty_wind", "large_tree_sway"])
def test_synthetic_scene_moves_only_its_plants(name):
    still, foreground = scene_still()
    volume = sample_volume(still, load_preset(name), seed=3)
    assert volume.source == "procedural" and volume.amplitude.shape == (16, 4, 144, 192)
    e = energy(volume)
    inside = e[foreground].sum() / e.sum()
    assert inside >= 0.95, f"{name}: only {inside:.3f} of the motion energy is on the plants"
    # Far from the plants (sky top rows, wall, soil bottom rows) nothing moves.
    far = cv2.dilate(foreground.astype(np.uint8), np.ones((9, 9), np.uint8)) == 0
    assert np.sqrt(e[far].max() / 2) < 0.02, "background more than 0.02 px from its place"


def test_amplitude_matches_the_preset_at_the_reference_size():
    still, foreground = scene_still()
    volume = sample_volume(still, BREEZE, seed=0)
    rms = np.sqrt(energy(volume) / 2)  # RMS displacement over time, motion pixels
    target = BREEZE.amplitude_px * max(volume.width, volume.height) / REFERENCE_SIZE_PX
    top = np.percentile(rms[foreground], 90)
    assert 0.5 * target < top < 3.0 * target, (top, target)


@pytest.mark.parametrize("name", sorted(list_presets()))
@pytest.mark.slow
def test_spectrum_decays_with_frequency_as_paper_fig2(name):
    still, _ = scene_still()
    preset = load_preset(name)
    volume = sample_volume(still, preset, seed=1)
    if preset.what_moves != "plants":  # flame/all: give it a fully free mask
        volume = sample_volume(still, preset, seed=1, mask=np.ones(still.rgb.shape[:2], np.float32))
    amp = np.abs(volume.complex_modes()).mean(axis=(1, 2, 3))  # mean |A_k|, pixels
    assert amp[0] == 0.0  # no static offset
    above = volume.frequencies_hz >= preset.band_hz[0]  # fig. 2: decay from the dominant band up
    slope = np.polyfit(volume.frequencies_hz[above], np.log(amp[above]), 1)[0]
    assert slope < -0.5, f"{name}: log-amplitude slope {slope:.2f} per Hz is not decaying"
    assert amp[-1] < 0.1 * amp.max(), f"{name}: 3 Hz band still {amp[-1] / amp.max():.2f} of the peak"
    peak = volume.frequencies_hz[np.argmax(amp)]
    assert preset.band_hz[0] - 0.2 <= peak <= preset.band_hz[1] + 0.2, (peak, preset.band_hz)


def test_envelope_is_a_damped_resonance_times_an_exponential():
    f = np.linspace(0.0, 6.0, 31)  # to 6 Hz: the fitted band reaches 2.9 Hz, the tail needs points above it
    env = spectral_envelope(f, BREEZE)
    assert env[0] == 0 and np.all(env[1:] > 0)
    tail = f > BREEZE.band_hz[1]
    assert tail.sum() >= 5
    slope = np.polyfit(f[tail], np.log(env[tail]), 1)[0]
    assert slope < -1.0 / BREEZE.decay_hz  # at least the exponential decay above the band


def test_same_seed_same_bits_other_seed_other_motion():
    still, foreground = scene_still()
    a = sample_volume(still, BREEZE, seed=11)
    b = sample_volume(still, BREEZE, seed=11)
    c = sample_volume(still, BREEZE, seed=12)
    assert np.array_equal(a.amplitude, b.amplitude)
    assert a.metadata["seed"] == "11" and a.metadata["preset"] == "gentle_breeze"
    ta = spectral.motion_texture(a, spectral.frame_times(30, 30.0))[:, :, foreground]
    tc = spectral.motion_texture(c, spectral.frame_times(30, 30.0))[:, :, foreground]
    correlation = np.corrcoef(ta.ravel(), tc.ravel())[0, 1]
    assert abs(correlation) < 0.5, f"seeds 11 and 12 give correlated motion ({correlation:.2f})"
    # Same places move whatever the seed.
    ea, ec = energy(a), energy(c)
    assert ec[foreground].sum() / ec.sum() > 0.95 and ea[foreground].sum() / ea.sum() > 0.95


def test_black_mask_region_has_exactly_zero_displacement():
    still, _ = scene_still()
    mask = np.ones(still.rgb.shape[:2], np.float32)
    mask[:, :96] = 0.0  # left half pinned, even over plants
    mask[100:, 150:] = 0.4  # soft values scale (applied by the pipeline)
    volume = sample_volume(still, BREEZE, seed=0, mask=mask)
    assert np.all(volume.amplitude[..., :, :96] == 0.0)
    e = energy(volume)
    assert e[:, 100:].mean() > 0, "white mask must free the background too (mask overrides the analysis)"
    # Pipeline: upsample to full resolution and multiply by the full-res mask.
    big = cv2.resize(mask, (384, 288), interpolation=cv2.INTER_NEAREST)
    for t in (0.3, 1.7, 4.1):
        full = spectral.resample_displacement(spectral.displacement_at(volume, t), 384, 288) * big[None]
        assert np.all(full[:, :, :192] == 0.0)
        assert np.abs(full[:, :, 200:]).max() > 0.01


def test_mask_of_wrong_size_is_resampled_or_refused(tmp_path):
    still, _ = scene_still()
    half = np.zeros((72, 96, 3), np.float32)
    half[:, 48:] = 1.0
    io.write_png(tmp_path / "half.png", half)
    mask = io.read_mask(tmp_path / "half.png", 192, 144)  # same aspect: resampled
    assert mask.shape == (144, 192) and mask[:, :90].max() == 0.0 and mask[:, 100:].min() == 1.0
    volume = sample_volume(still, BREEZE, mask=mask)
    assert np.all(volume.amplitude[..., :90] == 0.0)
    io.write_png(tmp_path / "square.png", np.ones((100, 100, 3), np.float32))
    with pytest.raises(UserError, match="aspect ratios differ"):
        io.read_mask(tmp_path / "square.png", 192, 144)
    with pytest.raises(UserError, match="mask is 100x100"):
        sample_volume(still, BREEZE, mask=np.ones((100, 100), np.float32))


def test_grayscale_16bit_rgba_and_tiny_stills(tmp_path):
    rgb, foreground = plant_scene()
    gray = (rgb.mean(axis=2) * 65535).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "gray16.png"), gray)
    still = io.read_image(tmp_path / "gray16.png")
    assert still.bit_depth == 16
    volume = sample_volume(still, BREEZE)
    assert np.isfinite(volume.amplitude).all() and energy(volume).max() > 0

    alpha = np.ones(rgb.shape[:2], np.float32)
    alpha[:, 96:] = 0.0  # right half transparent: never moves
    io.write_png(tmp_path / "rgba.png", rgb, alpha)
    still = io.read_image(tmp_path / "rgba.png")
    volume = sample_volume(still, BREEZE)
    assert np.all(volume.amplitude[..., 96:] == 0.0) and energy(volume)[:, :96].max() > 0

    tiny = cv2.resize(rgb, (16, 16), interpolation=cv2.INTER_AREA)
    volume = sample_volume(io.Still(tiny, None, 8), BREEZE)
    assert volume.amplitude.shape == (16, 4, 16, 16) and np.isfinite(volume.amplitude).all()
    one = sample_volume(io.Still(np.full((1, 1, 3), 0.5, np.float32), None, 8), BREEZE)
    assert one.amplitude.shape == (16, 4, 1, 1)


@pytest.mark.slow
def test_motion_resolution_never_exceeds_the_still():
    big = io.Still(cv2.resize(plant_scene()[0], (1024, 768)), None, 8)
    volume = sample_volume(big, BREEZE)
    assert (volume.width, volume.height) == (384, 288)
    assert sample_volume(io.Still(plant_scene()[0], None, 8), BREEZE).width == 192


# ---------------------------------------------------------------------------
# Real photos (../shared/data/stills): regions from ../shared/data/README.md


def _hsv(rgb):
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    return hsv[..., 0], hsv[..., 1], hsv[..., 2]


def _box(shape, x0, y0, x1, y1):
    """Boolean box given as fractions of the width and height."""
    h, w = shape
    out = np.zeros(shape, bool)
    out[int(y0 * h):int(y1 * h), int(x0 * w):int(x1 * w)] = True
    return out


def photo_regions(name: str, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(should move, should stay still) as boolean maps, from the data README."""
    hue, sat, val = _hsv(rgb)
    shape = rgb.shape[:2]
    green = (hue > 60) & (hue < 170) & (sat > 0.2) & (val > 0.15)
    if name == "tulips_yellow":  # petals vs the black background
        return (sat > 0.5) & (val > 0.4), val < 0.08
    if name == "leaf_on_twig":  # the leaf vs the blue sky
        sky = rgb[..., 2] > rgb[..., 0] + 0.1
        return _box(shape, 0.27, 0.5, 0.58, 0.9) & ~sky, sky & ~_box(shape, 0.25, 0.45, 0.6, 0.95)
    if name == "dandelion":  # seed head and stem vs the green background at the sides
        return (_box(shape, 0.48, 0.12, 0.9, 0.66) | _box(shape, 0.65, 0.6, 0.71, 1.0),
                _box(shape, 0.0, 0.0, 0.4, 1.0) | _box(shape, 0.93, 0.0, 1.0, 1.0))
    if name == "sunflowers":  # yellow petals and leaves vs brown soil
        soil = (hue < 40) & (sat > 0.25) & (sat < 0.65) & (val < 0.55) & ~green
        return ((hue > 40) & (hue < 60) & (sat > 0.6) & (val > 0.6)) | green, soil
    if name == "tulips_garden":  # leaves and pink/red tulips vs soil
        soil = (hue > 10) & (hue < 45) & (sat < 0.45) & ~green
        return green | (((hue > 300) | (hue < 10)) & (sat > 0.3)), soil
    if name == "tulips_vase":  # orange petals and leaves vs the wall above them
        return ((sat > 0.6) & (val > 0.5)) | green, _box(shape, 0, 0, 0.25, 0.12) | _box(shape, 0.56, 0, 0.8, 0.2)
    raise KeyError(name)


PHOTOS = ["dandelion", "leaf_on_twig", "sunflowers", "tulips_garden", "tulips_vase", "tulips_yellow"]


@pytest.mark.parametrize("name", PHOTOS)
@pytest.mark.slow
def test_photos_move_plants_and_keep_background_still(shared_stills, name):
    path = shared_stills / f"{name}.jpg"
    still = io.read_image(path)
    moving, fixed = photo_regions(name, still.rgb)
    for seed in (0, 1):
        volume = sample_volume(still, BREEZE, seed=seed)
        e = cv2.resize(energy(volume).astype(np.float32), (still.width, still.height))
        density = e[moving].mean() / max(e[fixed].mean(), 1e-12)
        share = e[moving].sum() / (e[moving].sum() + e[fixed].sum())
        assert density >= 5.0 and share >= 0.85, \
            f"{name} seed {seed}: density ratio {density:.1f}, share {share:.3f}"
    preview_dir = os.environ.get("GDYN_PREVIEW_DIR")
    if preview_dir:
        from gdyn_backend.visualize import preview

        assert preview(path, os.path.join(preview_dir, f"{name}_preview.png")).is_file()


def test_xt_montage_of_a_small_still(tmp_path):
    from gdyn_backend.visualize import montage, render_frames, xt_slice

    still, foreground = scene_still()
    volume = sample_volume(still, BREEZE, seed=0)
    frames = render_frames(still.rgb, None, volume, 12, 30.0)
    assert np.abs(frames[0] - still.rgb).max() < 0.02  # frame 0 is the still
    row_moving = int(np.argmax(energy(volume).mean(axis=1)))
    row_sky = 2
    xt = xt_slice(frames, row_moving)
    assert xt.shape == (12, 192, 3)
    assert np.abs(np.diff(xt, axis=0)).max() > 0.05  # the plants' row changes in time
    assert np.abs(np.diff(xt_slice(frames, row_sky), axis=0)).max() < 0.01  # the sky's does not
    picture = montage(still.rgb, foreground.astype(np.float32), volume, frames, [row_moving, row_sky])
    io.write_png(tmp_path / "m.png", picture)
    assert picture.ndim == 3 and (tmp_path / "m.png").stat().st_size > 1000


def test_animate_with_a_mask_keeps_black_pixels_exactly_still(tmp_path):
    """Through `animate.animate` (what `gdyn animate --mask` runs): EXR maps are 0 under black."""
    from gdyn_backend.animate import AnimateOptions, animate

    rgb, _ = plant_scene(96, 72)
    io.write_png(tmp_path / "still.png", rgb)
    mask = np.ones((36, 48, 3), np.float32)  # half size, same aspect: resampled by io.read_mask
    mask[:, :24] = 0.0
    io.write_png(tmp_path / "mask.png", mask)
    options = AnimateOptions(frames=6, fps=12.0, loop=True, mask=tmp_path / "mask.png", amplitude=3.0)
    animate(tmp_path / "still.png", tmp_path / "out", options)
    maps = [io.read_displacement_exr(tmp_path / "out" / "displacement" / f"{i:04d}.exr") for i in range(6)]
    assert all(np.all(m[:, :, :46] == 0.0) for m in maps)  # black half (minus the resampled edge)
    assert max(np.abs(m[:, :, 50:]).max() for m in maps) > 0.05  # the white half moves


def test_candle_flame_moves_the_flame_tip_not_the_wax():
    rgb = np.full((200, 160, 3), 0.05, np.float32)
    flame = np.zeros((200, 160), np.uint8)
    cv2.ellipse(flame, (80, 80), (14, 40), 0, 0, 360, 1, -1)
    rgb[flame > 0] = (1.0, 0.8, 0.3)
    rgb[120:, 65:96] = (0.85, 0.82, 0.75)  # pale wax candle body
    volume = sample_volume(io.Still(rgb, None, 8), load_preset("candle_flame"), seed=0)
    e = energy(volume)
    assert e[flame > 0].sum() / e.sum() > 0.95 and e[125:, 65:96].max() < 1e-6
    tip, base = np.sqrt(e[42:60, 72:88].mean() / 2), np.sqrt(e[100:116, 72:88].mean() / 2)
    assert tip > 2.0 * base, f"flame tip {tip:.2f} px vs base {base:.2f} px RMS"
