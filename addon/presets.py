"""The motion presets the backend offers, for the add-on's Preset menu.

The backend owns the preset files (package data of gdyn, `gdyn_backend/
presets.py`); its `presets` method lists them as (name, label,
description). `session` asks each time a backend starts (Check Backend, the
first job) and hands the answer to `store`. Until then the menu holds only
the scene's current preset.

The scene stores the chosen preset by NAME (`GDynSettings.preset_name`); the
menu (`GDynSettings.preset`) is an enum whose get/set map that name to the
item's number, so a saved file keeps its preset when a later backend offers
more or fewer presets.
"""

from __future__ import annotations

DEFAULT_PRESET = "gentle_breeze"  # the add-on's default; the backend's is gdyn_backend.presets.DEFAULT_PRESET

_offered: tuple[tuple[str, str, str], ...] | None = None  # (name, label, description) from the backend
_menus: dict[tuple, list[tuple[str, str, str, int]]] = {}  # Blender needs enum item strings kept alive


def store(entries: list[dict]) -> None:
    """Keep the backend's answer to `presets`: [{"name", "label", "description"}, ...]."""
    global _offered
    _offered = tuple((str(e["name"]), str(e.get("label", e["name"])), str(e.get("description", "")))
                     for e in entries)


def forget() -> None:
    """The backend changed: the menu shows only the current value until the next answer."""
    global _offered
    _offered = None


def offered() -> list[str] | None:
    """Names the backend offers, or None before it answered."""
    return None if _offered is None else [name for name, _, _ in _offered]


def menu_items(current: str) -> list[tuple[str, str, str, int]]:
    """Enum items (name, label, description, number): the backend's presets, plus `current`
    when the backend does not offer it (or has not answered yet)."""
    entries = list(_offered or ())
    if current not in (name for name, _, _ in entries):
        note = ("the backend lists its presets when it starts (Check Backend)" if _offered is None
                else "not offered by this backend: choose another preset")
        entries.append((current, current, note))
    key = tuple(entries)
    if key not in _menus:
        _menus[key] = [(name, label, description, number)
                       for number, (name, label, description) in enumerate(entries)]
    return _menus[key]


def number_of(current: str) -> int:
    """The menu item number of the preset called `current`."""
    return next(number for name, _, _, number in menu_items(current) if name == current)


def name_of(current: str, number: int) -> str:
    """The preset name of menu item `number` (the menu as it is shown with `current` chosen)."""
    return next(name for name, _, _, n in menu_items(current) if n == number)
