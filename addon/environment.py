"""The backend's private environment: where it lives, what the add-on bundles, the running setup.

The extension zip carries the gdyn backend as a wheel (`backend/gdyn-<version>-py3-none-any.whl`,
put there by build_addon.py, the add-on's own version). Set Up Backend makes a
venv with torch and that wheel in the extension's user folder (a
`backend_setup.Setup`, polled by a `bpy.app.timers` function, in background
mode by a script calling `poll()`), kept across add-on updates; Update
Backend makes it again from the wheel of the updated add-on.
"""

from __future__ import annotations

import os
import shutil
import sys
import tomllib
from pathlib import Path
from typing import Callable

import bpy

from .backend_client import BackendError
from .backend_setup import NEEDED_PYTHON, PYTHON_CHOICE, Setup, read_marker, venv_python

POLL_INTERVAL_S = 0.2
ADDON_VERSION = tomllib.loads(Path(__file__).with_name("blender_manifest.toml").read_text(encoding="utf-8"))["version"]
_setup: Setup | None = None
_on_done: Callable[[Setup], object] | None = None


def bundled_wheel() -> Path | None:
    """The gdyn wheel inside the installed extension, or None (an add-on run from a checkout)."""
    return next(iter(sorted(Path(__file__).parent.glob("backend/gdyn-*.whl"))), None)


def user_folder(create: bool = False) -> Path:
    """The extension's user folder for the environment (kept when the add-on is updated)."""
    if __package__.startswith("bl_ext."):
        return Path(bpy.utils.extension_path_user(__package__, path="backend", create=create))
    return Path(bpy.utils.user_resource("DATAFILES", path="gdyn", create=create))  # a legacy add-on


def private_python() -> Path:
    """The python of the private environment (it may not exist yet)."""
    return venv_python(user_folder() / "env")


def is_private_python(python: str) -> bool:
    """True when `python` is the private environment's."""
    return bool(python) and os.path.normpath(python) == os.path.normpath(private_python())


def installed() -> dict | None:
    """What Set Up Backend installed in the private environment ({"gdyn", ...}), or None."""
    return read_marker(user_folder() / "env")


def needs_update() -> bool:
    """The private environment holds another gdyn than the one bundled with this add-on."""
    record = installed()
    return record is not None and record.get("gdyn") != ADDON_VERSION


def find_python(choice: str = "") -> str:
    """The Python 3.11 to make the environment from: `choice` (the Setup Python preference), else
    Blender's own Python when it is 3.11, else python3.11 on the PATH; BackendError naming the fix."""
    if choice:
        return bpy.path.abspath(choice)
    if sys.version_info[:2] == NEEDED_PYTHON:
        return sys.executable
    found = shutil.which("python3.11")
    if found:
        return found
    raise BackendError(f"no Python 3.11 found (Blender's own is {sys.version_info[0]}.{sys.version_info[1]}): "
                       f"install Python 3.11 and choose its python under {PYTHON_CHOICE}")


def running() -> Setup | None:
    """The setup in progress, or None."""
    return _setup if _setup is not None and not _setup.finished else None


def start(choice: str, on_done: Callable[[Setup], object] | None = None) -> Setup:
    """Start making the private environment (returns at once); `on_done(setup)` runs in `poll`
    when it has finished. BackendError when it cannot start."""
    global _setup, _on_done
    if running() is not None:
        raise BackendError("the backend is already being set up: wait for it or cancel it")
    wheel = bundled_wheel()
    if wheel is None:
        raise BackendError("this add-on carries no gdyn backend (it was not installed from the zip that "
                           "build_addon.py makes): install that zip, or set Backend Python by hand")
    _setup = Setup(find_python(choice), user_folder(create=True), wheel)
    _on_done = on_done
    if not bpy.app.timers.is_registered(_timer):
        bpy.app.timers.register(_timer, first_interval=POLL_INTERVAL_S, persistent=True)
    return _setup


def poll() -> None:
    """Advance the running setup; runs its on_done once it has finished."""
    global _on_done
    if _setup is not None and _setup.poll() and _on_done is not None:
        on_done, _on_done = _on_done, None
        on_done(_setup)


def _timer():
    poll()
    return POLL_INTERVAL_S if running() is not None else None


def shutdown() -> None:
    """Cancel a running setup (add-on disabled); it removes what it made in its own thread."""
    if running() is not None:
        _setup.cancel()
    if bpy.app.timers.is_registered(_timer):
        bpy.app.timers.unregister(_timer)
