"""Operators: Animate, Simulate, Export Loop (backend jobs), pokes, drag in the Image Editor.

The job operators are modal only to show progress and catch Esc: the job
itself is started by the functions in `jobs` and finished by `session.poll`
(a `bpy.app.timers` function, the one poller), so Blender never waits on the
backend; the operators only read their job's state. Failures
are reported with `self.report({'ERROR'}, ...)`; the user's scene is only
changed after a job succeeds, and only by adding or replacing "GDyn" nodes.
"""

from __future__ import annotations

import bpy
from bpy.props import IntProperty, StringProperty

from . import compositor, jobs, session
from .backend_client import PROTOCOL_VERSION, BackendError


def active_image(context):
    """The image of the Image Editor the operator runs in, else of the first one on screen."""
    space = context.space_data
    if space is not None and space.type == "IMAGE_EDITOR" and space.image is not None:
        return space.image
    screen = context.screen
    for area in (screen.areas if screen else ()):
        if area.type == "IMAGE_EDITOR" and area.spaces.active.image is not None:
            return area.spaces.active.image
    return None


def source_image(context, name: str = ""):
    """The photo to work on: the image called `name`; else the Image Editor's image (or,
    when that is a gdyn output sequence, the photo it was made from); else the scene's
    last photo (`scene.gdyn.photo`)."""
    if name:
        image = bpy.data.images.get(name)
        if image is None:
            raise BackendError(f"there is no image called {name!r}")
        return image
    image = active_image(context)
    stored = image.get("gdyn_source") if image is not None else None
    if stored:
        return bpy.data.images.get(stored) or image
    return image or context.scene.gdyn.photo


def _require_image(context, name: str):
    image = source_image(context, name)
    if image is None:
        raise BackendError("open a photo in the Image Editor first")
    context.scene.gdyn.photo = image
    return image


class _JobOperator:
    """Start a backend job, show its progress in the status bar, Esc cancels."""

    _job = None
    _timer = None  # a window timer: its events let modal() show progress (session.poll dispatches)
    verb = "Working"

    image: StringProperty(name="Image", description="Name of the image to use "
                          "(default: the one shown in the Image Editor)")

    def start(self, context):
        raise NotImplementedError

    def finished(self, context, job) -> None:
        """Called with a successful job before the operator ends."""

    def invoke(self, context, event):
        try:
            self._job = self.start(context)
        except BackendError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        wm = context.window_manager
        self._timer = wm.event_timer_add(session.POLL_INTERVAL_S, window=context.window)
        wm.progress_begin(0, 1000)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        """Without a window (scripts): start the job; the timer finishes it."""
        try:
            self._job = self.start(context)
        except BackendError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        return {"FINISHED"}

    def _end(self, context) -> None:
        wm = context.window_manager
        wm.progress_end()
        if self._timer is not None:
            wm.event_timer_remove(self._timer)
        if context.workspace is not None:
            context.workspace.status_text_set(None)

    def modal(self, context, event):
        job = self._job
        if event.type == "ESC" and event.value == "PRESS":
            job.cancel()
            return {"RUNNING_MODAL"}
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        if not job.finished:
            context.window_manager.progress_update(int(job.fraction * 1000))
            if context.workspace is not None:
                context.workspace.status_text_set(
                    f"GDyn {self.verb}: {job.stage} {job.done_units}/{job.total_units}  (Esc cancels)")
            return {"RUNNING_MODAL"}
        self._end(context)
        if job.error == "cancelled":
            self.report({"WARNING"}, f"GDyn: {self.verb} cancelled; nothing was written")
            return {"CANCELLED"}
        if job.error is not None:
            self.report({"ERROR"}, f"GDyn: {job.error}")
            return {"CANCELLED"}
        self.finished(context, job)
        return {"FINISHED"}


def show_in_image_editors(context, source, wiring: compositor.Wiring, cyclic: bool) -> None:
    """Image Editors showing the photo (or an older output of it) switch to the new frames,
    which then play with the timeline."""
    frames_image = wiring.frames
    frames_image["gdyn_source"] = source.name
    for window in context.window_manager.windows:
        for area in window.screen.areas:
            if area.type != "IMAGE_EDITOR":
                continue
            space = area.spaces.active
            shown = space.image
            if shown is not None and shown != source and shown.get("gdyn_source") != source.name:
                continue
            space.image = frames_image
            user = space.image_user
            user.frame_duration, user.frame_start = wiring.count, context.scene.frame_start
            user.frame_offset = compositor.sequence_offset(frames_image)
            user.use_cyclic, user.use_auto_refresh = cyclic, True
            area.tag_redraw()


class _WiresFrames(_JobOperator):
    """A job whose output is wired into the scene and shown in the Image Editors."""

    begin = None  # staticmethod(jobs.start_animate or jobs.start_simulate)

    def start(self, context):
        self._source = _require_image(context, self.image)
        return self.begin(context.scene, self._source)

    def finished(self, context, job):
        if job.outcome is not None:
            cyclic = job.method == "animate" and context.scene.gdyn.loop
            show_in_image_editors(context, self._source, job.outcome, cyclic)
        self.report({"INFO"}, f"GDyn: {self.verb} done: {job.result['output']} "
                             f"(motion source: {job.result.get('source', 'unknown')})")


class GDYN_OT_animate(_WiresFrames, bpy.types.Operator):
    """Animate the photo in the Image Editor; frames and displacement maps go into the compositor"""

    bl_idname = "gdyn.animate"
    bl_label = verb = "Animate"
    begin = staticmethod(jobs.start_animate)


class GDYN_OT_simulate(_WiresFrames, bpy.types.Operator):
    """Let the photo respond to the pokes like a physical object (modal dynamics)"""

    bl_idname = "gdyn.simulate"
    bl_label = verb = "Simulate"
    begin = staticmethod(jobs.start_simulate)


class GDYN_OT_export_loop(_JobOperator, bpy.types.Operator):
    """Write a seamless loop of the photo (MP4, GIF or PNG frames) as a background plate"""

    bl_idname = "gdyn.export_loop"
    bl_label = "Export Loop"
    verb = "Export"

    def start(self, context):
        return jobs.start_export(context.scene, _require_image(context, self.image))

    def finished(self, context, job):
        result = job.result
        self.report({"INFO"}, f"GDyn: loop written to {result.get('video') or result['output']}")


class GDYN_OT_check_backend(_JobOperator, bpy.types.Operator):
    """Start the backend, check its protocol, list its presets; report its versions and device"""

    bl_idname = "gdyn.check_backend"
    bl_label = "Check Backend"
    verb = "Check"

    def start(self, context):
        return session.request("info", {})

    def finished(self, context, job):
        info = job.result
        self.report({"INFO"}, f"GDyn backend: gdyn {info.get('gdyn')} (protocol {PROTOCOL_VERSION}), "
                              f"torch {info.get('torch')}, device {info.get('device')}, "
                              f"python {info.get('python')}")


def _image_size(context) -> tuple[int, int]:
    image = source_image(context)
    return tuple(image.size) if image is not None and image.size[0] else (512, 512)


class GDYN_OT_add_poke(bpy.types.Operator):
    """Add a poke at the current frame in the middle of the photo (its values can be keyframed)"""

    bl_idname = "gdyn.add_poke"
    bl_label = "Add Poke"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        settings = context.scene.gdyn
        poke = settings.pokes.add()
        poke.name = f"Poke {len(settings.pokes)}"
        width, height = _image_size(context)
        poke.frame = context.scene.frame_current
        poke.location = (width / 2, height / 2)
        settings.active_poke = len(settings.pokes) - 1
        return {"FINISHED"}


class GDYN_OT_remove_poke(bpy.types.Operator):
    """Remove a poke"""

    bl_idname = "gdyn.remove_poke"
    bl_label = "Remove Poke"
    bl_options = {"REGISTER", "UNDO"}

    index: IntProperty(default=-1)

    def execute(self, context):
        settings = context.scene.gdyn
        index = self.index if self.index >= 0 else settings.active_poke
        if not 0 <= index < len(settings.pokes):
            return {"CANCELLED"}
        settings.pokes.remove(index)
        settings.active_poke = max(0, min(settings.active_poke, len(settings.pokes) - 1))
        return {"FINISHED"}


def region_to_pixel(region, image_size, mouse_x: int, mouse_y: int) -> tuple[float, float]:
    """Image Editor region coordinates -> still pixels (x right, y down from the top-left)."""
    u, v = region.view2d.region_to_view(mouse_x, mouse_y)
    width, height = image_size
    return u * width, (1.0 - v) * height


class GDYN_OT_drag_poke(bpy.types.Operator):
    """Drag a point of the photo and release it: adds a Drag poke at the current frame"""

    bl_idname = "gdyn.drag_poke"
    bl_label = "Drag Point"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return (context.area is not None and context.area.type == "IMAGE_EDITOR"
                and active_image(context) is not None)

    def invoke(self, context, event):
        self._start = None
        context.window_manager.modal_handler_add(self)
        context.area.header_text_set("GDyn: press and drag a point of the photo, release to let go "
                                     "(Esc cancels)")
        return {"RUNNING_MODAL"}

    def _pixel(self, context, event):
        return region_to_pixel(context.region, _image_size(context),
                               event.mouse_region_x, event.mouse_region_y)

    def modal(self, context, event):
        if event.type in {"ESC", "RIGHTMOUSE"}:
            context.area.header_text_set(None)
            return {"CANCELLED"}
        if event.type == "LEFTMOUSE" and event.value == "PRESS":
            self._start = self._pixel(context, event)
        elif event.type == "MOUSEMOVE" and self._start is not None:
            x, y = self._pixel(context, event)
            context.area.header_text_set(f"GDyn drag: ({self._start[0]:.0f}, {self._start[1]:.0f}) "
                                         f"by ({x - self._start[0]:+.1f}, {y - self._start[1]:+.1f}) px")
        elif event.type == "LEFTMOUSE" and event.value == "RELEASE" and self._start is not None:
            x, y = self._pixel(context, event)
            settings = context.scene.gdyn
            poke = settings.pokes.add()
            poke.name = f"Drag {len(settings.pokes)}"
            poke.kind = "DRAG"
            poke.frame = context.scene.frame_current
            poke.duration = settings.drag_hold
            poke.location = self._start
            poke.force = (x - self._start[0], y - self._start[1])
            settings.active_poke = len(settings.pokes) - 1
            context.area.header_text_set(None)
            return {"FINISHED"}
        return {"RUNNING_MODAL"}


CLASSES = (GDYN_OT_animate, GDYN_OT_simulate, GDYN_OT_export_loop, GDYN_OT_check_backend, GDYN_OT_add_poke,
           GDYN_OT_remove_poke, GDYN_OT_drag_poke)
