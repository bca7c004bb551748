"""Request parameters built from the scene: what `animate` and `simulate` are sent.

The names are the wire vocabulary of `gdyn serve` (protocol 2, see
`gdyn_backend/server.py`): positions in pixels of the still (x right, y
down), frames counted from 0 at the scene's first frame, fps in Hz.
"""

from __future__ import annotations

import re
from pathlib import Path

import bpy

from . import mask
from .backend_client import BackendError


def image_path(image) -> Path:
    """The file behind an Image datablock; BackendError if it has none."""
    if image is None:
        raise BackendError("open a photo in the Image Editor first")
    path = Path(bpy.path.abspath(image.filepath_raw or image.filepath)) if image.filepath else None
    if path is None or not path.is_file():
        raise BackendError(f"image '{image.name}' is not saved to a file; save it (Image > Save As) first")
    return path


def frames_and_fps(scene) -> tuple[int, float]:
    """(frame count, frames per second) of a job: the scene's range and rate, or the typed ones."""
    settings = scene.gdyn
    if settings.use_scene_range:
        return scene.frame_end - scene.frame_start + 1, scene.render.fps / scene.render.fps_base
    return settings.frames, settings.fps


def animate_params(scene, image_file: Path, output: Path, loop: bool | None = None) -> dict:
    """`animate` params: the photo, the output folder and the scene's motion settings."""
    s = scene.gdyn
    frames, fps = frames_and_fps(scene)
    params = {"image": str(image_file), "output": str(output), "frames": frames, "fps": fps,
              "loop": s.loop if loop is None else loop, "amplitude": s.amplitude,
              "speed": s.speed, "seed": s.seed, "source": s.source}
    if s.source == "motion":
        params["motion"] = bpy.path.abspath(s.motion_file)
    elif s.source == "procedural":
        params["preset"] = s.preset_name
    else:
        params["checkpoint"] = bpy.path.abspath(s.checkpoint)
    if s.mask is not None:
        params["mask"] = str(mask.mask_file(s.mask))
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


def _sent_pokes(scene):
    """(kind, add-on poke, request dict) for each poke and drag `simulate` is sent, in order;
    kind is "poke" or "drag" (see `collect_pokes`)."""
    fcurves = scene_fcurves(scene)
    for poke in (p for p in scene.gdyn.pokes if p.enabled):
        start = poke.frame - scene.frame_start
        keyed = any(poke.path_from_id(prop) == key[0] for key in fcurves for prop in ("location", "force"))
        if poke.kind == "DRAG":
            for step in range(poke.duration) if keyed else range(1):
                (x, y), (dx, dy) = (_value_at(fcurves, poke, prop, poke.frame + step) for prop in ("location", "force"))
                end = start + step if keyed else start + poke.duration - 1
                yield "drag", poke, {"start": start + step, "end": end, "x": x, "y": y, "dx": dx, "dy": dy}
            continue
        steps = range(poke.duration) if keyed else range(1)
        share = poke.duration if keyed else 1
        for step in steps:
            frame = poke.frame + step
            (x, y), (dx, dy) = (_value_at(fcurves, poke, prop, frame) for prop in ("location", "force"))
            yield "poke", poke, {"frame": start + step, "x": x, "y": y, "dx": dx / share, "dy": dy / share,
                                 "duration": 1 if keyed else poke.duration}


def collect_pokes(scene) -> tuple[list[dict], list[dict]]:
    """(pokes, drags) of the enabled scene pokes, as the `simulate` params of those names.

    pokes: [{frame, x, y, dx, dy, duration}], drags: [{start, end, x, y, dx, dy}].
    Frames are counted from the scene's first frame (frame 0 = scene.frame_start);
    positions are pixels of the still. A FORCE poke is an impulse of strength
    `force` spread over `duration` frames; if its point or force is keyframed,
    each of those frames carries `force / duration` with that frame's values.
    A DRAG poke holds its point at `force` pixels from its frame for
    `duration` frames (values at its first frame), then releases it; if its
    point or force is keyframed (a baked live gesture), each of those frames
    is a one-frame drag with that frame's values.
    """
    sent = list(_sent_pokes(scene))
    return ([entry for kind, _, entry in sent if kind == "poke"],
            [entry for kind, _, entry in sent if kind == "drag"])


def poke_names(scene) -> dict[str, list[str]]:
    """{"poke": [...], "drag": [...]}: the add-on poke's name behind each sent poke and drag, in
    the order `collect_pokes` sends them (a keyframed poke is sent once per frame)."""
    names: dict[str, list[str]] = {"poke": [], "drag": []}
    for kind, poke, _ in _sent_pokes(scene):
        names[kind].append(poke.name)
    return names


BACKEND_POKE_ERROR = re.compile(r"^(?:simulate: )?(poke|drag) (\d+): (.*)$")
BACKEND_FRAME = re.compile(r"\b(frames? |start <= )(\d+)(?:-(\d+))?")


def explain_poke_error(error: str, names: dict[str, list[str]], frame_start: int) -> str:
    """A backend `simulate` error about "poke N" / "drag N" (N from 1 in the order sent, frames
    from 0 at the scene start) in the user's terms: the poke's name and scene frames."""
    found = BACKEND_POKE_ERROR.match(error)
    if found is None:
        return error
    kind, number, rest = found.group(1), int(found.group(2)), found.group(3)
    if not 1 <= number <= len(names[kind]):
        return error

    def scene_frames(match: re.Match) -> str:
        text = f"{match.group(1)}{int(match.group(2)) + frame_start}"
        return text + (f"-{int(match.group(3)) + frame_start}" if match.group(3) else "")

    rest, frames = BACKEND_FRAME.subn(scene_frames, rest)
    return f"{kind.capitalize()} '{names[kind][number - 1]}': {rest}" + (" (scene frames)" if frames else "")


def motion_for_simulate(scene) -> Path:
    """The spectral volume Simulate takes its modes from: the last output's, else the Motion File."""
    s = scene.gdyn
    if s.last_output and (Path(s.last_output) / "motion.safetensors").is_file():
        return Path(s.last_output) / "motion.safetensors"
    if s.source == "motion" and s.motion_file:
        return Path(bpy.path.abspath(s.motion_file))
    raise BackendError("Simulate needs motion: press Animate first (its motion is reused) "
                       "or choose a Motion File")


def simulate_params(scene, image_file: Path, output: Path) -> dict:
    """`simulate` params: the photo, its motion, the output folder, the pokes, the damping and
    the mask (unsaved paint included, `mask.mask_file`)."""
    pokes, drags = collect_pokes(scene)
    if not pokes and not drags:
        raise BackendError("add a poke (Add Poke, or drag in the Image Editor) before Simulate")
    frames, fps = frames_and_fps(scene)
    request = {"image": str(image_file), "motion": str(motion_for_simulate(scene)), "output": str(output),
               "pokes": pokes, "drags": drags, "damping": scene.gdyn.damping, "frames": frames, "fps": fps}
    if scene.gdyn.mask is not None:
        request["mask"] = str(mask.mask_file(scene.gdyn.mask))
    return request
