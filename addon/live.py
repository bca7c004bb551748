"""Live drag in the Image Editor: press on the photo, drag, let go; the photo follows and rings down.

**Live Drag** opens a live session of the backend (`live_open`, `live_step`,
`live_close`; `gdyn_backend/live_sessions.py`) for the photo with the
scene's motion (the last Animate's or the Motion File, as Simulate uses;
else the backend's prior), its Mask (unsaved paint included), Damping and
frame rate, and shows the session's frames in the preview image
"GDyn Live" in the Image Editor. Mouse positions come from the editor's main
region (`view`, whatever region the operator was started from) in photo
pixels. While the button is held the pressed point is held at the mouse's
offset; on release it rings down. Each timer tick (1 / scene fps) sends the
next step once the previous frame has arrived, so the preview runs at the
scene's rate or, when the backend is slower, one step per frame it renders.
Esc or right-click closes the session and shows the photo again.

The last gesture (the pressed point, its offset at every step it was held,
then the release) is kept on the scene; **Bake Gesture** turns it into a
Drag poke at the frame after the current one, its force keyframed on every
held frame, so Simulate renders the same motion at full resolution: live
step k of the gesture is frame k of the poke (see `live_sessions`).

`LiveDrag` is the session and its event handling without a window (the
operator is a thin modal wrapper), so a script or test can drive it.
"""

from __future__ import annotations

import array
import json
from pathlib import Path

import bpy

from . import mask, params, session, view
from .backend_client import BackendError, Job
from .operators import active_image, source_image

PREVIEW_WIDTH = 512  # live frames are at most this wide (the photo's aspect)
PREVIEW_NAME = "GDyn Live"
GESTURE_KEY = "gdyn_live_gesture"  # scene custom property: the last gesture as JSON
RING_DOWN_S = 5.0  # free steps after a release before the preview rests (the dynamics ring down in ~3 s)


def live_params(scene, photo_file: Path) -> dict:
    """`live_open` params from the scene: the photo, its motion and mask, damping and frame rate."""
    _, fps = params.frames_and_fps(scene)
    request = {"image": str(photo_file), "damping": scene.gdyn.damping, "fps": fps, "width": PREVIEW_WIDTH}
    try:
        request["motion"] = str(params.motion_for_simulate(scene))
    except BackendError:  # no Animate yet and no Motion File: the backend's prior for the photo
        pass
    if scene.gdyn.mask is not None:
        request["mask"] = str(mask.mask_file(scene.gdyn.mask))
    return request


def load_frame(image, path: str) -> bool:
    """Copy a live frame file (float32 RGBA, bottom row first) into `image`; False if it is gone."""
    width, height = image.size
    values = array.array("f")
    try:
        with open(path, "rb") as file:
            values.fromfile(file, width * height * 4)
    except (OSError, EOFError):
        return False
    image.pixels.foreach_set(values)
    image.update()
    return True


def preview_image(width: int, height: int):
    """The "GDyn Live" image, width x height, RGBA bytes in sRGB like the photo's PNG frames."""
    image = bpy.data.images.get(PREVIEW_NAME)
    if image is not None and tuple(image.size) != (width, height):
        bpy.data.images.remove(image)
        image = None
    if image is None:
        image = bpy.data.images.new(PREVIEW_NAME, width, height, alpha=True)
    return image


class LiveDrag:
    """A live session of `photo` driven by Image Editor events (`handle`).

    scene, photo: the scene (motion, mask, damping, fps) and the photo (a bpy Image saved to a file);
    area:         the Image Editor; its main region maps the mouse, its image shows the preview.
    `steps` counts the frames shown; `error` is set when the backend refused something.
    """

    def __init__(self, scene, photo, area):
        self.scene_name, self.photo, self.area = scene.name, photo, area
        self.preview = None
        self.number: int | None = None  # the backend's session number, once open
        self.steps = 0
        self.error: str | None = None
        self._pending: Job | None = None
        self._frame: str | None = None  # a frame file that arrived and is not shown yet
        self._grab: tuple[float, float] | None = None  # the held photo pixel
        self._offset = (0.0, 0.0)
        self._release = False  # a release waits for the next step
        self._gesture: dict | None = None
        self._free_steps_left = 1  # one step shows the rest frame
        self._pending = session.request("live_open", live_params(scene, params.image_path(photo)),
                                        on_done=self._opened)

    @property
    def scene(self):
        return bpy.data.scenes.get(self.scene_name)

    def _opened(self, job: Job) -> None:
        self._pending = None
        if job.error is not None:
            self.error = job.error
            return
        self.number = job.result["session"]
        self.preview = preview_image(job.result["width"], job.result["height"])
        self.preview["gdyn_source"] = self.photo.name  # Animate and Simulate still find the photo
        self._show(self.preview)

    def _show(self, image) -> None:
        self.area.spaces.active.image = image
        self.area.tag_redraw()

    def _arrived(self, job: Job) -> None:
        self._pending = None
        if job.error is not None:
            self.error = job.error
        else:
            self._frame = job.result["frame"]

    # -- input ---------------------------------------------------------------

    def _pixel(self, event, bounded: bool) -> tuple[float, float] | None:
        region = view.main_region(self.area)
        point = view.region_point(region, event) if region is not None else None
        if point is None:
            return None
        if bounded:
            return view.photo_pixel(region, *point, self.photo)
        return view.view_pixel(region, *point, tuple(self.photo.size))

    def handle(self, event) -> str:
        """One event: "DONE" (Esc or right-click: the session is closed), "USED" or "PASS"."""
        if event.type in {"ESC", "RIGHTMOUSE"} and event.value == "PRESS":
            self.close()
            return "DONE"
        if event.type == "TIMER":
            self.tick()
            return "PASS"
        if event.type == "LEFTMOUSE" and event.value == "PRESS":
            self._grab = self._pixel(event, bounded=True)
            self._offset = (0.0, 0.0)
            if self._grab is None:
                return "PASS"  # not on the photo: the editor's own click
            if self._release:  # pressed again before the last release was sent: this hold replaces it
                self._release = False
                self.scene[GESTURE_KEY] = json.dumps(self._gesture)
            self._gesture = {"x": self._grab[0], "y": self._grab[1], "offsets": [],
                             "fps": params.frames_and_fps(self.scene)[1], "photo": self.photo.name}
            return "USED"
        if event.type == "MOUSEMOVE" and self._grab is not None:
            point = self._pixel(event, bounded=False)
            if point is not None:
                self._offset = (point[0] - self._grab[0], point[1] - self._grab[1])
            return "USED"
        if event.type == "LEFTMOUSE" and event.value == "RELEASE" and self._grab is not None:
            self._grab, self._release = None, True
            return "USED"
        return "PASS"

    def tick(self) -> None:
        """Dispatch the backend's replies; when the last frame has arrived, send the next step and
        then show the frame (loading it overlaps the backend's work on the next one)."""
        session.poll()
        if self._pending is None and self.number is not None and self.error is None:
            self._send_step()
        if self._frame is not None:
            if load_frame(self.preview, self._frame):
                self.steps += 1
                self.area.tag_redraw()
            self._frame = None

    def _send_step(self) -> None:
        step = {"session": self.number}
        if self._release:
            step["release"] = True
            self._release, self._free_steps_left = False, round(RING_DOWN_S * self._gesture["fps"])
            self.scene[GESTURE_KEY] = json.dumps(self._gesture)
        elif self._grab is not None:
            step["hold"] = {"x": self._grab[0], "y": self._grab[1], "dx": self._offset[0], "dy": self._offset[1]}
            self._gesture["offsets"].append(list(self._offset))
        elif self._free_steps_left > 0:
            self._free_steps_left -= 1
        else:
            return  # at rest: nothing to show until the next press
        self._pending = session.request("live_step", step, on_done=self._arrived)

    def close(self) -> None:
        """Close the session (its frames are removed) and show the photo again."""
        if self.number is not None:
            session.request("live_close", {"session": self.number})
            self.number = None
        self._show(self.photo)


def bake_gesture(scene):
    """The scene's last live gesture as a Drag poke at the frame after the current one, its force
    keyframed on each held frame (the offset of that live step); returns the poke."""
    stored = scene.get(GESTURE_KEY)
    if not stored:
        raise BackendError("drag the photo with Live Drag first: there is no gesture to bake")
    gesture = json.loads(stored)
    if not gesture["offsets"]:
        raise BackendError("the last live gesture was released before it was held for a frame")
    settings = scene.gdyn
    poke = settings.pokes.add()
    poke.name = f"Live {len(settings.pokes)}"
    poke.kind, poke.frame, poke.duration = "DRAG", scene.frame_current + 1, len(gesture["offsets"])
    poke.location = gesture["x"], gesture["y"]
    for step, offset in enumerate(gesture["offsets"]):
        poke.force = offset
        poke.keyframe_insert("force", frame=poke.frame + step)
    settings.active_poke = len(settings.pokes) - 1
    return poke


class GDYN_OT_live_drag(bpy.types.Operator):
    """Drag the photo live: press, drag and release in the Image Editor; Esc or right-click leaves"""

    bl_idname = "gdyn.live_drag"
    bl_label = "Live Drag"

    @classmethod
    def poll(cls, context):
        return (context.area is not None and context.area.type == "IMAGE_EDITOR"
                and active_image(context) is not None)

    def invoke(self, context, event):
        try:
            self._drag = LiveDrag(context.scene, source_image(context), context.area)
        except BackendError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        wm = context.window_manager
        _, fps = params.frames_and_fps(context.scene)
        self._timer = wm.event_timer_add(1.0 / fps, window=context.window)
        wm.modal_handler_add(self)
        context.area.header_text_set("GDyn Live: press on the photo and drag, release to let it ring; "
                                     "Esc or right-click leaves")
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        outcome = self._drag.handle(event)
        if self._drag.error is not None and outcome != "DONE":
            self._drag.close()
            self.report({"ERROR"}, f"GDyn Live: {self._drag.error}")
            outcome = "DONE"
        if outcome == "DONE":
            context.window_manager.event_timer_remove(self._timer)
            context.area.header_text_set(None)
            return {"FINISHED"}
        return {"RUNNING_MODAL"} if outcome == "USED" else {"PASS_THROUGH"}


class GDYN_OT_bake_gesture(bpy.types.Operator):
    """Turn the last live gesture into a keyframed Drag poke after the current frame (Simulate renders it)"""

    bl_idname = "gdyn.bake_gesture"
    bl_label = "Bake Gesture"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        try:
            poke = bake_gesture(context.scene)
        except BackendError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"GDyn: {poke.name}: held frames {poke.frame}-{poke.frame + poke.duration - 1}, "
                              "then released; press Simulate")
        return {"FINISHED"}


CLASSES = (GDYN_OT_live_drag, GDYN_OT_bake_gesture)
