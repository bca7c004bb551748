"""Motion presets: small sets of physical parameters in `presets/*.toml` (shipped as package data).

A preset describes how a scene sways, not what it looks like. The procedural
prior (`gdyn_backend.sources.procedural`) turns one into a spectral volume;
the backend's `presets` request lists them for the Blender add-on's menu.
They are plain TOML with the keys below (all required, no others, except
the optional measured spectrum).

Keys and units (amplitudes are in pixels of a still whose long side is
`REFERENCE_SIZE_PX` = 512 px; they scale with the image):

    label           str    name shown in menus
    description     str    one sentence for tooltips
    what_moves      str    "plants" (foliage, petals, stems; sky, soil, walls,
                           vases and dark backgrounds stay still), "flame"
                           (bright warm regions) or "all" (everything that is
                           not transparent; use a mask to limit it)
    amplitude_px    float  RMS displacement over time of a fully free pixel
                           at the top of its object, pixels at 512 px
    band_hz         [lo, hi] dominant frequency band in Hz (the resonance of
                           the swaying object lies in it), 0 < lo < hi
    decay_hz        float  e-folding frequency of the amplitude above the band
                           (paper fig. 2: amplitude falls ~exponentially), Hz
    damping         float  damping ratio of the resonance, 0 < damping <= 1
                           (small: sharp peak, regular sway; 1: broad, calm)
    direction_deg   float  wind direction in the image, degrees (0 = along
                           x, 90 = along y, i.e. vertical)
    direction_bias  float  0 = motion in any direction, 1 = only along the
                           wind direction
    coherence       float  spatial correlation length of the motion as a
                           fraction of the image's long side, 0 < c <= 1
    stiffness       float  0 = objects move as a whole, 1 = their anchor
                           (stem base, attachment) does not move at all
    variation       float  0 = all objects move in step, 1 = each object has
                           its own phase, size and direction of motion

Optional, together (a spectrum measured from a clip, `gdyn preset --from-video`):

    spectrum_hz         [f1, f2, ...] increasing frequencies in Hz (> 0), at
                        least 2
    spectrum_amplitude  [a1, a2, ...] relative RMS amplitude of the motion in
                        a band at each of those frequencies (>= 0, not all 0;
                        only the shape counts, `amplitude_px` sets the size).
                        With them the prior follows this spectrum instead of
                        the resonance of `band_hz` / `damping` (linear in
                        between, falling as f / f1 below f1, and as
                        exp(-(f - f_last) / decay_hz) above the last point);
                        `band_hz` still sets the spatial scale of the bands.
"""

from __future__ import annotations

import json
import math
import os
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from gdyn_backend.errors import UserError

REFERENCE_SIZE_PX = 512
WHAT_MOVES = ("plants", "flame", "all")
DEFAULT_PRESET = "gentle_breeze"


@dataclass(frozen=True)
class Preset:
    """Physical motion parameters (see the module docstring for units)."""

    name: str  # file stem, e.g. "gentle_breeze"; not a key in the file
    label: str
    description: str
    what_moves: str
    amplitude_px: float
    band_hz: tuple[float, float]
    decay_hz: float
    damping: float
    direction_deg: float
    direction_bias: float
    coherence: float
    stiffness: float
    variation: float
    spectrum_hz: tuple[float, ...] | None = None
    spectrum_amplitude: tuple[float, ...] | None = None


SPECTRUM_KEYS = ("spectrum_hz", "spectrum_amplitude")
_KEYS = [f.name for f in fields(Preset) if f.name != "name" and f.name not in SPECTRUM_KEYS]
# (low, high, low_inclusive) bounds of the numbers; None = unbounded.
_RANGES = {
    "amplitude_px": (0.0, 200.0, False),
    "decay_hz": (0.0, None, False),
    "damping": (0.0, 1.0, False),
    "direction_deg": (-360.0, 360.0, True),
    "direction_bias": (0.0, 1.0, True),
    "coherence": (0.0, 1.0, False),
    "stiffness": (0.0, 1.0, True),
    "variation": (0.0, 1.0, True),
}


def presets_dir() -> Path:
    """The presets folder: $GDYN_PRESETS, else the one shipped with the package.

    An installed wheel has the files in `gdyn_backend/preset_files/` (package
    data made from the top-level `presets/` folder, see pyproject.toml); a
    source checkout (editable install) reads the top-level `presets/` itself.
    """
    override = os.environ.get("GDYN_PRESETS")
    if override:
        return Path(override)
    here = Path(__file__).resolve().parent
    packaged = here / "preset_files"
    return packaged if packaged.is_dir() else here.parent / "presets"


def list_presets() -> list[str]:
    """Names (file stems) of the presets in `presets_dir()`, sorted."""
    folder = presets_dir()
    return sorted(p.stem for p in folder.glob("*.toml")) if folder.is_dir() else []


def _number(source: str, key: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"preset {source}: key '{key}' must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise UserError(f"preset {source}: key '{key}' must be finite, got {value}")
    low, high, low_inclusive = _RANGES.get(key, (None, None, True))
    below = low is not None and (value < low if low_inclusive else value <= low)
    if below or (high is not None and value > high):
        bracket = "[" if low_inclusive else "("
        raise UserError(f"preset {source}: key '{key}' = {value} is outside "
                        f"{bracket}{low}, {high if high is not None else 'inf'}]")
    return value


def preset_from_dict(data: dict, name: str, source: str | None = None) -> Preset:
    """Validate a parsed TOML table; UserError naming the first bad key."""
    source = source or name
    unknown = sorted(set(data) - set(_KEYS) - set(SPECTRUM_KEYS))
    if unknown:
        raise UserError(f"preset {source}: unknown key '{unknown[0]}'; allowed keys: "
                        f"{', '.join(_KEYS + list(SPECTRUM_KEYS))}")
    missing = [k for k in _KEYS if k not in data]
    if missing:
        raise UserError(f"preset {source}: missing key '{missing[0]}'")
    values = {}
    for key in ("label", "description", "what_moves"):
        if not isinstance(data[key], str):
            raise UserError(f"preset {source}: key '{key}' must be a string, got {data[key]!r}")
        values[key] = data[key]
    if values["what_moves"] not in WHAT_MOVES:
        raise UserError(f"preset {source}: key 'what_moves' must be one of {', '.join(WHAT_MOVES)}, "
                        f"got {values['what_moves']!r}")
    band = data["band_hz"]
    if not isinstance(band, list) or len(band) != 2:
        raise UserError(f"preset {source}: key 'band_hz' must be a list [low, high] in Hz, got {band!r}")
    low, high = (_number(source, "band_hz", v) for v in band)
    if not 0 < low < high:
        raise UserError(f"preset {source}: key 'band_hz' needs 0 < low < high, got {band!r}")
    values["band_hz"] = (low, high)
    for key in _RANGES:
        values[key] = _number(source, key, data[key])
    values.update(_spectrum(source, data))
    return Preset(name=name, **values)


def _spectrum(source: str, data: dict) -> dict:
    """The optional spectrum table of a parsed preset: {} or both keys as tuples of floats."""
    present = [key for key in SPECTRUM_KEYS if key in data]
    if not present:
        return {}
    if len(present) == 1:
        other = SPECTRUM_KEYS[1 - SPECTRUM_KEYS.index(present[0])]
        raise UserError(f"preset {source}: key '{present[0]}' needs '{other}' as well")
    table = {}
    for key in SPECTRUM_KEYS:
        values = data[key]
        if not isinstance(values, list) or len(values) < 2:
            raise UserError(f"preset {source}: key '{key}' must be a list of at least 2 numbers, got {values!r}")
        numbers = []
        for value in values:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise UserError(f"preset {source}: key '{key}' must hold finite numbers, got {value!r}")
            numbers.append(float(value))
        table[key] = tuple(numbers)
    hz, amplitude = table["spectrum_hz"], table["spectrum_amplitude"]
    if len(hz) != len(amplitude):
        raise UserError(f"preset {source}: key 'spectrum_amplitude' has {len(amplitude)} values "
                        f"for {len(hz)} in 'spectrum_hz'")
    if hz[0] <= 0 or any(b <= a for a, b in zip(hz, hz[1:])):
        raise UserError(f"preset {source}: key 'spectrum_hz' must increase and be above 0 Hz")
    if min(amplitude) < 0 or max(amplitude) <= 0:
        raise UserError(f"preset {source}: key 'spectrum_amplitude' must be >= 0 and not all 0")
    return table


def preset_toml(preset: Preset, comment: str = "") -> str:
    """`preset` as the text of a preset file (plain TOML: strings, numbers, lists of numbers).

    comment: first line(s) of the file, written as `# ...` comments.
    """
    lines = [f"# {row}".rstrip() for row in comment.splitlines()]
    for key in _KEYS + list(SPECTRUM_KEYS):
        value = getattr(preset, key)
        if value is None:
            continue
        if isinstance(value, str):
            text = json.dumps(value, ensure_ascii=False)  # a TOML basic string is a JSON string
        elif isinstance(value, tuple):
            text = "[" + ", ".join(f"{v:.4g}" for v in value) + "]"
        else:
            text = f"{value:.4g}"
        lines.append(f"{key} = {text}")
    return "\n".join(lines) + "\n"


def load_preset(name_or_path) -> Preset:
    """A preset by name (file stem in `presets_dir()`) or by path to a .toml file."""
    text = str(name_or_path)
    path = Path(text)
    if not (text.endswith(".toml") or path.is_file()):
        path = presets_dir() / f"{text}.toml"
        if not path.is_file():
            raise UserError(f"unknown preset {text!r}; choose from {', '.join(list_presets()) or '(none found)'} "
                            "or give a path to a .toml file")
    if not path.is_file():
        raise UserError(f"preset file not found: {path}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"preset {path} is not valid TOML: {exc}") from None
    return preset_from_dict(data, path.stem, str(path))
