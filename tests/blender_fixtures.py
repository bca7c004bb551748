"""Fixtures and helpers of the Blender tests (a pytest plugin loaded by conftest.py).

`gdyn` enables the add-on in the real `bpy` module with the project's interpreter as its
backend; `finish` and `wait_idle` poll the add-on's one poller with a deadline; `fresh_scene`
makes a scene of a known size and frame range. bpy is imported only when a fixture runs, so
the rest of the suite never loads Blender.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from backend_side import BACKEND_PYTHON

FRAMES = 6  # frames of a `fresh_scene`


@pytest.fixture(scope="module")
def gdyn():
    """The add-on package (real bpy), enabled like a user would, with the project's interpreter
    as backend; disabled again after the module's tests."""
    bpy = pytest.importorskip("bpy")
    import addon_utils  # ships with bpy

    module = addon_utils.enable("addon", default_set=True, handle_error=None)
    bpy.context.preferences.addons["addon"].preferences.backend_python = BACKEND_PYTHON
    yield module
    addon_utils.disable("addon", default_set=True)
    assert not hasattr(bpy.types.Scene, "gdyn")


@pytest.fixture(scope="module")
def finish(gdyn, poll_until):
    """finish(job, timeout=120): poll the add-on's one poller until the job is over; the job."""

    def finished(job, timeout: float = 120.0):
        poll_until(gdyn.session.poll, lambda: job.finished, timeout, f"the end of {job.method}")
        return job

    return finished


@pytest.fixture(scope="module")
def wait_idle(gdyn, poll_until):
    """wait_idle(): poll as a script does until the add-on's backend has nothing pending."""
    return lambda: poll_until(gdyn.session.poll, lambda: not gdyn.session.busy(), what="an idle backend")


def fresh_scene(tmp_path: Path, width: int, height: int, name: str, active: bool = False):
    """A new scene; `active` makes it the context scene of a fresh empty file (the one
    `frame_set` + render evaluate image sequences for, as the user's scene in the UI)."""
    import bpy

    if active:
        bpy.ops.wm.read_homefile(use_empty=True)
        scene = bpy.context.scene
        scene.name = name
    else:
        scene = bpy.data.scenes.new(name)
    scene.frame_start, scene.frame_end = 1, FRAMES
    scene.render.fps, scene.render.fps_base = 24, 1.0
    scene.render.resolution_x, scene.render.resolution_y = width, height
    scene.render.resolution_percentage = 100
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.look = "None"
    scene.gdyn.output_dir = str(tmp_path / "outputs")
    return scene
