"""The GDyn tab in the Image Editor's sidebar (N panel)."""

from __future__ import annotations

import bpy

from . import params, session


class _GDynTab:
    """Panels of the GDyn tab in the Image Editor's sidebar."""

    bl_space_type = "IMAGE_EDITOR"
    bl_region_type = "UI"
    bl_category = "GDyn"


class _GDynSubpanel(_GDynTab):
    bl_parent_id = "GDYN_PT_main"


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
        col.prop(s, "use_sequencer")
        layout.operator("gdyn.animate", icon="PLAY")
        if session.busy():
            layout.label(text="Backend busy (Esc in the editor cancels)", icon="SORTTIME")


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
        for index, poke in enumerate(s.pokes):
            box = layout.box()
            row = box.row(align=True)
            row.prop(poke, "enabled", text="")
            row.prop(poke, "name", text="")
            row.prop(poke, "kind", text="")
            row.operator("gdyn.remove_poke", text="", icon="X").index = index
            row = box.row(align=True)
            row.prop(poke, "frame")
            row.prop(poke, "duration")
            box.row(align=True).prop(poke, "location")
            box.row(align=True).prop(poke, "force")
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


CLASSES = (GDYN_PT_main, GDYN_PT_pokes, GDYN_PT_export)
