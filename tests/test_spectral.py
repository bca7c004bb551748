"""The spectral volume: FFT round trips, file format, normalization, loops, edits."""

import json

import numpy as np
import pytest
import torch
from synthetic import write_raw_motion

from gdyn_backend import spectral
from gdyn_backend.errors import UserError


def random_trajectories(t, h=6, w=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(0, 2.0, (t, 2, h, w)).astype(np.float32)


@pytest.mark.parametrize("t", [20, 21])
def test_all_bands_round_trip_is_exact(t):
    traj = random_trajectories(t)
    volume = spectral.volume_from_trajectories(traj, fps=24.0, num_bands=t // 2 + 1)
    texture = spectral.motion_texture(volume, spectral.frame_times(t, 24.0), anchored=False)
    np.testing.assert_allclose(texture, traj, atol=2e-5)


def test_known_sinusoid_amplitude_frequency_and_phase():
    t, fps, k, amp, phase = 150, 30.0, 7, 3.5, 0.8
    times = np.arange(t)
    x = amp * np.cos(2 * np.pi * k * times / t + phase)
    traj = np.zeros((t, 2, 2, 3), np.float32)
    traj[:, 0] = x[:, None, None]
    volume = spectral.volume_from_trajectories(traj, fps=fps)
    assert volume.num_bands == 16
    assert volume.frequencies_hz[k] == pytest.approx(k * fps / t)
    modes = volume.complex_modes()
    np.testing.assert_allclose(np.abs(modes[k, 0]), amp, rtol=1e-5)
    np.testing.assert_allclose(np.angle(modes[k, 0]), phase, atol=1e-5)
    others = np.delete(np.abs(modes[:, 0]), k, axis=0)
    assert others.max() < 1e-4
    # Evaluated at a fractional time the band sum is the continuous cosine.
    d = spectral.displacement_at(volume, 0.5 / fps, anchored=False)
    assert d[0, 0, 0] == pytest.approx(amp * np.cos(2 * np.pi * k * 0.5 / t + phase), abs=1e-4)


def test_anchored_texture_starts_at_the_still():
    volume = spectral.volume_from_trajectories(random_trajectories(40), fps=30.0, num_bands=8)
    assert np.abs(spectral.displacement_at(volume, 0.0)).max() == 0.0
    raw = spectral.motion_texture(volume, [0.0, 0.3], anchored=False)
    anchored = spectral.motion_texture(volume, [0.0, 0.3])
    np.testing.assert_allclose(anchored[1], raw[1] - raw[0], atol=1e-5)


def test_amplitude_and_speed_edits():
    volume = spectral.volume_from_trajectories(random_trajectories(30), fps=30.0, num_bands=8)
    base = spectral.motion_texture(volume, [0.2])
    np.testing.assert_allclose(spectral.motion_texture(spectral.scaled(volume, 2.5), [0.2]), 2.5 * base, rtol=1e-5, atol=1e-5)
    fast = spectral.retimed(volume, 2.0)
    np.testing.assert_allclose(spectral.motion_texture(fast, [0.1]), base, atol=1e-5)
    with pytest.raises(UserError):
        spectral.retimed(volume, 0.0)


@pytest.mark.parametrize("frames,fps", [(150, 30.0), (97, 24.0), (61, 12.5), (10, 60.0), (2, 30.0)])
def test_loop_closes_in_position_and_velocity(frames, fps):
    volume = spectral.volume_from_trajectories(random_trajectories(150, seed=3), fps=30.0)
    loop = spectral.looped(volume, frames, fps)
    times = spectral.frame_times(frames + 1, fps)
    texture = spectral.motion_texture(loop, times)
    seam = np.abs(texture[frames] - texture[0]).max()
    assert seam < 1e-3
    # Periodic around the seam: F(N/fps + s) = F(s) for small s of either sign,
    # so position and velocity (central difference) both match.
    dt = 1e-3
    around_end = spectral.motion_texture(loop, frames / fps + np.array([-dt, dt]))
    around_start = spectral.motion_texture(loop, np.array([-dt, dt]))
    np.testing.assert_allclose(around_end, around_start, atol=1e-3)
    v_end = (around_end[1] - around_end[0]) / (2 * dt)
    v_start = (around_start[1] - around_start[0]) / (2 * dt)
    assert np.abs(v_end - v_start).max() < 0.5  # px/s, vs velocities of order 100 px/s


def test_loop_frequencies_keep_every_band_moving():
    freqs = spectral.band_frequencies(16, 30.0, 150)
    snapped = spectral.loop_frequencies(freqs, 97, 24.0)
    assert snapped[0] == 0.0
    assert (snapped[1:] > 0).all()
    cycles = snapped * 97 / 24.0
    np.testing.assert_allclose(cycles, np.round(cycles), atol=1e-9)
    assert np.abs(snapped[1:] - freqs[1:]).max() <= 0.5 * 24.0 / 97 + 1e-9


def test_motion_weights_are_mean_displacement_magnitude():
    t, a = 64, 2.0
    x = a * np.cos(2 * np.pi * 4 * np.arange(t) / t)
    traj = np.zeros((t, 2, 3, 4), np.float32)
    traj[:, 1, 1:, :] = x[:, None, None]  # bottom rows move, top row still
    volume = spectral.volume_from_trajectories(traj, fps=30.0)
    w = spectral.mean_displacement_magnitude(volume)
    assert w.shape == (3, 4)
    assert np.abs(w[0]).max() < 1e-5
    # mean over a period of |a (cos - 1)| for the anchored texture is a.
    np.testing.assert_allclose(w[1:], a, rtol=0.02)


def test_resampled_volume_is_in_new_pixels():
    traj = np.ones((8, 2, 4, 6), np.float32)
    traj[:, 0] *= 1.5
    traj[:, 1] *= -0.5
    volume = spectral.volume_from_trajectories(traj, fps=8.0, num_bands=3)
    big = spectral.resampled(volume, 12, 16)
    assert (big.height, big.width) == (16, 12)
    np.testing.assert_allclose(big.amplitude[0, 0], 1.5 * 2, rtol=1e-5)
    np.testing.assert_allclose(big.amplitude[0, 2], -0.5 * 4, rtol=1e-5)
    d = spectral.resample_displacement(np.stack([np.full((4, 6), 1.0), np.full((4, 6), 1.0)]).astype(np.float32), 3, 8)
    np.testing.assert_allclose(d[0], 0.5)
    np.testing.assert_allclose(d[1], 2.0)


def test_file_round_trip_is_identical_with_metadata(tmp_path):
    volume = spectral.volume_from_trajectories(random_trajectories(30), fps=24.0, num_bands=9,
                                               source="video", metadata={"clip": "a.mp4"})
    path = spectral.save_volume(volume, tmp_path / "m.safetensors")
    back = spectral.load_volume(path)
    assert np.array_equal(back.amplitude, volume.amplitude)
    assert np.array_equal(back.frequencies_hz, volume.frequencies_hz)
    assert (back.fps, back.period_frames, back.source) == (24.0, 30, "video")
    assert back.metadata == {"clip": "a.mp4"}
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        meta = f.metadata()
    assert meta["format"] == "gdyn-spectral-volume"
    assert json.loads(meta["frequencies_hz"]) == pytest.approx(list(volume.frequencies_hz))
    assert (meta["width"], meta["height"]) == ("5", "6")
    assert not list(tmp_path.glob(".*partial*"))


def test_transposed_amplitude_round_trips(tmp_path):
    # safetensors writes wrong bytes for non-contiguous arrays; the writer must copy.
    base = (np.arange(3 * 4 * 5 * 6, dtype=np.float32) / 64).reshape(6, 5, 4, 3)  # up to 5.6 px
    transposed = base.transpose(3, 2, 1, 0)
    assert not transposed.flags["C_CONTIGUOUS"]
    volume = spectral.SpectralVolume(transposed, np.arange(3.0), 30.0, 150, "test")
    back = spectral.load_volume(spectral.save_volume(volume, tmp_path / "t.safetensors"))
    assert np.array_equal(back.amplitude, transposed)


def test_bad_motion_files_are_refused(tmp_path):
    with pytest.raises(UserError, match="not found"):
        spectral.load_volume(tmp_path / "missing.safetensors")
    text = tmp_path / "text.safetensors"
    text.write_text("hello")
    with pytest.raises(UserError, match="not a safetensors"):
        spectral.load_volume(text)
    from safetensors.numpy import save_file

    other = tmp_path / "other.safetensors"
    save_file({"weights": np.zeros(3, np.float32)}, str(other), {"format": "something"})
    with pytest.raises(UserError, match="not a gdyn motion file"):
        spectral.load_volume(other)
    amp = np.zeros((2, 4, 3, 3), np.float32)
    amp[1, 0, 1, 1] = np.nan
    nan_volume = spectral.SpectralVolume(amp, [0.0, 0.2], 30.0, 150, "x")
    nan_path = tmp_path / "nan.safetensors"
    with pytest.raises(UserError, match="NaN"):  # gdyn never writes such a file ...
        spectral.save_volume(nan_volume, nan_path)
    assert not nan_path.exists()
    write_raw_motion(nan_path, amp, 30.0, 150)  # ... but another program may
    with pytest.raises(UserError, match="NaN"):
        spectral.load_volume(nan_path)


def test_normalization_inverse_is_exact_numpy_and_torch():
    rng = np.random.default_rng(1)
    amp = (rng.normal(0, 1, (2, 16, 4, 8, 8)) * np.logspace(1, -2, 16)[None, :, None, None, None]).astype(np.float32)
    stats = spectral.NormalizationStatistics(16)
    for sample in amp:
        stats.add(sample)
    norm = stats.normalizer()
    x = norm.normalize(amp)
    assert np.quantile(np.abs(x), 0.97) == pytest.approx(1.0, rel=0.15)
    np.testing.assert_allclose(norm.denormalize(x), amp, rtol=1e-5, atol=1e-7)
    xt = norm.normalize(torch.from_numpy(amp))
    np.testing.assert_allclose(xt.numpy(), x, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(norm.denormalize(xt).numpy(), amp, rtol=1e-5, atol=1e-7)


def test_normalization_statistics_match_direct_percentile(tmp_path):
    rng = np.random.default_rng(2)
    volumes = [rng.normal(0, 3, (16, 4, 5, 7)).astype(np.float32) for _ in range(4)]
    stats = spectral.NormalizationStatistics(16)
    for v in volumes:
        stats.add(v)
    direct = np.percentile(np.abs(np.stack(volumes)).transpose(1, 0, 2, 3, 4).reshape(16, -1), 97, axis=1)
    norm = stats.normalizer()
    np.testing.assert_allclose(norm.scales, direct, rtol=1e-6)
    back = spectral.load_normalizer(spectral.save_normalizer(norm, tmp_path / "stats.safetensors"))
    assert np.array_equal(back.scales, norm.scales)
