"""Motion presets for the add-on's menu, read from `presets/*.toml` with tomllib.

The files are the same ones the backend validates (`gdyn_backend/presets.py`
documents their keys); the add-on only needs each file's stem, `label` and
`description`, so it reads them without numpy or the backend. In an
installed extension the files sit in `presets/` inside the add-on folder;
in a source checkout, in `presets/` at the repository root.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

DEFAULT = "gentle_breeze"
FALLBACK = (DEFAULT, "Gentle breeze", "Soft, slow sway (preset files not found)")


def presets_dir() -> Path | None:
    here = Path(__file__).resolve().parent
    for folder in (here / "presets", here.parent / "presets"):
        if folder.is_dir() and any(folder.glob("*.toml")):
            return folder
    return None


def read_presets() -> list[tuple[str, str, str]]:
    """(name, label, description) of every readable preset file, sorted by name.

    A file that is not valid TOML is listed with its error as description, so
    the user sees it in the menu instead of it silently vanishing; the
    backend refuses it with a clear message if it is used.
    """
    folder = presets_dir()
    if folder is None:
        return [FALLBACK]
    items = []
    for path in sorted(folder.glob("*.toml")):
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
            label = str(data.get("label", path.stem))
            description = str(data.get("description", ""))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as exc:
            label, description = path.stem, f"unreadable preset file: {exc}"
        items.append((path.stem, label, description))
    return items
