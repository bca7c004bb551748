"""Operators: Animate, Simulate, Export Loop (backend jobs), pokes, drag in the Image Editor,
and the backend's set-up.

The job operators are modal only to show progress and catch Esc: the job
itself is started by the functions in `jobs` and finished by `session.poll`
(a `bpy.app.timers` function, the one poller), so Blender never waits on the
backend; the operators only read their job's state. Esc cancels only when
the mouse is over the editor the job was started from and no playback runs
(else it is Blender's); the GDyn tab's Cancel button always does. While a
job or the set-up runs, the job buttons are greyed (`poll`). Failures are
reported with `self.report({'ERROR'}, ...)`; the user's scene is only
changed after a job succeeds (one undo step, see `jobs`).

The operators' logic lives in mixin classes (`_JobOperator`, `_DragPoint`)
that tests drive with stand-in events and regions; the registered classes
add `bpy.types.Operator`.
"""

from __future__ import annotations

import math
import sys

import bpy
from bpy.props import IntProperty, StringProperty

from . import compositor, environment, jobs, outputs, properties, session, view
from .backend_client import PROTOCOL_VERSION, BackendError
from .backend_setup import Setup

BUSY = "GDyn is busy: wait for the running job or set-up, or press Cancel in the GDyn tab"


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


def progress_text(verb: str, job) -> str:
    """The status line of a running job or set-up: 'GDyn Animate: rendering 12/48'."""
    detail = f" ({job.detail[:80]})" if job.detail else ""
    return f"GDyn {verb}: {job.stage} {job.done_units}/{job.total_units}{detail}"


def describe_backend(info: dict) -> str:
    """The Check Backend report of an `info` result, with the version note if any.

    The CPU renderer's path is named: "native kernel", or "portable (why)" so that
    an artist learns how to get the faster one (a C compiler)."""
    renderer = str(info.get("cpu renderer", "unknown"))
    if renderer.startswith("native kernel"):
        renderer = "native kernel"
    text = (f"GDyn backend: gdyn {info.get('gdyn')} (protocol {PROTOCOL_VERSION}), torch {info.get('torch')}, "
            f"device {info.get('device')}, CPU renderer {renderer}, python {info.get('python')}")
    note = session.version_note()
    return text + (f"; {note}" if note else "")


def allowed(cls, problem: str | None) -> bool:
    """For poll(): True when there is no `problem`, else False with it as the greyed button's tooltip."""
    if problem is not None:
        cls.poll_message_set(problem)
    return problem is None


class _JobOperator:
    """Start a job (a backend `Job`, or a `backend_setup.Setup`: same progress interface), show
    its progress in the status bar, Esc over the editor it was started from cancels it."""

    _job = None
    _timer = None  # a window timer: its events let modal() show progress (session.poll dispatches)
    _area_rect = None  # (x, y, width, height) in window pixels of the editor it was started from
    verb = "Working"
    cancel_with_window = True  # when Blender ends the modal (file load, window closed), cancel the job

    @classmethod
    def poll(cls, context):
        return allowed(cls, BUSY if session.busy() or environment.running() is not None else None)

    def start(self, context):
        raise NotImplementedError

    def warning(self, context) -> str | None:
        """A line to report as a warning once the job has started, or None."""
        return None

    def finished(self, context, job):
        """Called with a successful job; may return another job to follow the same way."""

    def _begin(self, context) -> bool:
        """Start the job; False (reported) when it cannot start."""
        try:
            self._job = self.start(context)
        except BackendError as exc:
            self.report({"ERROR"}, f"GDyn: {exc}")
            return False
        note = self.warning(context)
        if note:
            self.report({"WARNING"}, f"GDyn: {note}")
        return True

    def invoke(self, context, event):
        if not self._begin(context):
            return {"CANCELLED"}
        area = context.area
        self._area_rect = (area.x, area.y, area.width, area.height) if area is not None else None
        wm = context.window_manager
        self._timer = wm.event_timer_add(session.POLL_INTERVAL_S, window=context.window)
        wm.progress_begin(0, 1000)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        """Without a window (scripts): start the job; the timer finishes it."""
        return {"FINISHED"} if self._begin(context) else {"CANCELLED"}

    def _end(self, context) -> None:
        wm = context.window_manager
        wm.progress_end()
        if self._timer is not None:
            wm.event_timer_remove(self._timer)
            self._timer = None
        if context.workspace is not None:
            context.workspace.status_text_set(None)

    def cancel(self, context):
        """Blender ended the modal (file load, window closed): clean up, and stop the job."""
        self._end(context)
        if self.cancel_with_window and self._job is not None:
            self._job.cancel()

    def esc_cancels(self, context, event) -> bool:
        """Esc is meant for the job: the mouse is over its editor and no playback runs."""
        if self._area_rect is None or (context.screen is not None and context.screen.is_animation_playing):
            return False
        x, y, width, height = self._area_rect
        return x <= event.mouse_x < x + width and y <= event.mouse_y < y + height

    def modal(self, context, event):
        job = self._job
        if event.type == "ESC" and event.value == "PRESS":
            if not self.esc_cancels(context, event):
                return {"PASS_THROUGH"}
            job.cancel()
            return {"RUNNING_MODAL"}
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        if not job.finished:
            context.window_manager.progress_update(int(job.fraction * 1000))
            if context.workspace is not None:
                context.workspace.status_text_set(f"{progress_text(self.verb, job)}  (Esc over this editor cancels)")
            for window in context.window_manager.windows:  # the GDyn tab and the preferences show it too
                for area in window.screen.areas:
                    if area.type in {"IMAGE_EDITOR", "PREFERENCES"}:
                        area.tag_redraw()
            return {"RUNNING_MODAL"}
        if job.error == "cancelled":
            self._end(context)
            self.report({"WARNING"}, f"GDyn: {self.verb} cancelled; nothing was written")
            return {"CANCELLED"}
        if job.error is not None:
            self._end(context)
            self.report({"ERROR"}, f"GDyn: {job.error}")
            return {"CANCELLED"}
        follow = self.finished(context, job)
        if follow is not None:
            self._job = follow
            return {"RUNNING_MODAL"}
        self._end(context)
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


class _PhotoJob(_JobOperator):
    """A backend job on a photo: the Image Editor's, or the one named by `image`."""

    image: StringProperty(name="Image", description="Name of the image to use "
                          "(default: the one shown in the Image Editor)")

    def warning(self, context):
        return outputs.unsaved_warning(context.scene.gdyn.output_dir)


class _WiresFrames(_PhotoJob):
    """A job whose output is wired into the scene and shown in the Image Editors."""

    begin = None  # staticmethod(jobs.start_animate or jobs.start_simulate)

    def start(self, context):
        self._source = _require_image(context, self.image)
        return self.begin(context.scene, self._source)

    def finished(self, context, job):
        wiring = job.outcome
        changed = ""
        if wiring is not None:
            cyclic = job.method == "animate" and context.scene.gdyn.loop
            show_in_image_editors(context, self._source, wiring, cyclic)
            if wiring.changes:
                changed = f"; changed for the photo: {', '.join(wiring.changes)} (Ctrl+Z undoes)"
        self.report({"INFO"}, f"GDyn: {self.verb} done: {job.result['output']} "
                             f"(motion source: {job.result.get('source', 'unknown')}){changed}")


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


class GDYN_OT_export_loop(_PhotoJob, bpy.types.Operator):
    """Write a seamless loop of the photo (MP4, GIF or PNG frames) as a background plate"""

    bl_idname = "gdyn.export_loop"
    bl_label = "Export Loop"
    verb = "Export"

    def start(self, context):
        return jobs.start_export(context.scene, _require_image(context, self.image))

    def warning(self, context):
        return outputs.unsaved_warning(context.scene.gdyn.export_path)

    def finished(self, context, job):
        result = job.result
        self.report({"INFO"}, f"GDyn: loop written to {result.get('video') or result['output']}")


class GDYN_OT_check_backend(_JobOperator, bpy.types.Operator):
    """Start the backend, check its protocol, list its presets; report its versions and device"""

    bl_idname = "gdyn.check_backend"
    bl_label = "Check Backend"
    verb = "Check"

    @classmethod
    def poll(cls, context):
        return allowed(cls, "the backend is being set up" if environment.running() is not None else None)

    def start(self, context):
        return session.request("info", {})

    def finished(self, context, job):
        self.report({"INFO"}, describe_backend(job.result))


class GDYN_OT_cancel_jobs(bpy.types.Operator):
    """Cancel the running GDyn job (nothing it was writing is kept)"""

    bl_idname = "gdyn.cancel_jobs"
    bl_label = "Cancel"

    @classmethod
    def poll(cls, context):
        return session.busy()

    def execute(self, context):
        session.cancel_all()
        return {"FINISHED"}


def _checked(job) -> None:
    """on_done of the check after a set-up: the result on the console (scripts see it too)."""
    print(f"GDyn: Check Backend failed: {job.error}" if job.error else describe_backend(job.result),
          file=sys.stderr if job.error else sys.stdout)


def _setup_done(setup) -> None:
    """After a set-up (in `environment.poll`): fill Backend Python and check the new backend."""
    if setup.error is not None:
        if setup.error != "cancelled":
            print(f"GDyn: Set Up Backend failed: {setup.error}", file=sys.stderr)
        return
    properties.preferences(bpy.context).backend_python = str(setup.python)
    try:
        setup.check_job = session.request("info", {}, on_done=_checked)
    except BackendError as exc:
        print(f"GDyn: Check Backend failed: {exc}", file=sys.stderr)


class _SetUpBackend(_JobOperator):
    """Make the private environment (`environment.start`), follow it, then the check it starts."""

    cancel_with_window = False  # the set-up goes on (its timer) when a file is opened

    @classmethod
    def poll(cls, context):
        return allowed(cls, "this add-on carries no backend: install the zip built by build_addon.py"
                       if environment.bundled_wheel() is None else None) and super().poll(context)

    def start(self, context):
        session.stop_backend()  # it may run from the environment about to be replaced
        return environment.start(properties.preferences(context).setup_python, on_done=_setup_done)

    def finished(self, context, job):
        """The set-up, then the check it started (see `_setup_done`)."""
        if not isinstance(job, Setup):
            self.report({"INFO"}, describe_backend(job.result))
            return None
        self.report({"INFO"}, f"GDyn: backend set up in {job.seconds:.0f} s: {job.python}; checking it")
        return job.check_job


class GDYN_OT_setup_backend(_SetUpBackend, bpy.types.Operator):
    """Make the backend's private Python 3.11 environment with torch and the gdyn bundled with this
    add-on (a few minutes, about 2 GB); then set Backend Python and check it"""

    bl_idname = "gdyn.setup_backend"
    bl_label = verb = "Set Up Backend"


class GDYN_OT_update_backend(_SetUpBackend, bpy.types.Operator):
    """Make the private environment again with the gdyn bundled with this (updated) add-on"""

    bl_idname = "gdyn.update_backend"
    bl_label = verb = "Update Backend"

    @classmethod
    def poll(cls, context):
        return allowed(cls, "there is no private environment yet: press Set Up Backend"
                       if environment.installed() is None else None) and super().poll(context)


class GDYN_OT_cancel_setup(bpy.types.Operator):
    """Stop setting up the backend; what was made so far is removed"""

    bl_idname = "gdyn.cancel_setup"
    bl_label = "Cancel Set-Up"

    @classmethod
    def poll(cls, context):
        return environment.running() is not None

    def execute(self, context):
        environment.running().cancel()
        return {"FINISHED"}


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


OFF_PHOTO = "that point is not on the photo: press on the image itself"
DRAG_PROMPT = "GDyn: press on the photo and drag, release to let go (Esc or right-click cancels)"


class _DragPoint:
    """Press on the photo in the Image Editor's main region, drag, release: a Drag poke from the
    pressed photo pixel, its force the drag in photo pixels (mapping in `view`). Started from
    the sidebar like from the image itself; events over the sidebar or a header pass through."""

    def invoke(self, context, event):
        self._region, self._image, self._start = view.main_region(context.area), active_image(context), None
        if self._region is None or self._image is None:
            self.report({"ERROR"}, "GDyn: Drag Point works in an Image Editor that shows the photo")
            return {"CANCELLED"}
        context.window_manager.modal_handler_add(self)
        context.area.header_text_set(DRAG_PROMPT)
        return {"RUNNING_MODAL"}

    def _end(self, context, result: set) -> set:
        context.area.header_text_set(None)
        return result

    def _drag(self, event) -> tuple[float, float]:
        """The drag so far in photo pixels (the mouse may be beside the photo or the region)."""
        x, y = view.view_pixel(self._region, event.mouse_x - self._region.x, event.mouse_y - self._region.y,
                               tuple(self._image.size))
        return x - self._start[0], y - self._start[1]

    def modal(self, context, event):
        if event.type in {"ESC", "RIGHTMOUSE"} and event.value == "PRESS":
            return self._end(context, {"CANCELLED"})
        point = view.region_point(self._region, event)
        if self._start is None:
            if event.type != "LEFTMOUSE" or event.value != "PRESS" or point is None:
                return {"PASS_THROUGH"}  # navigation, and presses on the sidebar or a header, are the UI's
            self._start = view.photo_pixel(self._region, *point, self._image)
            if self._start is None:
                self.report({"WARNING"}, f"GDyn: {OFF_PHOTO}")
            return {"RUNNING_MODAL"}
        dx, dy = self._drag(event)
        if not (math.isfinite(dx) and math.isfinite(dy)):
            self.report({"ERROR"}, "GDyn: the drag cannot be measured in this view (zoom in and try again)")
            return self._end(context, {"CANCELLED"})
        if event.type == "LEFTMOUSE" and event.value == "RELEASE":
            settings = context.scene.gdyn
            poke = settings.pokes.add()
            poke.name = f"Drag {len(settings.pokes)}"
            poke.kind, poke.frame, poke.duration = "DRAG", context.scene.frame_current, settings.drag_hold
            poke.location, poke.force = self._start, (dx, dy)
            settings.active_poke = len(settings.pokes) - 1
            return self._end(context, {"FINISHED"})
        context.area.header_text_set(f"GDyn drag: ({self._start[0]:.0f}, {self._start[1]:.0f}) "
                                     f"by ({dx:+.1f}, {dy:+.1f}) px  (release to let go)")
        return {"RUNNING_MODAL"}


class GDYN_OT_drag_poke(_DragPoint, bpy.types.Operator):
    """Drag a point of the photo and release it: adds a Drag poke at the current frame"""

    bl_idname = "gdyn.drag_poke"
    bl_label = "Drag Point"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return (context.area is not None and context.area.type == "IMAGE_EDITOR"
                and active_image(context) is not None)


CLASSES = (GDYN_OT_animate, GDYN_OT_simulate, GDYN_OT_export_loop, GDYN_OT_check_backend, GDYN_OT_cancel_jobs,
           GDYN_OT_setup_backend, GDYN_OT_update_backend, GDYN_OT_cancel_setup, GDYN_OT_add_poke,
           GDYN_OT_remove_poke, GDYN_OT_drag_poke)
