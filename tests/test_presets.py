"""Presets: the shipped files load, and bad ones fail with one line naming the key."""

import tomllib
from pathlib import Path

import numpy as np
import pytest

from gdyn_backend.errors import UserError
from gdyn_backend.presets import list_presets, load_preset, presets_dir

REQUIRED = ["candle_flame", "gentle_breeze", "gusty_wind", "large_tree_sway", "water_shimmer"]
GOOD = (presets_dir() / "gentle_breeze.toml").read_text()


def test_shipped_presets_load_and_are_plain_toml():
    assert set(REQUIRED) <= set(list_presets())
    for name in list_presets():
        preset = load_preset(name)
        assert preset.name == name and preset.label and preset.description
        assert 0 < preset.band_hz[0] < preset.band_hz[1] and preset.amplitude_px > 0
        # Plain TOML a person can edit: only strings, numbers and lists.
        data = tomllib.loads((presets_dir() / f"{name}.toml").read_text())
        assert all(isinstance(v, (str, int, float, list)) for v in data.values())


def test_load_by_path_equals_load_by_name(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(GOOD)
    by_path = load_preset(path)
    assert by_path.name == "mine"
    assert by_path.amplitude_px == load_preset("gentle_breeze").amplitude_px


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    return path


def _replace(key: str, line: str | None) -> str:
    out = []
    for row in GOOD.splitlines():
        if row.startswith(f"{key} ="):
            if line is not None:
                out.append(line)
        else:
            out.append(row)
    return "\n".join(out) + "\n"


@pytest.mark.parametrize("text, key", [
    (_replace("damping", None), "damping"),                                # missing
    (_replace("amplitude_px", 'amplitude_px = "big"'), "amplitude_px"),    # wrong type
    (_replace("coherence", "coherence = true"), "coherence"),              # bool is not a number
    (_replace("label", "label = 3"), "label"),                             # wrong type
    (_replace("band_hz", "band_hz = [1.0]"), "band_hz"),                   # wrong shape
    (_replace("band_hz", "band_hz = [2.0, 1.0]"), "band_hz"),              # low > high
    (_replace("direction_bias", "direction_bias = 1.5"), "direction_bias"),  # out of range
    (_replace("amplitude_px", "amplitude_px = -1"), "amplitude_px"),       # out of range
    (_replace("what_moves", 'what_moves = "clouds"'), "what_moves"),       # unknown choice
    (GOOD + "wobble = 3.0\n", "wobble"),                                   # unknown key
])
def test_bad_preset_names_the_key(tmp_path, text, key):
    with pytest.raises(UserError) as err:
        load_preset(_write(tmp_path, text))
    message = str(err.value)
    assert f"'{key}'" in message and "\n" not in message


def test_unknown_name_lists_the_choices():
    with pytest.raises(UserError, match="unknown preset 'hurricane'.*gentle_breeze"):
        load_preset("hurricane")


def test_invalid_toml_and_missing_file(tmp_path):
    with pytest.raises(UserError, match="not valid TOML"):
        load_preset(_write(tmp_path, "amplitude_px = = 3\n"))
    with pytest.raises(UserError, match="not found"):
        load_preset(tmp_path / "nowhere.toml")


def test_env_var_overrides_the_folder(tmp_path, monkeypatch):
    (tmp_path / "only_one.toml").write_text(GOOD)
    monkeypatch.setenv("GDYN_PRESETS", str(tmp_path))
    assert list_presets() == ["only_one"]
    assert load_preset("only_one").label == "Gentle breeze"
    with pytest.raises(UserError):
        load_preset("gentle_breeze")


SPECTRUM = 'spectrum_hz = [0.2, 0.4, 0.8]\nspectrum_amplitude = [1.0, 0.5, 0.1]\n'


def test_measured_spectrum_is_optional_and_round_trips(tmp_path):
    from gdyn_backend.presets import preset_toml

    path = _write(tmp_path, GOOD + SPECTRUM)
    preset = load_preset(path)
    assert preset.spectrum_hz == (0.2, 0.4, 0.8) and preset.spectrum_amplitude == (1.0, 0.5, 0.1)
    assert load_preset("gentle_breeze").spectrum_hz is None  # files without it stay valid
    again = tmp_path / "again.toml"
    again.write_text(preset_toml(preset, "a comment\nover two lines"))
    assert load_preset(again).spectrum_amplitude == preset.spectrum_amplitude
    assert load_preset(again).amplitude_px == preset.amplitude_px and again.read_text().startswith("# a comment")


@pytest.mark.parametrize("text, key", [
    (GOOD + 'spectrum_hz = [0.2, 0.4]\n', "spectrum_hz"),                                   # alone
    (GOOD + SPECTRUM.replace("[0.2, 0.4, 0.8]", "[0.2, 0.8, 0.4]"), "spectrum_hz"),         # not increasing
    (GOOD + SPECTRUM.replace("[0.2, 0.4, 0.8]", "[0.0, 0.4, 0.8]"), "spectrum_hz"),         # 0 Hz
    (GOOD + SPECTRUM.replace("[1.0, 0.5, 0.1]", "[1.0, 0.5]"), "spectrum_amplitude"),       # lengths differ
    (GOOD + SPECTRUM.replace("[1.0, 0.5, 0.1]", "[1.0, -0.5, 0.1]"), "spectrum_amplitude"),  # negative
    (GOOD + SPECTRUM.replace("[1.0, 0.5, 0.1]", '[1.0, "x", 0.1]'), "spectrum_amplitude"),  # not a number
])
def test_bad_spectrum_names_the_key(tmp_path, text, key):
    with pytest.raises(UserError) as err:
        load_preset(_write(tmp_path, text))
    assert f"'{key}'" in str(err.value) and "\n" not in str(err.value)


def test_measured_spectrum_shapes_the_priors_bands():
    """With a table the prior's band amplitudes follow it (linear between points, exp fall above)."""
    from dataclasses import replace

    from gdyn_backend.sources.procedural import spectral_envelope

    preset = replace(load_preset("gentle_breeze"), spectrum_hz=(0.2, 0.4, 0.8), spectrum_amplitude=(1.0, 0.5, 0.1),
                     decay_hz=0.5)
    env = spectral_envelope(np.array([0.0, 0.1, 0.2, 0.3, 0.6, 0.8, 1.3]), preset)
    expected = [0.0, 0.5, 1.0, 0.75, 0.3, 0.1, 0.1 * np.exp(-1.0)]
    assert np.allclose(env, expected, atol=1e-9)
