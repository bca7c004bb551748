"""Motion from real video (`gdyn_backend.flow`, `gdyn extract`) on clips with known motion.

Clips are made by warping a still (a real photo from ../shared/data/stills,
or the built-in synthetic picture) with a known sum of sinusoids at band
frequencies k * fps / T. Tolerances, all at 256x160 unless stated:
  - flow of one pair: mean end-point error <= 0.15 px, 95th percentile <= 0.40 px
    (measured 0.05-0.14 px mean over the six photos);
  - bands: the three bands with energy are exactly the known ones, at the
    known frequencies to 1e-9 Hz, each amplitude (median over pixels of
    |A_k| / known) within 0.04 px or 4 %, whichever is larger (measured:
    within 0.5 % for 1-2 px bands, down to -4.3 % = 0.02 px for a 0.5 px band
    in H.264), every other non-zero band below 0.05 px on average (measured
    0.02 px);
  - the displacement rebuilt from the K = 16 bands: mean error <= 0.15 px
    and 95th percentile <= 0.35 px against the known motion over all
    frames and pixels (measured 0.04-0.05 px mean, 0.09-0.11 px p95 on the
    photos, PNG and H.264; 0.017 / 0.04 px on the synthetic picture; the
    low-texture photos tulips_vase / tulips_yellow reach 0.10 / 0.26 px).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from synthetic import band_motion, load_still, make_clip, synthetic_still, warp_forward, write_frames_folder, write_mp4

from gdyn_backend import spectral
from gdyn_backend.cli import main
from gdyn_backend.errors import Cancelled, UserError
from gdyn_backend.flow import (
    DenseFlow,
    MotionStatistics,
    check_motion,
    extract_trajectories,
    extract_volume,
    motion_statistics,
    to_gray,
)
from gdyn_backend.progress import Progress

W, H, FPS = 256, 160, 30.0
BANDS, AMPLITUDES = (2, 5, 9), (2.0, 1.0, 0.5)


def _epe(flow, truth):
    return np.sqrt(((flow - truth) ** 2).sum(axis=0))


def _assert_recovered(volume, motion, period, bands=BANDS, amplitudes=AMPLITUDES):
    """The known bands, frequencies, amplitudes and per-pixel motion are recovered."""
    modes = volume.complex_modes()  # [K, 2, H, W]
    magnitude = np.sqrt((np.abs(modes) ** 2).sum(axis=1))  # [K, H, W] pixels
    energy = magnitude[1:].mean(axis=(1, 2))
    strongest = sorted(int(k) + 1 for k in np.argsort(energy)[-len(bands):])
    assert strongest == sorted(bands), f"band energies {np.round(energy, 3)}"
    np.testing.assert_allclose(volume.frequencies_hz[list(bands)], motion.frequencies_hz, atol=1e-9)
    for band, amplitude in zip(bands, amplitudes):
        ratio = np.median(magnitude[band] / (amplitude * motion.envelope))
        assert abs(ratio - 1.0) * amplitude <= max(0.04, 0.04 * amplitude), \
            f"band {band}: amplitude ratio {ratio:.3f} of {amplitude} px"
    others = [k for k in range(1, volume.num_bands) if k not in bands]
    assert energy[[k - 1 for k in others]].max() < 0.05, f"band energies {np.round(energy, 3)}"
    rebuilt = spectral.motion_texture(volume, spectral.frame_times(period, volume.fps))
    error = _epe(rebuilt.transpose(1, 0, 2, 3), motion.trajectories(period, volume.fps).transpose(1, 0, 2, 3))
    assert error.mean() <= 0.15 and np.percentile(error, 95) <= 0.35, \
        f"rebuilt motion error mean {error.mean():.3f} px, p95 {np.percentile(error, 95):.3f} px"


@pytest.mark.parametrize("name", ["dandelion.jpg", "leaf_on_twig.jpg", "tulips_vase.jpg"])
def test_flow_of_one_pair_matches_known_warp(shared_stills, name):
    still = load_still(name, W, H)
    motion = band_motion(W, H, FPS, 60)
    flow = DenseFlow()
    reference = to_gray(warp_forward(still, motion.displacement(0, FPS)), W, H)
    errors = [_epe(flow(reference, to_gray(warp_forward(still, motion.displacement(t, FPS)), W, H)),
                   motion.displacement(t, FPS)) for t in (4, 11, 23, 37)]
    errors = np.stack(errors)
    assert errors.mean() <= 0.15 and np.percentile(errors, 95) <= 0.40, \
        f"{name}: EPE mean {errors.mean():.3f} px, p95 {np.percentile(errors, 95):.3f} px"


@pytest.mark.parametrize("container", ["png", "mp4"])
@pytest.mark.slow
def test_extract_recovers_known_bands_from_photo(shared_stills, tmp_path, container):
    period = 60
    motion = band_motion(W, H, FPS, period, BANDS, AMPLITUDES, seed=3)
    clip = make_clip(load_still("sunflowers.jpg", W, H), motion, period, FPS)
    if container == "png":
        source = write_frames_folder(clip, tmp_path / "frames")
    else:
        source = write_mp4(clip, tmp_path / "clip.mp4", FPS)
    volume, _ = extract_volume(source, window=period, num_bands=16)
    assert volume.amplitude.shape == (16, 4, H, W) and volume.fps == FPS
    assert volume.metadata["motion_check"] == "passed"
    _assert_recovered(volume, motion, period)


@pytest.mark.slow
def test_extract_recovers_known_bands_from_synthetic_picture(tmp_path):
    """Same as the photo test with the built-in picture, so it never skips."""
    period = 60
    motion = band_motion(W, H, FPS, period, (1, 4, 12), (1.5, 0.8, 0.4), seed=5)
    clip = make_clip(synthetic_still(W, H, seed=2), motion, period, FPS)
    volume, _ = extract_volume(write_frames_folder(clip, tmp_path / "frames"), window=period)
    _assert_recovered(volume, motion, period, (1, 4, 12), (1.5, 0.8, 0.4))


@pytest.mark.slow
def test_cli_default_window_150_frames_mp4(shared_stills, tmp_path):
    """`gdyn extract` with all defaults: T = 150 at 30 fps, K = 16 bands (0-3 Hz), 256x160."""
    period = 150
    motion = band_motion(W, H, FPS, period, (3, 7, 14), (1.8, 1.0, 0.5), seed=7)
    clip = make_clip(load_still("tulips_garden.jpg", W, H), motion, period, FPS)
    video = write_mp4(clip, tmp_path / "garden.mp4", FPS)
    out = tmp_path / "motion.safetensors"
    assert main(["extract", str(video), "-o", str(out)]) == 0
    volume = spectral.load_volume(out)
    assert volume.source == "video" and volume.period_frames == 150 and volume.num_bands == 16
    np.testing.assert_allclose(volume.frequencies_hz, np.arange(16) * 0.2, atol=1e-12)
    assert volume.metadata["clip"] == "garden.mp4" and volume.metadata["start_frame"] == "0"
    assert volume.metadata["window_frames"] == "150" and volume.metadata["clip_size"] == "256x160"
    assert float(volume.metadata["mean_motion_px"]) > 0.3
    _assert_recovered(volume, motion, period, (3, 7, 14), (1.8, 1.0, 0.5))


@pytest.mark.slow
def test_start_frame_skips_earlier_frames(tmp_path):
    """With --start 12 the first 12 frames (another picture, other motion) do not matter."""
    period = 40
    motion = band_motion(W, H, FPS, period, (2, 6), (1.5, 0.7), seed=11)
    lead_in = make_clip(synthetic_still(W, H, seed=9), band_motion(W, H, FPS, 12, (1,), (6.0,)), 12, FPS)
    clip = np.concatenate([lead_in, make_clip(synthetic_still(W, H, seed=4), motion, period, FPS)])
    volume, _ = extract_volume(write_frames_folder(clip, tmp_path / "f"), start=12, window=period,
                            num_bands=12)
    assert volume.metadata["start_frame"] == "12"
    _assert_recovered(volume, motion, period, (2, 6), (1.5, 0.7))


@pytest.mark.slow
def test_motion_resolution_scales_pixels(tmp_path):
    """A 512x320 clip read at 256x160 (--size) or --width 128 gives motion in those pixels."""
    period = 30
    motion = band_motion(512, 320, FPS, period, (3,), (4.0,), seed=1)
    folder = write_frames_folder(make_clip(synthetic_still(512, 320), motion, period, FPS), tmp_path / "f")
    for width, height in ((256, 160), (128, None)):
        volume, _ = extract_volume(folder, window=period, num_bands=8, width=width, height=height)
        assert (volume.width, volume.height) == (width, 80 if height is None else height)
        scale = width / 512
        magnitude = np.sqrt((np.abs(volume.complex_modes()[3]) ** 2).sum(axis=0))
        envelope = cv2.resize(motion.envelope, (volume.width, volume.height), interpolation=cv2.INTER_AREA)
        ratio = np.median(magnitude / (4.0 * scale * envelope))
        assert abs(ratio - 1.0) <= 0.06, f"{width} px wide: amplitude ratio {ratio:.3f}"


def test_fps_override_sets_band_frequencies(tmp_path):
    period = 20
    folder = write_frames_folder(make_clip(synthetic_still(64, 48), band_motion(64, 48, 24, period),
                                           period, 24), tmp_path / "f")
    volume, _ = extract_volume(folder, window=period, num_bands=5, width=64, height=48, fps=24,
                            force=True)  # 2 px at 64x48 is large motion for the filter
    np.testing.assert_allclose(volume.frequencies_hz, np.arange(5) * 24 / 20)
    assert volume.fps == 24 and volume.metadata["clip_fps"] == "24.0"


# ---------------------------------------------------------------------------
# Filters (paper §7.2)


def _stats_of(trajectories):
    return motion_statistics(np.asarray(trajectories, np.float32))


def test_filter_passes_oscillation_and_names_the_reason_otherwise():
    t, h, w = 30, 160, 256
    small = band_motion(w, h, FPS, t).trajectories(t, FPS)
    assert check_motion(_stats_of(small)) is None
    big = small * (9.0 / _stats_of(small).mean_motion_px)  # mean motion 9 px
    assert "mean motion 9.00 px is over the 8.00 px" in check_motion(_stats_of(big))
    pan = np.zeros((t, 2, h, w), np.float32)
    pan[:, 0] = (np.arange(t) * 0.1)[:, None, None]  # every pixel: 1.45 px on average
    reason = check_motion(_stats_of(pan))
    assert "camera moves" in reason and "1.45 px" in reason
    pan[:, :, 10, 10] = 0.0  # one still pixel: not every pixel moves
    assert check_motion(_stats_of(pan)) is None


def test_filter_thresholds_scale_with_motion_resolution():
    at_512 = MotionStatistics(12.0, 0.5, 20.0, 512, 320)  # 6 px at 256x160
    assert check_motion(at_512) is None
    assert "limit at 256x160" in check_motion(MotionStatistics(12.0, 0.5, 20.0, 256, 160))


@pytest.mark.slow
def test_camera_pan_clip_is_refused_unless_forced(tmp_path, capsys):
    period, still = 30, synthetic_still(W, H, seed=6)
    shift = np.zeros((2, H, W), np.float32)
    frames = []
    for t in range(period):
        shift[0] = 0.15 * t  # the whole picture slides right: camera motion
        frames.append(warp_forward(still, shift))
    folder = write_frames_folder(np.stack(frames), tmp_path / "pan")
    out = tmp_path / "pan.safetensors"
    assert main(["extract", str(folder), "-o", str(out), "--frames", "30"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("gdyn: error: clip rejected: every pixel moves")
    assert "camera moves" in err[-1] and "--force" in err[-1]
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["pan"]
    assert main(["extract", str(folder), "-o", str(out), "--frames", "30", "--force"]) == 0
    assert "gdyn: warning: kept despite the filter" in capsys.readouterr().err
    volume = spectral.load_volume(out)
    assert volume.metadata["motion_check"].startswith("forced: every pixel moves")
    assert float(volume.metadata["min_pixel_mean_motion_px"]) > 1.0


# ---------------------------------------------------------------------------
# Progress and cancellation


def test_progress_reports_every_pair_and_cancel_stops(tmp_path):
    frames = [synthetic_still(64, 48)] * 12
    seen = []
    traj = extract_trajectories(iter(frames), start=2, window=10, width=64, height=48,
                                progress=Progress(lambda s, d, n: seen.append((s, d, n))))
    assert traj.shape == (10, 2, 48, 64) and np.abs(traj).max() < 0.05  # still frames: no motion
    assert ("seeking", 2, 2) in seen and seen[-1] == ("flow", 9, 9)
    holder = []

    def cancelling(stage, done, total):
        if stage == "flow" and done == 3:
            holder[0].cancel()

    progress = Progress(cancelling)
    holder.append(progress)
    with pytest.raises(Cancelled):
        extract_trajectories(iter(frames), window=10, width=64, height=48, progress=progress)


def test_short_iterator_says_how_many_frames_there_are():
    frames = [synthetic_still(64, 48)] * 7
    expected = r"ends after 7 readable frames but start frame 2 \+ window 8 needs 10"
    with pytest.raises(UserError, match=expected):
        extract_trajectories(iter(frames), start=2, window=8, width=64, height=48)
