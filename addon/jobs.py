"""The Animate / Simulate / Export Loop jobs as plain functions (no window needed).

    job = start_animate(scene, image_path)   # returns at once
    while not job.finished: session.poll()   # the timer does this in the UI
    # job.outcome is what was wired into the compositor, or job.error is set

Each start function names a fresh output folder (`outputs`), builds the
request from the scene (`params`), and sends it through the one backend
client (`session`). When Animate or Simulate succeeds, the output is wired
into the scene (`compositor`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import bpy

from . import compositor, outputs, params, session
from .backend_client import BackendError, Job


def _photo_file(image) -> Path:
    """A bpy Image or a file path, as the photo's file."""
    return Path(image) if isinstance(image, (str, Path)) else params.image_path(image)


def _start(method: str, request: dict, on_done=None, on_progress=None) -> Job:
    """Send `request`; its output folder and video stay claimed until the job is over."""

    release = outputs.claim(request.get("output"), request.get("video"))

    def done(job: Job):
        release()
        return on_done(job) if on_done is not None else None

    try:
        return session.request(method, request, on_done=done, on_progress=on_progress)
    except BackendError:
        release()
        raise


def _wire_when_done(scene_name: str, cyclic: bool):
    """on_done callback: on success wire the output into the scene and return the
    `compositor.Wiring`; errors stay on job.error."""

    def done(job: Job) -> compositor.Wiring | None:
        scene = bpy.data.scenes.get(scene_name)
        if job.error is not None or scene is None:
            if job.error is not None and job.error != "cancelled":  # also visible to scripts
                print(f"GDyn: {job.method} failed: {job.error}", file=sys.stderr)
            return None
        try:
            output = job.result["output"]
            wiring = compositor.wire_outputs(scene, output, cyclic=cyclic)
            if scene.gdyn.use_sequencer:
                compositor.add_sequencer_strip(scene, output)
            scene.gdyn.last_output = output
            return wiring
        except (OSError, RuntimeError, KeyError) as exc:
            job.error = f"the backend finished but its output could not be loaded: {exc}"
            return None

    return done


def start_animate(scene, image, on_progress=None) -> Job:
    """Start an Animate job for `image` (a bpy Image or a file path); returns at once."""
    photo = _photo_file(image)
    request = params.animate_params(scene, photo, outputs.new_output_dir(scene, photo.name, "animate"))
    return _start("animate", request, _wire_when_done(scene.name, request["loop"]), on_progress)


def start_simulate(scene, image, on_progress=None) -> Job:
    """Start a Simulate job: the photo responds to the scene's pokes; returns at once."""
    photo = _photo_file(image)
    request = params.simulate_params(scene, photo, outputs.new_output_dir(scene, photo.name, "simulate"))
    return _start("simulate", request, _wire_when_done(scene.name, False), on_progress)


def start_export(scene, image, on_progress=None) -> Job:
    """A looped animation written to the export path (frames folder, plus MP4/GIF if chosen)."""
    folder, video = outputs.export_target(scene)
    request = params.animate_params(scene, _photo_file(image), folder, loop=True)
    if video:
        request["video"] = video
    return _start("animate", request, on_progress=on_progress)
