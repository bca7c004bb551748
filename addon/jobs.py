"""Blender side of backend jobs: one client, a main-thread timer, request building, wiring.

The logic of the Animate / Simulate / Export operators lives here as plain
functions so it can be driven without a window (background mode, tests):

    job = start_animate(scene, image_path)   # returns at once
    while not job.finished: poll()           # the timer does this in the UI
    # job.on_done has wired the output into the compositor, or job.error is set

`poll()` is registered with `bpy.app.timers` while jobs are pending, so the
UI never blocks on the backend; job callbacks run on Blender's main thread.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

import bpy

from . import compositor, properties
from .backend_client import BackendClient, BackendError, Job

POLL_INTERVAL_S = 0.1
_client: BackendClient | None = None


def client(context=None) -> BackendClient:
    """The add-on's backend client, re-made when the backend Python preference changes."""
    global _client
    python = properties.backend_python(context or bpy.context)
    if _client is None or _client.python != python:
        if _client is not None:
            _client.stop()
        _client = BackendClient(python)
    return _client


def shutdown() -> None:
    global _client
    if _client is not None:
        _client.stop()
        _client = None
    if bpy.app.timers.is_registered(_timer):
        bpy.app.timers.unregister(_timer)


def poll() -> None:
    """Dispatch backend replies (runs job callbacks on this, the main, thread)."""
    if _client is not None:
        _client.poll()


def _timer():
    poll()
    return POLL_INTERVAL_S if _client is not None and _client.busy else None


def _ensure_timer() -> None:
    if not bpy.app.timers.is_registered(_timer):
        bpy.app.timers.register(_timer, first_interval=POLL_INTERVAL_S, persistent=True)


_pending_outputs: set[str] = set()  # output paths of running jobs: never handed out twice


def request(method: str, params: dict, on_done=None, on_progress=None) -> Job:
    """Send a request and make sure the timer polls for its replies; BackendError if it cannot."""
    reserved = [str(params[k]) for k in ("output", "video") if params.get(k)]

    def done(job: Job) -> None:
        _pending_outputs.difference_update(reserved)
        if on_done is not None:
            on_done(job)

    job = client().request(method, params, on_progress=on_progress, on_done=done)
    _pending_outputs.update(reserved)
    _ensure_timer()
    return job


def _free(path: Path) -> bool:
    return not path.exists() and str(path) not in _pending_outputs


def resolve_path(path: str) -> Path:
    """A Blender path as a file system path; '//' paths of an unsaved file go to the temp folder."""
    if path.startswith("//") and not bpy.data.filepath:
        return Path(tempfile.gettempdir()) / "gdyn" / path[2:]
    return Path(bpy.path.abspath(path))


# -- parameters -------------------------------------------------------------


def image_path(image) -> Path:
    """The file behind an Image datablock; BackendError if it has none."""
    if image is None:
        raise BackendError("open a photo in the Image Editor first")
    path = Path(bpy.path.abspath(image.filepath_raw or image.filepath)) if image.filepath else None
    if path is None or not path.is_file():
        raise BackendError(f"image '{image.name}' is not saved to a file; save it (Image > Save As) first")
    return path


def frames_and_fps(scene) -> tuple[int, float]:
    settings = scene.gdyn
    if settings.use_scene_range:
        return scene.frame_end - scene.frame_start + 1, scene.render.fps / scene.render.fps_base
    return settings.frames, settings.fps


def new_output_dir(scene, image_name: str, kind: str) -> Path:
    """A fresh folder name under the output folder (an existing folder is never reused)."""
    folder = resolve_path(scene.gdyn.output_dir or "//gdyn/")
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(image_name).stem) or "image"
    n = 1
    while not _free(folder / f"{stem}_{kind}_{n:03d}"):
        n += 1
    return folder / f"{stem}_{kind}_{n:03d}"


def animate_params(scene, image_file: Path, output: Path, loop: bool | None = None) -> dict:
    s = scene.gdyn
    frames, fps = frames_and_fps(scene)
    params = {"image": str(image_file), "output": str(output), "frames": frames, "fps": fps,
              "loop": s.loop if loop is None else loop, "amplitude": s.amplitude,
              "speed": s.speed, "seed": s.seed, "source": s.source}
    if s.source == "motion":
        params["motion"] = bpy.path.abspath(s.motion_file)
    elif s.source == "procedural":
        params["preset"] = s.preset
    else:
        params["checkpoint"] = bpy.path.abspath(s.checkpoint)
    if s.mask is not None:
        params["mask"] = str(image_path(s.mask))
    return params


def scene_fcurves(scene) -> dict:
    """{(data_path, array_index): fcurve} of the scene's action (4.x legacy or 4.4+ layered)."""
    data = scene.animation_data
    if data is None or data.action is None:
        return {}
    action, curves = data.action, []
    if getattr(action, "layers", None):  # layered actions: fcurves live in the slot's channelbag
        for layer in action.layers:
            for strip in layer.strips:
                bag = strip.channelbag(data.action_slot) if data.action_slot is not None else None
                if bag is not None:
                    curves.extend(bag.fcurves)
    else:
        curves = list(getattr(action, "fcurves", ()))
    return {(c.data_path, c.array_index): c for c in curves}


def _value_at(fcurves: dict, owner, prop: str, frame: int) -> tuple[float, ...]:
    """The (keyframed) value of a vector property of `owner` at a scene frame."""
    path = owner.path_from_id(prop)
    current = getattr(owner, prop)
    return tuple(fcurves[(path, i)].evaluate(frame) if (path, i) in fcurves else current[i]
                 for i in range(len(current)))


def collect_pokes(scene) -> tuple[list[dict], list[dict]]:
    """Forces and drags of the enabled pokes, as `gdyn simulate` takes them.

    Frames are counted from the scene's first frame (frame 0 = scene.frame_start);
    positions are pixels of the still. A FORCE poke is an impulse of strength
    `force` spread over `duration` frames; if its point or force is keyframed,
    each of those frames carries `force / duration` with that frame's values.
    A DRAG poke holds its point at `force` pixels from its frame for
    `duration` frames (values at its first frame), then releases it.
    """
    fcurves = scene_fcurves(scene)
    forces, drags = [], []
    for poke in (p for p in scene.gdyn.pokes if p.enabled):
        start = poke.frame - scene.frame_start
        if poke.kind == "DRAG":
            (x, y), (dx, dy) = (_value_at(fcurves, poke, prop, poke.frame) for prop in ("location", "force"))
            drags.append({"start": start, "end": start + poke.duration - 1, "x": x, "y": y, "dx": dx, "dy": dy})
            continue
        keyed = any(poke.path_from_id(prop) == key[0] for key in fcurves for prop in ("location", "force"))
        steps = range(poke.duration) if keyed else range(1)
        share = poke.duration if keyed else 1
        for step in steps:
            frame = poke.frame + step
            (x, y), (dx, dy) = (_value_at(fcurves, poke, prop, frame) for prop in ("location", "force"))
            forces.append({"frame": start + step, "x": x, "y": y, "dx": dx / share, "dy": dy / share,
                           "duration": 1 if keyed else poke.duration})
    return forces, drags


# -- jobs -------------------------------------------------------------------


def _wire_when_done(scene_name: str, cyclic: bool):
    """on_done callback: on success wire the output into the scene; errors stay on job.error."""

    def done(job: Job) -> None:
        scene = bpy.data.scenes.get(scene_name)
        if job.error is not None or scene is None:
            if job.error is not None and job.error != "cancelled":  # also visible to scripts
                print(f"GDyn: {job.method} failed: {job.error}", file=sys.stderr)
            return
        try:
            output = job.result["output"]
            job.wired = compositor.wire_outputs(scene, output, cyclic=cyclic)
            if scene.gdyn.use_sequencer:
                compositor.add_sequencer_strip(scene, output)
            scene.gdyn.last_output = output
        except (OSError, RuntimeError, KeyError) as exc:
            job.error = f"the backend finished but its output could not be loaded: {exc}"

    return done


def start_animate(scene, image, on_progress=None) -> Job:
    """Start an Animate job for `image` (a bpy Image or a file path); returns at once."""
    image_file = Path(image) if isinstance(image, (str, Path)) else image_path(image)
    output = new_output_dir(scene, image_file.name, "animate")
    params = animate_params(scene, image_file, output)
    return request("animate", params, on_done=_wire_when_done(scene.name, params["loop"]),
                   on_progress=on_progress)


def motion_for_simulate(scene) -> Path:
    s = scene.gdyn
    if s.last_output and (Path(s.last_output) / "motion.safetensors").is_file():
        return Path(s.last_output) / "motion.safetensors"
    if s.source == "motion" and s.motion_file:
        return Path(bpy.path.abspath(s.motion_file))
    raise BackendError("Simulate needs motion: press Animate first (its motion is reused) "
                       "or choose a Motion File")


def start_simulate(scene, image, on_progress=None) -> Job:
    image_file = Path(image) if isinstance(image, (str, Path)) else image_path(image)
    forces, drags = collect_pokes(scene)
    if not forces and not drags:
        raise BackendError("add a poke (Add Poke, or drag in the Image Editor) before Simulate")
    frames, fps = frames_and_fps(scene)
    params = {"image": str(image_file), "motion": str(motion_for_simulate(scene)),
              "output": str(new_output_dir(scene, image_file.name, "simulate")),
              "forces": forces, "drags": drags, "damping": scene.gdyn.damping,
              "frames": frames, "fps": fps}
    return request("simulate", params, on_done=_wire_when_done(scene.name, False),
                   on_progress=on_progress)


def export_target(scene) -> tuple[Path, str | None]:
    """(output folder, video file or None) for Export Loop; never an existing path."""
    s = scene.gdyn
    base = resolve_path(s.export_path or "//gdyn_loop")
    suffix = {"MP4": ".mp4", "GIF": ".gif"}.get(s.export_format)
    n, stem = 0, base.name
    while True:
        name = stem if n == 0 else f"{stem}_{n:03d}"
        folder = base.with_name(name)
        video = folder.with_suffix(suffix) if suffix else None
        if _free(folder) and (video is None or _free(video)):
            return folder, (str(video) if video else None)
        n += 1


def start_export(scene, image, on_progress=None) -> Job:
    """A looped animation written to the export path (frames folder, plus MP4/GIF if chosen)."""
    image_file = Path(image) if isinstance(image, (str, Path)) else image_path(image)
    folder, video = export_target(scene)
    params = animate_params(scene, image_file, folder, loop=True)
    if video:
        params["video"] = video
    return request("animate", params, on_progress=on_progress)
