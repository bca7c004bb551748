"""`gdyn preset --from-video`: a preset fitted to a clip with known motion recovers that motion.

The clip: a textured still moved by sinusoids exactly at bands k = 1..6 of a
64-frame window at 16 fps (0.25..1.5 Hz), amplitudes A_k along 30 degrees and
0.35 A_k across it (independent phases), times a smooth envelope. Known:
the relative band amplitudes A_k / max A, the direction 30 deg, the bias
sqrt(1 - 0.35^2) = 0.937 and the RMS displacement of the moving pixels
(computed from the exact trajectories). Tolerances held (measured values in
the README): relative band amplitude within 0.05, bands without motion under
0.05, direction within 3 deg, bias within 0.03, amplitude within 10 %.
Animating a still with the fitted preset (what moves: all, stiffness 0,
variation 0, same fps and window) gives back the clip's relative band
amplitudes within 0.05, its amplitude within 10 % and its direction within
3 deg.
"""

from __future__ import annotations

import tomllib

import numpy as np
import pytest
from synthetic import SinusoidMotion, make_clip, smooth_envelope, synthetic_still, write_frames_folder

from gdyn_backend import io
from gdyn_backend.cli import main
from gdyn_backend.flow import extract_volume
from gdyn_backend.preset_fit import MOVING_SHARE, measure_volume
from gdyn_backend.presets import REFERENCE_SIZE_PX, Preset, load_preset
from gdyn_backend.sources.procedural import sample_volume

pytestmark = pytest.mark.slow  # the fitted-preset fixture alone takes ~5 s

W, H, FPS, T = 256, 160, 16.0, 64
BANDS = np.arange(1, 7)
AMPLITUDES = np.array([1.2, 1.6, 1.0, 0.6, 0.35, 0.2])  # px at 256 wide, along the direction
ANGLE_DEG, ACROSS = 30.0, 0.35


def known_motion() -> SinusoidMotion:
    rng = np.random.default_rng(4)
    along = np.array([np.cos(np.radians(ANGLE_DEG)), np.sin(np.radians(ANGLE_DEG))])
    across = np.array([-along[1], along[0]])
    return SinusoidMotion(amplitudes_px=np.concatenate([AMPLITUDES, ACROSS * AMPLITUDES]),
                          frequencies_hz=np.concatenate([BANDS, BANDS]) * FPS / T,
                          phases=rng.uniform(0, 2 * np.pi, 2 * BANDS.size),
                          directions=np.array([along] * BANDS.size + [across] * BANDS.size),
                          envelope=smooth_envelope(W, H, seed=2, floor=0.4))


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    motion = known_motion()
    folder = tmp_path_factory.mktemp("clip") / "frames"
    write_frames_folder(make_clip(synthetic_still(W, H, seed=6), motion, T, FPS), folder)
    trajectories = motion.trajectories(T, FPS)  # [T, 2, H, W]
    energy = ((trajectories - trajectories.mean(axis=0)) ** 2).sum(axis=1).mean(axis=0)  # [H, W]
    moving = energy >= np.quantile(energy, 1.0 - MOVING_SHARE)
    rms_512 = float(np.sqrt(energy[moving].mean())) * REFERENCE_SIZE_PX / W
    return folder, rms_512


@pytest.fixture(scope="module")
def fitted(clip_folder, tmp_path_factory):
    folder, _ = clip_folder
    out = tmp_path_factory.mktemp("preset") / "my_wind.toml"
    assert main(["preset", "--from-video", str(folder), "--fps", str(FPS), "--frames", str(T),
                 "-o", str(out)]) == 0
    return load_preset(out)


def test_fitted_preset_recovers_the_known_motion(fitted, clip_folder):
    _, rms_512 = clip_folder
    hz, relative = np.array(fitted.spectrum_hz), np.array(fitted.spectrum_amplitude)
    expected = np.zeros_like(hz)
    expected[BANDS - 1] = AMPLITUDES / AMPLITUDES.max()
    assert np.allclose(hz, np.arange(1, hz.size + 1) * FPS / T)
    assert np.abs(relative - expected).max() <= 0.05, np.round(relative - expected, 3)
    assert abs(fitted.direction_deg - ANGLE_DEG) <= 3.0, fitted.direction_deg
    assert abs(fitted.direction_bias - np.sqrt(1 - ACROSS ** 2)) <= 0.03, fitted.direction_bias
    assert abs(fitted.amplitude_px / rms_512 - 1.0) <= 0.10, (fitted.amplitude_px, rms_512)
    assert fitted.band_hz[0] < fitted.band_hz[1] and fitted.what_moves == "plants"  # the base's


def test_animating_with_the_fitted_preset_gives_back_the_clips_band_energies(fitted, clip_folder):
    folder, _ = clip_folder
    clip = measure_volume(extract_volume(folder, window=T, fps=FPS)[0])
    everything = Preset(**{**fitted.__dict__, "what_moves": "all", "stiffness": 0.0, "variation": 0.0})
    still = io.Still(synthetic_still(2 * W, 2 * H, seed=1), None, 8)
    # The animated still moves everywhere: measure all of it, over two seeds (a band's
    # random field has only ~200 independent cells; one draw varies by ~7 %).
    draws = [measure_volume(sample_volume(still, everything, seed=seed, fps=FPS, period_frames=T,
                                          motion_size=2 * W), moving_share=1.0) for seed in (0, 1)]
    band_rms = np.sqrt(np.mean([d.band_rms_px ** 2 for d in draws], axis=0))
    assert np.allclose(draws[0].frequencies_hz, clip.frequencies_hz)
    shape = lambda rms: rms / rms.max()  # noqa: E731
    assert np.abs(shape(band_rms) - shape(clip.band_rms_px)).max() <= 0.05, \
        np.round(shape(band_rms) - shape(clip.band_rms_px), 3)
    amplitude = float(np.sqrt(np.sum(band_rms ** 2)))
    assert abs(amplitude / clip.amplitude_px - 1.0) <= 0.10, (amplitude, clip.amplitude_px)
    assert all(abs(d.direction_deg - clip.direction_deg) <= 3.0 for d in draws)


def test_written_file_is_plain_toml_with_the_spectrum(fitted, clip_folder, tmp_path):
    folder, _ = clip_folder
    out = tmp_path / "wind.toml"
    assert main(["preset", "--from-video", str(folder), "--fps", str(FPS), "--frames", str(T),
                 "--base", "large_tree_sway", "--label", "Wind", "-o", str(out)]) == 0
    data = tomllib.loads(out.read_text())
    assert all(isinstance(v, (str, int, float, list)) for v in data.values())
    assert data["label"] == "Wind" and len(data["spectrum_hz"]) == len(data["spectrum_amplitude"]) == 15
    again = load_preset(out)
    assert again.stiffness == load_preset("large_tree_sway").stiffness  # from the base
    assert again.spectrum_amplitude == fitted.spectrum_amplitude


def test_bad_output_and_clip_fail_with_one_line(tmp_path, capsys, clip_folder):
    folder, _ = clip_folder
    assert main(["preset", "--from-video", str(folder), "-o", str(tmp_path / "wind.txt")]) == 2
    assert main(["preset", "--from-video", str(tmp_path / "none.mp4"), "-o", str(tmp_path / "w.toml")]) == 2
    assert main(["preset", "--from-video", str(folder), "--frames", "500", "-o", str(tmp_path / "w.toml")]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(errors) == 3 and all(line.startswith("gdyn: error: ") for line in errors), err
    assert "Traceback" not in err
    assert not list(tmp_path.glob("*.toml"))
