"""The editable motion mask: Edit Motion Mask, and the mask file every request sends.

**Edit Motion Mask** asks the backend (`mask`, the `gdyn mask` analysis) for
the photo's automatic what-moves map, loads it as an image (Non-Color, so a
painted grey means what it says: white moves, black stays, grey scales),
makes it the scene's Mask and puts the Image Editor in Paint mode on it.

`mask_file` is what Animate, Simulate and live sessions send as `mask`: the
image's file, or, when it has unsaved paint (or no file), a copy of its
current pixels written to a fresh temporary PNG, so the next request uses
what the artist sees.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import bpy

from . import outputs, params, session
from .backend_client import BackendError, Job

MASK_COLORSPACE = "Non-Color"


def mask_file(image) -> Path:
    """The file to send for mask `image`: its own file when saved, else a copy of its pixels."""
    if not image.is_dirty:
        try:
            return params.image_path(image)
        except BackendError:  # never saved: send its pixels
            pass
    folder = Path(tempfile.gettempdir()) / "gdyn_masks"
    folder.mkdir(exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f"{image.name}_", suffix=".png", dir=folder)  # a fresh name
    os.close(handle)
    image.save(filepath=name, save_copy=True)  # whole before its name is sent anywhere
    return Path(name)


def new_mask_path(scene, photo_name: str) -> Path:
    """A free `<photo stem>_mask_NNN.png` in the scene's output folder (never an existing file)."""
    folder = outputs.resolve_path(scene.gdyn.output_dir or "//gdyn/")
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(photo_name).stem) or "image"
    n = 1
    while (folder / f"{stem}_mask_{n:03d}.png").exists():
        n += 1
    return folder / f"{stem}_mask_{n:03d}.png"


def show_for_painting(context, photo, image) -> None:
    """Image Editors showing `photo` (all of them when none does) show `image` in Paint mode."""
    editors = [area for window in context.window_manager.windows for area in window.screen.areas
               if area.type == "IMAGE_EDITOR"]
    showing = [area for area in editors if area.spaces.active.image == photo]
    for area in showing or editors:
        area.spaces.active.image = image
        area.spaces.active.ui_mode = "PAINT"
        area.tag_redraw()


def start_edit_mask(scene, photo, on_ready=None) -> Job:
    """Ask the backend for the what-moves map of `photo` (a bpy Image); when it is written, load
    it as the scene's Mask and return the image as the job's outcome (then `on_ready(image)`)."""
    photo_file = params.image_path(photo)
    output = new_mask_path(scene, photo.name)
    scene_name = scene.name

    def done(job: Job):
        scene_now = bpy.data.scenes.get(scene_name)
        if job.error is not None or scene_now is None:
            return None
        image = bpy.data.images.load(job.result["output"], check_existing=False)
        image.name = f"{Path(photo.name).stem} motion mask"
        image.colorspace_settings.name = MASK_COLORSPACE
        scene_now.gdyn.mask = image
        if on_ready is not None:
            on_ready(image)
        return image

    request = {"image": str(photo_file), "output": str(output), "preset": scene.gdyn.preset_name}
    return session.request("mask", request, on_done=done)


class GDYN_OT_edit_mask(bpy.types.Operator):
    """Make the photo's automatic motion mask (white moves, black stays) and paint on it"""

    bl_idname = "gdyn.edit_mask"
    bl_label = "Edit Motion Mask"

    def execute(self, context):
        from .operators import source_image  # operators -> jobs -> params -> this module

        photo = source_image(context)
        try:
            start_edit_mask(context.scene, photo, on_ready=lambda image: show_for_painting(bpy.context, photo, image))
        except BackendError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, "GDyn: making the motion mask; paint black where nothing may move")
        return {"FINISHED"}


CLASSES = (GDYN_OT_edit_mask,)
