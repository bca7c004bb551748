"""The Animate / Simulate / Export Loop jobs as plain functions (no window needed).

    job = start_animate(scene, image_path)   # returns at once
    while not job.finished: session.poll()   # the timer does this in the UI
    # job.outcome is what was wired into the compositor, or job.error is set

Each start function names a fresh output folder (`outputs`), builds the
request from the scene (`params`), and sends it through the one backend
client (`session`). When Animate or Simulate succeeds, the output is wired
into the scene it was started for (`compositor`) as one undo step, unless
another file was opened meanwhile (the job is then cancelled and wires
nothing). Every failure is also printed to the system console, so scripts
see it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import bpy

from . import compositor, outputs, params, session
from .backend_client import BackendError, Job

LEFT_FILE = "the file it was started from was closed (File > New or Open), so nothing was wired; start it again"


def _photo_file(image) -> Path:
    """A bpy Image or a file path, as the photo's file."""
    return Path(image) if isinstance(image, (str, Path)) else params.image_path(image)


def _start(method: str, request: dict, on_done=None, on_progress=None, for_file: bool = False,
           label: str = "") -> Job:
    """Send `request`; its output folder and video stay claimed until the job is over. A failure
    other than a cancel is printed to the console, as `GDyn: <label> failed: <error>`."""

    release = outputs.claim(request.get("output"), request.get("video"))

    def done(job: Job):
        release()
        outcome = on_done(job) if on_done is not None else None
        if job.error is not None and job.error != "cancelled":
            print(f"GDyn: {label or job.method} failed: {job.error}", file=sys.stderr)
        return outcome

    try:
        return session.request(method, request, on_done=done, on_progress=on_progress, for_file=for_file)
    except BackendError:
        release()
        raise


def _scene_by_id(uid: int):
    """The scene whose `session_uid` is `uid` in the open file, or None (deleted)."""
    return next((scene for scene in bpy.data.scenes if scene.session_uid == uid), None)


def _wire_when_done(scene, cyclic: bool, label: str, explain=None):
    """on_done callback: on success wire the output into `scene` (found again by its session id,
    only in the file the job was started from) as one undo step "GDyn <label>", and return the
    `compositor.Wiring`; errors stay on job.error (`explain(error)` rewrites a backend error)."""
    uid, generation = scene.session_uid, session.file_generation()

    def done(job: Job) -> compositor.Wiring | None:
        if session.file_generation() != generation:
            job.error = LEFT_FILE
            return None
        if job.error is not None:
            if explain is not None:
                job.error = explain(job.error)
            return None
        target = _scene_by_id(uid)
        if target is None:
            job.error = "its scene was deleted, so nothing was wired"
            return None
        try:
            output = job.result["output"]
            wiring = compositor.wire_outputs(target, output, cyclic=cyclic, match=target.gdyn.match_photo)
            if target.gdyn.use_sequencer:
                compositor.add_sequencer_strip(target, output)
            target.gdyn.last_output = output
        except (OSError, RuntimeError, KeyError) as exc:
            job.error = f"the backend finished but its output could not be loaded: {exc}"
            return None
        bpy.ops.ed.undo_push(message=f"GDyn {label}")
        return wiring

    return done


def start_animate(scene, image, on_progress=None) -> Job:
    """Start an Animate job for `image` (a bpy Image or a file path); returns at once."""
    photo = _photo_file(image)
    request = params.animate_params(scene, photo, outputs.new_output_dir(scene, photo.name, "animate"))
    return _start("animate", request, _wire_when_done(scene, request["loop"], "Animate"), on_progress,
                  for_file=True, label="Animate")


def start_simulate(scene, image, on_progress=None) -> Job:
    """Start a Simulate job: the photo responds to the scene's pokes; returns at once. A backend
    error about one poke names it and its scene frames."""
    photo = _photo_file(image)
    request = params.simulate_params(scene, photo, outputs.new_output_dir(scene, photo.name, "simulate"))
    names, frame_start = params.poke_names(scene), scene.frame_start

    def explain(error: str) -> str:
        return params.explain_poke_error(error, names, frame_start)

    return _start("simulate", request, _wire_when_done(scene, False, "Simulate", explain), on_progress,
                  for_file=True, label="Simulate")


def start_export(scene, image, on_progress=None) -> Job:
    """A looped animation written to the export path (frames folder, plus MP4/GIF if chosen)."""
    folder, video = outputs.export_target(scene)
    request = params.animate_params(scene, _photo_file(image), folder, loop=True)
    if video:
        request["video"] = video
    return _start("animate", request, on_progress=on_progress, label="Export Loop")
