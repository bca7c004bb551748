"""The GDyn tab in the Image Editor's sidebar (N panel), the pokes list, and the preferences."""

from __future__ import annotations

import bpy

from . import environment, outputs, params, session
from .operators import progress_text


class _GDynTab:
    """Panels of the GDyn tab in the Image Editor's sidebar."""

    bl_space_type = "IMAGE_EDITOR"
    bl_region_type = "UI"
    bl_category = "GDyn"


class _GDynSubpanel(_GDynTab):
    bl_parent_id = "GDYN_PT_main"


def draw_busy(layout) -> None:
    """While a job or the set-up runs: its progress and a Cancel button."""
    setup = environment.running()
    if setup is not None:
        layout.label(text=progress_text("Set Up Backend", setup), icon="SORTTIME")
        layout.operator("gdyn.cancel_setup", icon="CANCEL")
    elif session.busy():
        jobs = session.pending()
        text = progress_text(jobs[0].method.capitalize(), jobs[0]) if jobs else "GDyn: starting the backend"
        row = layout.row(align=True)
        row.label(text=text, icon="SORTTIME")
        row.operator("gdyn.cancel_jobs", text="", icon="CANCEL")


class GDYN_PT_main(_GDynTab, bpy.types.Panel):
    bl_idname = "GDYN_PT_main"
    bl_label = "Generative Image Dynamics"

    def draw(self, context):
        s = context.scene.gdyn
        layout = self.layout
        col = layout.column(align=True)
        col.prop(s, "source")
        if s.source == "procedural":
            col.prop(s, "preset")
        elif s.source == "motion":
            col.prop(s, "motion_file")
        else:
            col.prop(s, "checkpoint")
        col.prop_search(s, "mask", bpy.data, "images")
        col.operator("gdyn.edit_mask", icon="BRUSH_DATA")

        col = layout.column(align=True)
        col.prop(s, "use_scene_range")
        if s.use_scene_range:
            frames, fps = params.frames_and_fps(context.scene)
            col.label(text=f"{frames} frames at {fps:g} fps (scene)")
        else:
            row = col.row(align=True)
            row.prop(s, "frames")
            row.prop(s, "fps")
        col.prop(s, "loop")
        row = col.row(align=True)
        row.prop(s, "amplitude")
        row.prop(s, "speed")
        col.prop(s, "seed")
        col = layout.column(align=True)
        col.prop(s, "output_dir")
        unsaved = outputs.unsaved_warning(s.output_dir)
        if unsaved:
            col.label(text="Unsaved file: outputs go to the temp folder", icon="ERROR")
        col.prop(s, "use_sequencer")
        col.prop(s, "match_photo")
        layout.operator("gdyn.animate", icon="PLAY")
        draw_busy(layout)


class GDYN_UL_pokes(bpy.types.UIList):
    """The scene's pokes: on/off, name, kind and first frame; the active one is edited below."""

    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index=0):
        row = layout.row(align=True)
        row.prop(item, "enabled", text="")
        row.prop(item, "name", text="", emboss=False,
                 icon="FORCE_FORCE" if item.kind == "FORCE" else "RESTRICT_SELECT_OFF")
        row.label(text=f"frame {item.frame}")


class GDYN_PT_pokes(_GDynSubpanel, bpy.types.Panel):
    bl_label = "Pokes and Simulate"

    def draw(self, context):
        s = context.scene.gdyn
        layout = self.layout
        row = layout.row(align=True)
        row.operator("gdyn.add_poke", icon="ADD")
        row.operator("gdyn.drag_poke", icon="RESTRICT_SELECT_OFF")
        row = layout.row(align=True)
        row.operator("gdyn.live_drag", icon="HAND")
        row.operator("gdyn.bake_gesture", icon="KEYFRAME")
        row = layout.row()
        row.template_list("GDYN_UL_pokes", "", s, "pokes", s, "active_poke", rows=3)
        row.operator("gdyn.remove_poke", text="", icon="REMOVE")
        if 0 <= s.active_poke < len(s.pokes):
            poke = s.pokes[s.active_poke]
            col = layout.column(align=True)
            col.prop(poke, "kind")
            row = col.row(align=True)
            row.prop(poke, "frame")
            row.prop(poke, "duration")
            col.prop(poke, "location")
            col.prop(poke, "force")
        col = layout.column(align=True)
        col.prop(s, "damping")
        col.prop(s, "drag_hold")
        layout.operator("gdyn.simulate", icon="FORCE_FORCE")


class GDYN_PT_export(_GDynSubpanel, bpy.types.Panel):
    bl_label = "Export Loop"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        s = context.scene.gdyn
        self.layout.prop(s, "export_format")
        self.layout.prop(s, "export_path")
        self.layout.operator("gdyn.export_loop", icon="EXPORT")


def draw_preferences(layout, prefs) -> None:
    """The add-on's preferences: the private backend (set up, update, progress), the pythons."""
    box = layout.box()
    if environment.running() is not None:
        draw_busy(box)
    else:
        record = environment.installed()
        if record is None:
            box.operator("gdyn.setup_backend", icon="IMPORT")
            if environment.bundled_wheel() is None:
                box.label(text="This add-on carries no backend: install the zip that build_addon.py makes, "
                               "or set Backend Python", icon="ERROR")
            else:
                box.label(text=f"Makes a private Python 3.11 environment with torch and gdyn "
                               f"{environment.ADDON_VERSION} (about 2 GB, a few minutes)")
        elif environment.needs_update():
            box.label(text=f"The add-on is {environment.ADDON_VERSION} but its backend has gdyn {record.get('gdyn')}",
                      icon="ERROR")
            box.operator("gdyn.update_backend", icon="FILE_REFRESH")
        else:
            box.label(text=f"Private backend: gdyn {record.get('gdyn')}", icon="CHECKMARK")
            box.operator("gdyn.setup_backend", text="Set Up Again", icon="FILE_REFRESH")
    box.prop(prefs, "setup_python")
    col = layout.column()
    col.prop(prefs, "backend_python")
    col.operator("gdyn.check_backend")
    note = session.version_note()
    if note:
        col.label(text=note, icon="ERROR")


CLASSES = (GDYN_UL_pokes, GDYN_PT_main, GDYN_PT_pokes, GDYN_PT_export)
