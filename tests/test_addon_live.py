"""The add-on's Live Drag, Bake Gesture and Edit Motion Mask with the real `bpy` module and a real backend.

No window can run in the bpy module, so the live drag is driven through `addon.live.LiveDrag`
(what the modal operator hands every event to) with stand-in events (press, moves, release, timer
ticks, Esc) over a stand-in Image Editor area whose main region has a known view mapping
(`test_addon_view`); the images, the scene, the pokes and the backend are real.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from blender_fixtures import fresh_scene
from standins import known_region
from synthetic import tiny_inputs

from gdyn_backend import io, spectral

bpy = pytest.importorskip("bpy")

SCALE, ORIGIN = 4.0, (100.0, 50.0)  # the stand-in region shows 4 region pixels per photo pixel
PIXEL_TOLERANCE = 1 / 255 + 1e-6  # live frame -> 8-bit preview image; simulate -> 8-bit PNG


@dataclass
class Event:
    type: str
    value: str = "NOTHING"
    mouse_x: int = 0
    mouse_y: int = 0


@dataclass
class Space:
    image: object = None


@dataclass
class Area:
    """An Image Editor area: a main region with a known view mapping; redraws are counted."""

    regions: list
    spaces: object = None
    redraws: int = 0

    def tag_redraw(self):
        self.redraws += 1


def editor_showing(photo) -> Area:
    width, height = photo.size
    area = Area([known_region(width, height, SCALE, ORIGIN)])
    area.spaces = type("Spaces", (), {"active": Space(photo)})()
    return area


def mouse_at(area: Area, x: float, y: float, kind: str, value: str = "NOTHING") -> Event:
    """An event with the mouse over photo pixel (x, y) (x right, y down), window pixels."""
    region = area.regions[0]
    rx = ORIGIN[0] + SCALE * (x + 0.5)
    ry = ORIGIN[1] + SCALE * (region.view2d.height - y - 0.5)
    return Event(kind, value, round(region.x + rx), round(region.y + ry))


def preview_pixels(image) -> np.ndarray:
    """An image's pixels as float32 [H, W, 4], top row first."""
    width, height = image.size
    values = np.empty(width * height * 4, np.float32)
    image.pixels.foreach_get(values)
    return values.reshape(height, width, 4)[::-1].copy()


@pytest.fixture
def live_scene(gdyn, tmp_path):  # noqa: F811
    """A 96x64 photo with a 6-band motion file in a fresh scene at 24 fps, frames 1-60."""
    image_file, motion = tiny_inputs(tmp_path, width=96, height=64, bands=6)
    scene = fresh_scene(tmp_path, 96, 64, "live", active=True)
    scene.frame_end = 60
    scene.gdyn.source, scene.gdyn.motion_file = "motion", str(motion)
    return scene, bpy.data.images.load(str(image_file)), image_file


@pytest.mark.slow
def test_live_drag_follows_stand_in_events_and_bake_makes_simulate_match(gdyn, finish, poll_until, live_scene):  # noqa: F811
    scene, photo, photo_file = live_scene
    area = editor_showing(photo)
    drag = gdyn.live.LiveDrag(scene, photo, area)
    shown: dict[int, np.ndarray] = {}  # live step -> the preview's pixels once that frame was shown

    def run_until(steps: int) -> None:
        """Timer ticks (each polls the backend and sends the next step) until `steps` frames were shown."""

        def tick():
            drag.handle(Event("TIMER"))
            if drag.steps and drag.steps not in shown:
                shown[drag.steps] = preview_pixels(drag.preview)

        poll_until(tick, lambda: drag.steps >= steps or drag.error is not None, 60, f"live frame {steps}")
        assert drag.error is None, drag.error

    run_until(1)  # the rest frame: the photo itself
    assert area.spaces.active.image == drag.preview and tuple(drag.preview.size) == (96, 64)
    assert np.abs(shown[1][:, :, :3] - io.read_image(photo_file).rgb).max() <= PIXEL_TOLERANCE
    assert drag.handle(mouse_at(area, 40, 30, "LEFTMOUSE", "PRESS")) == "USED"
    offsets = [(1.5 * k, -0.5 * k) for k in range(1, 7)]
    for dx, dy in offsets:  # two more frames: the one in flight, then one with the new offset
        assert drag.handle(mouse_at(area, 40 + dx, 30 + dy, "MOUSEMOVE")) == "USED"
        run_until(drag.steps + 2)
    assert drag.handle(mouse_at(area, 49, 27, "LEFTMOUSE", "RELEASE")) == "USED"
    released = drag.steps
    run_until(released + 22)
    # The preview follows the hand (a different picture for each offset) and rings down after the
    # release, changing frame by frame.
    gesture = json.loads(scene[gdyn.live.GESTURE_KEY])
    assert sorted(set(map(tuple, gesture["offsets"]))) == offsets
    held = [shown[s] for s in range(2, 2 + len(gesture["offsets"]))]
    assert len({pixels.tobytes() for pixels in held}) == len(offsets)
    ringing = [shown[s] for s in range(released + 3, released + 23)]
    assert min(float(np.abs(b - a).max()) for a, b in itertools.pairwise(ringing)) > 2 / 255
    # Esc closes the session and shows the photo again.
    assert drag.handle(Event("ESC", "PRESS")) == "DONE" and area.spaces.active.image == photo

    # Bake: the gesture becomes a Drag poke after the current frame, its force keyed per held frame.
    scene.frame_current = scene.frame_start
    poke = gdyn.live.bake_gesture(scene)
    assert (poke.kind, poke.frame, poke.duration) == ("DRAG", 2, len(gesture["offsets"]))
    assert tuple(poke.location) == (40.0, 30.0)
    _, drags = gdyn.params.collect_pokes(scene)
    assert [(d["start"], d["end"], d["dx"], d["dy"]) for d in drags] == [
        (k, k, dx, dy) for k, (dx, dy) in enumerate(gesture["offsets"], start=1)]
    job = finish(gdyn.jobs.start_simulate(scene, photo))
    assert job.error is None, job.error
    # Live step s (1: the rest frame) is simulate's frame s - 1: the same pixels up to 8-bit rounding.
    frames = Path(job.result["output"]) / "frames"
    worst = max(float(np.abs(io.read_image(frames / f"{s - 1:04d}.png").rgb - pixels[:, :, :3]).max())
                for s, pixels in shown.items())
    assert len(shown) >= 30 and worst <= PIXEL_TOLERANCE, (len(shown), worst)


@pytest.mark.slow
def test_a_press_beside_the_photo_is_left_to_the_editor(gdyn, finish, poll_until, live_scene):  # noqa: F811
    scene, photo, _ = live_scene
    area = editor_showing(photo)
    drag = gdyn.live.LiveDrag(scene, photo, area)
    poll_until(lambda: drag.handle(Event("TIMER")), lambda: drag.steps >= 1, 60, "the rest frame")
    assert drag.handle(mouse_at(area, -3, 10, "LEFTMOUSE", "PRESS")) == "PASS"
    assert drag.handle(mouse_at(area, 10, 10, "MOUSEMOVE")) == "PASS"  # nothing is held
    assert drag.handle(Event("RIGHTMOUSE", "PRESS")) == "DONE"
    with pytest.raises(gdyn.backend_client.BackendError, match="drag the photo with Live Drag first"):
        gdyn.live.bake_gesture(bpy.data.scenes.new("no gesture"))


@pytest.fixture
def sunflowers(gdyn, tmp_path, shared_stills):  # noqa: F811
    """sunflowers.jpg at 128x85 with a volume swaying the whole picture 2 px along x."""
    path = tmp_path / "sunflowers.png"
    cv2.imwrite(str(path), cv2.resize(cv2.imread(str(shared_stills / "sunflowers.jpg")), (128, 85),
                                      interpolation=cv2.INTER_AREA))
    amplitude = np.zeros((4, 4, 85, 128), np.float32)
    amplitude[1, 0] = 2.0
    volume = spectral.SpectralVolume(amplitude, spectral.band_frequencies(4, 30.0, 60), 30.0, 60, "test")
    return path, spectral.save_volume(volume, tmp_path / "sway.safetensors")


def test_edit_motion_mask_then_unsaved_paint_changes_the_next_animate(gdyn, finish, sunflowers, tmp_path):  # noqa: F811
    photo_file, motion = sunflowers
    scene = fresh_scene(tmp_path, 128, 85, "mask", active=True)
    scene.gdyn.source, scene.gdyn.motion_file = "motion", str(motion)
    photo = bpy.data.images.load(str(photo_file))
    ready = []
    job = finish(gdyn.mask.start_edit_mask(scene, photo, on_ready=ready.append))
    assert job.error is None, job.error
    image = scene.gdyn.mask
    assert ready == [image] and image.colorspace_settings.name == "Non-Color"
    assert Path(job.result["output"]).parent == tmp_path / "outputs" and tuple(image.size) == (128, 85)
    values = preview_pixels(image)[:, :, 0]
    assert values.mean() > 0.5  # mostly plants: mostly white

    def animated_block_motion() -> float:
        job = finish(gdyn.jobs.start_animate(scene, photo))
        assert job.error is None, job.error
        maps = sorted((Path(job.result["output"]) / "displacement").glob("*.exr"))
        return max(float(np.abs(io.read_displacement_exr(m)[:, 20:60, 40:90]).max()) for m in maps)

    assert animated_block_motion() > 0.5
    # Paint the block black without saving the image: the next Animate sends the painted pixels.
    pixels = preview_pixels(image)
    pixels[20:60, 40:90, :3] = 0.0
    image.pixels.foreach_set(np.ascontiguousarray(pixels[::-1]).ravel())
    assert image.is_dirty
    sent = gdyn.mask.mask_file(image)
    assert sent != Path(image.filepath) and io.read_mask(sent, 128, 85)[20:60, 40:90].max() == 0.0
    assert animated_block_motion() == 0.0
    assert io.read_mask(Path(image.filepath), 128, 85)[20:60, 40:90].max() > 0.5  # the mask file itself untouched
