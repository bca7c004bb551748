"""Add-on state: scene settings (`scene.gdyn`), pokes, and add-on preferences.

Units: poke positions are pixels of the still (x right, y down, origin at the
top-left corner, as in `gdyn simulate`); forces are pixels of displacement
direction times strength; frames are scene frames.

Path properties take Blender's '//' (relative to the .blend) prefix; from
Blender 4.5 they say so (PATH_SUPPORTS_BLEND_RELATIVE, which 4.2-4.4 do not
know), else 4.5+ warns on every '//' value.
"""

from __future__ import annotations

import os

import bpy
from bpy.props import (BoolProperty, CollectionProperty, EnumProperty, FloatProperty,
                       FloatVectorProperty, IntProperty, PointerProperty, StringProperty)

from . import presets

PATH_OPTIONS = {"ANIMATABLE", "PATH_SUPPORTS_BLEND_RELATIVE"} if bpy.app.version >= (4, 5, 0) else {"ANIMATABLE"}


def _preset_items(self, context):
    return presets.menu_items(self.preset_name)


def _get_preset(self) -> int:
    return presets.number_of(self.preset_name)


def _set_preset(self, number: int) -> None:
    self.preset_name = presets.name_of(self.preset_name, number)


class GDynPoke(bpy.types.PropertyGroup):
    """One force on the photo; every number is keyframeable (a moving or pulsing poke)."""

    kind: EnumProperty(name="Kind", items=[
        ("FORCE", "Force", "A push applied for `duration` frames"),
        ("DRAG", "Drag", "Hold the point displaced by `force` pixels, then release it to ring down"),
    ], default="FORCE")
    frame: IntProperty(name="Frame", description="Scene frame where the poke starts", default=1)
    duration: IntProperty(name="Duration", description="Frames the poke lasts", default=1, min=1)
    location: FloatVectorProperty(name="Point", size=2, subtype="XYZ", default=(0.0, 0.0),
                                  description="Pixel of the still (x right, y down)")
    force: FloatVectorProperty(name="Force", size=2, subtype="XYZ", default=(4.0, 0.0),
                               description="Direction times strength, pixels (x right, y down)")
    enabled: BoolProperty(name="Enabled", default=True)


class GDynSettings(bpy.types.PropertyGroup):
    source: EnumProperty(name="Motion", items=[
        ("procedural", "Procedural", "Physically shaped motion prior; needs no trained weights"),
        ("motion", "Motion File", "A spectral volume (.safetensors) from gdyn extract/sample"),
        ("model", "Model", "The trained motion model (needs a checkpoint)"),
    ], default="procedural")
    preset_name: StringProperty(name="Preset Name", default=presets.DEFAULT_PRESET,
                                description="The procedural preset, by name (what the file stores)")
    preset: EnumProperty(name="Preset", items=_preset_items, get=_get_preset, set=_set_preset,
                         description="Named motion settings offered by the backend")
    motion_file: StringProperty(name="Motion File", subtype="FILE_PATH", options=PATH_OPTIONS)
    checkpoint: StringProperty(name="Checkpoint", subtype="FILE_PATH", options=PATH_OPTIONS)
    use_scene_range: BoolProperty(name="Scene Frames and FPS", default=True,
                                  description="Use the scene's frame range and frame rate")
    frames: IntProperty(name="Frames", default=150, min=2, max=100000)
    fps: FloatProperty(name="FPS", default=30.0, min=1.0, max=1000.0)
    loop: BoolProperty(name="Loop", default=True, description="Last frame flows into the first")
    amplitude: FloatProperty(name="Amplitude", default=1.0, min=0.0, soft_max=5.0,
                             description="Scale of the motion (1 = as generated)")
    speed: FloatProperty(name="Speed", default=1.0, min=0.01, soft_max=5.0,
                         description="Tempo of the motion (2 = twice as fast)")
    seed: IntProperty(name="Seed", default=0, min=0)
    mask: PointerProperty(name="Mask", type=bpy.types.Image,
                          description="White moves, black is pinned (an image saved on disk)")
    output_dir: StringProperty(name="Output", subtype="DIR_PATH", default="//gdyn/", options=PATH_OPTIONS,
                               description="Folder for animation outputs; each run makes a new subfolder")
    match_photo: BoolProperty(name="Match Photo", default=True,
                              description="When GDyn wires the compositor, set the view transform to Standard and "
                                          "the render size to the photo's, so the render is the photo's frames "
                                          "as they are (each change is reported; Ctrl+Z undoes)")
    use_sequencer: BoolProperty(name="Sequencer Strip", default=False,
                                description="Also add the frames as an image strip in the Sequencer")
    damping: FloatProperty(name="Damping", default=0.05, min=0.0, max=1.0,
                           description="Damping ratio of the modes at and above 3 Hz for Simulate and "
                                       "Live Drag; slower modes decay at that rate")
    drag_hold: IntProperty(name="Drag Hold", default=12, min=1,
                           description="Frames a dragged point is held before it is released")
    photo: PointerProperty(name="Photo", type=bpy.types.Image,
                           description="The photo last animated (used when no Image Editor shows one)")
    pokes: CollectionProperty(type=GDynPoke)
    active_poke: IntProperty(name="Active Poke", default=0)
    last_output: StringProperty(name="Last Output", subtype="DIR_PATH", options=PATH_OPTIONS,
                                description="Output folder of the last Animate or Simulate")
    export_format: EnumProperty(name="Format", items=[
        ("MP4", "MP4", "H.264 video"), ("GIF", "GIF", "Animated GIF"),
        ("PNG", "PNG Frames", "A folder of PNG frames and EXR displacement maps"),
    ], default="MP4")
    export_path: StringProperty(name="Export To", subtype="FILE_PATH", default="//gdyn_loop", options=PATH_OPTIONS)


class GDynPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    backend_python: StringProperty(
        name="Backend Python", subtype="FILE_PATH", options=PATH_OPTIONS,
        description="Python of an environment with gdyn installed (Set Up Backend fills it in), "
                    "e.g. /path/to/gdyn/.venv/bin/python")
    setup_python: StringProperty(
        name="Setup Python", subtype="FILE_PATH", options=PATH_OPTIONS,
        description="A Python 3.11 for Set Up Backend to make the environment from (empty: Blender's own "
                    "Python when it is 3.11, else python3.11 on the PATH)")

    def draw(self, context):
        from .panels import draw_preferences  # the UI module (it imports the session, which imports this)

        draw_preferences(self.layout, self)


def preferences(context):
    """The add-on's preferences (`GDynPreferences`), or None when the add-on is not enabled."""
    addon = context.preferences.addons.get(__package__)
    return addon.preferences if addon is not None else None


def backend_python(context) -> str:
    """The backend interpreter: the preference, else $GDYN_PYTHON, else ''."""
    prefs = preferences(context)
    path = prefs.backend_python if prefs is not None else ""
    return bpy.path.abspath(path) if path else os.environ.get("GDYN_PYTHON", "")


CLASSES = (GDynPoke, GDynSettings, GDynPreferences)


def register():
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.gdyn = PointerProperty(type=GDynSettings)


def unregister():
    del bpy.types.Scene.gdyn
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
