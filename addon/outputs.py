"""Where jobs write: output folder names that are never reused.

Animate and Simulate write `<output_dir>/<photo>_<kind>_NNN/`; Export Loop
writes `<export_path>[_NNN]/` plus `<same name>.mp4|.gif`. A name is free
when nothing exists there and no running job has claimed it, so two quick
jobs never get the same folder. Blender '//' paths of an unsaved file go to
the system temp folder.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Callable

import bpy

_claimed: set[str] = set()  # output paths of running jobs


def claim(*paths) -> Callable[[], None]:
    """Mark the given paths (None is skipped) taken until the returned release() is called."""
    taken = {str(path) for path in paths if path}
    _claimed.update(taken)
    return lambda: _claimed.difference_update(taken)


def _free(path: Path) -> bool:
    return not path.exists() and str(path) not in _claimed


def resolve_path(path: str) -> Path:
    """A Blender path as a file system path; '//' paths of an unsaved file go to the temp folder."""
    if path.startswith("//") and not bpy.data.filepath:
        return Path(tempfile.gettempdir()) / "gdyn" / path[2:]
    return Path(bpy.path.abspath(path))


def unsaved_warning(path: str) -> str | None:
    """A line when output `path` (a Blender path) goes to the temp folder because the file is not
    saved, else None. (After a later save, the nodes would point into the temp folder.)"""
    if bpy.data.filepath or not path.startswith("//"):
        return None
    return (f"this file is not saved, so GDyn writes to {resolve_path(path)}: "
            "save the .blend first to keep the outputs beside it")


def new_output_dir(scene, image_name: str, kind: str) -> Path:
    """A fresh folder `<photo stem>_<kind>_NNN` under the scene's output folder."""
    folder = resolve_path(scene.gdyn.output_dir or "//gdyn/")
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(image_name).stem) or "image"
    n = 1
    while not _free(folder / f"{stem}_{kind}_{n:03d}"):
        n += 1
    return folder / f"{stem}_{kind}_{n:03d}"


def export_target(scene) -> tuple[Path, str | None]:
    """(output folder, video file or None) for Export Loop; never an existing path."""
    s = scene.gdyn
    base = resolve_path(s.export_path or "//gdyn_loop")
    suffix = {"MP4": ".mp4", "GIF": ".gif"}.get(s.export_format)
    n, stem = 0, base.name
    while True:
        name = stem if n == 0 else f"{stem}_{n:03d}"
        folder = base.with_name(name)
        video = folder.with_suffix(suffix) if suffix else None
        if _free(folder) and (video is None or _free(video)):
            return folder, (str(video) if video else None)
        n += 1
