"""Live sessions of `gdyn serve` (`live_open`, `live_step`, `live_close`) and the editable motion mask.

Through a real `gdyn serve` subprocess where the protocol is the point (frames as files, timing,
scheduling beside a long job, errors); in process (`LiveSession`) where the displacement itself is
measured. Real photos come from ../shared/data/stills (skipped when absent).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from synthetic import SHARED_STILLS, synthetic_still, tiny_inputs

from gdyn_backend import io, spectral
from gdyn_backend.animate import AnimateOptions, animate
from gdyn_backend.cli import main
from gdyn_backend.dynamics import ModalSimulator
from gdyn_backend.live_sessions import (
    FRAMES_KEPT,
    LiveOpenOptions,
    LivePoint,
    LiveSession,
    LiveStepOptions,
    default_volume,
)
from gdyn_backend.presets import DEFAULT_PRESET, load_preset
from gdyn_backend.simulate import DragSpec, PokeSpec, SimulateOptions, simulate
from gdyn_backend.sources.procedural import what_moves

STEP_BUDGET_MS = 50.0  # median round trip of a live step at 512 px on 2 CPU threads, quiet machine


def write_photo(source: Path, path: Path, width: int) -> Path:
    """A real photo resized to `width` pixels (aspect kept), as PNG."""
    bgr = cv2.imread(str(source), cv2.IMREAD_COLOR)
    height = round(bgr.shape[0] * width / bgr.shape[1])
    cv2.imwrite(str(path), cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA))
    return path


def read_frame(path: Path, width: int, height: int) -> np.ndarray:
    """A live frame file as float32 RGBA [height, width, 4], top row first."""
    data = np.fromfile(path, "<f4")
    assert data.size == width * height * 4, (data.size, width, height)
    return data.reshape(height, width, 4)[::-1]


def most_mobile_pixel(volume: spectral.SpectralVolume, width: int, height: int) -> tuple[float, float]:
    """The photo pixel (width x height photo) at the volume's most mobile point (`ModalSimulator.mobility`)."""
    mobility = ModalSimulator(volume).mobility
    y, x = np.unravel_index(np.argmax(mobility), mobility.shape)
    return (x + 0.5) * width / volume.width - 0.5, (y + 0.5) * height / volume.height - 0.5


@pytest.fixture(scope="module")
def tulips(tmp_path_factory):
    """(photo, prior volume, most mobile pixel): tulips_vase 512 px wide and its default prior."""
    if not SHARED_STILLS.is_dir():
        pytest.skip("../shared/data/stills is absent (it is not part of the project)")
    photo = write_photo(SHARED_STILLS / "tulips_vase.jpg", tmp_path_factory.mktemp("tulips") / "tulips.png", 512)
    still = io.read_image(photo)
    volume = default_volume(still, None)
    return photo, volume, most_mobile_pixel(volume, still.width, still.height)


def hold_offset(step: int) -> tuple[float, float]:
    """The hand's offset at hold step 1..10: pulled to (8, -4) px over 5 steps, then held."""
    s = min(step / 5.0, 1.0)
    return 8.0 * s, -4.0 * s


@pytest.mark.slow
def test_live_session_through_serve_follows_the_hand_and_rings_down(serve, tulips):
    photo, _, (x, y) = tulips
    serve.send({"id": 1, "method": "live_open", "params": {"image": str(photo), "width": 512}})
    opened = serve.until_final(1)["result"]
    assert (opened["width"], opened["height"]) == (512, 341)
    session, w, h = opened["session"], opened["width"], opened["height"]
    rid, paths, trips, server_ms = 10, [], [], []

    def step(**params) -> np.ndarray:
        nonlocal rid
        rid += 1
        start = time.perf_counter()
        serve.send({"id": rid, "method": "live_step", "params": {"session": session, **params}})
        reply = serve.until_final(rid)
        trips.append(time.perf_counter() - start)
        assert "result" in reply, reply
        paths.append(reply["result"]["frame"])
        server_ms.append(reply["result"]["ms"])
        return read_frame(Path(reply["result"]["frame"]), w, h)  # read right away, like the add-on

    rest = step()  # nothing held yet: the still itself, top row first after the flip
    assert np.abs(rest[:, :, :3] - io.read_image(photo).rgb).max() < 1e-3
    assert np.all(rest[:, :, 3] == 1.0)
    held = [step(hold={"x": x, "y": y, "dx": dx, "dy": dy}) for dx, dy in map(hold_offset, range(1, 11))]
    free = [step(release=True)] + [step() for _ in range(59)]
    assert len(set(paths)) == 71  # every step a new frame file
    assert len(list(Path(paths[-1]).parent.iterdir())) == FRAMES_KEPT  # older files are deleted

    change = [float(np.abs(f[:, :, :3] - rest[:, :, :3]).mean()) for f in held + free]
    assert change[4] > 5e-3  # held at (8, -4) px the picture differs from the still
    # After the release the motion decays: the last 10 frames change the still by less than a
    # third of the first 10 free frames. Measured: 0.13.
    assert max(change[-10:]) < 0.33 * max(change[10:20])

    serve.send({"id": 100, "method": "live_close", "params": {"session": session}})
    assert serve.until_final(100)["result"] == {"closed": True}
    assert not Path(paths[-1]).parent.exists()

    # Timing, measured by this client: the budget holds on a quiet 2-core machine; a shared one
    # (load above the core count) gets it scaled by load / cores.
    load = os.getloadavg()[0]
    budget = STEP_BUDGET_MS * max(1.0, load / os.cpu_count())
    median = 1000.0 * float(np.median(trips))
    print(f"\nlive step at 512x341: median round trip {median:.1f} ms (backend {np.median(server_ms):.1f} ms), "
          f"{1000.0 / median:.0f} fps; load {load:.2f} on {os.cpu_count()} cores; budget {budget:.0f} ms")
    assert median <= budget


@pytest.mark.slow
def test_held_point_is_within_a_pixel_of_the_hand_then_released(tulips, tmp_path):
    photo, volume, (x, y) = tulips
    still = io.read_image(photo)
    session = LiveSession(LiveOpenOptions(image=photo), still, None, volume, tmp_path)
    for step in range(1, 11):
        target = np.array(hold_offset(step))
        session.step(LiveStepOptions(session=1, hold=LivePoint(x, y, *target)))
        u = session.preview.simulator.displacement()  # motion pixels -> photo pixels at (x, y)
        sx, sy = still.width / volume.width, still.height / volume.height
        mx, my = (x + 0.5) / sx - 0.5, (y + 0.5) / sy - 0.5
        moved = np.array([cv2.getRectSubPix(u[a], (1, 1), (mx, my))[0, 0] for a in range(2)]) * [sx, sy]
        assert np.linalg.norm(moved - target) < 1.0, (step, moved, target)
    energy = [session.preview.simulator.energy()]
    session.step(LiveStepOptions(session=1, release=True))
    for _ in range(30):
        session.step(LiveStepOptions(session=1))
        energy.append(session.preview.simulator.energy())
    assert np.all(np.diff(energy[1:]) <= 1e-12 * energy[1]) and energy[-1] < 0.25 * energy[1]


def test_live_steps_are_the_frames_simulate_renders_for_the_same_gesture(tmp_path):
    # The rule Bake relies on: live step k shows simulate's frame k when each hold step k becomes
    # a one-frame drag at frame k and a poke at step k a poke at frame k - 1.
    image, motion = tiny_inputs(tmp_path, width=96, height=64, bands=6)
    still, volume = io.read_image(image), spectral.load_volume(motion)
    session = LiveSession(LiveOpenOptions(image=image, fps=24.0), still, None, volume, tmp_path / "live")
    (tmp_path / "live").mkdir()
    steps = ([LiveStepOptions(1)] + [LiveStepOptions(1, hold=LivePoint(40, 30, 1.5 * k, -0.5 * k)) for k in range(1, 7)]
             + [LiveStepOptions(1, release=True)] + [LiveStepOptions(1)] * 8
             + [LiveStepOptions(1, poke=LivePoint(20, 20, 0.0, 3.0))] + [LiveStepOptions(1)] * 10)
    live = []
    for options in steps:
        frame = Path(session.step(options)["frame"])
        live.append((read_frame(frame, 96, 64), session.displacement.copy()))
    drags = tuple(DragSpec(k, k, 40, 30, 1.5 * (k - 1), -0.5 * (k - 1)) for k in range(2, 8))
    poke_step = next(k for k, options in enumerate(steps, start=1) if options.poke is not None)
    pokes = (PokeSpec(poke_step - 1, 20, 20, 0.0, 3.0),)
    out = tmp_path / "sim"
    simulate(image, out, SimulateOptions(motion=motion, drags=drags, pokes=pokes, fps=24.0,
                                         frames=len(steps) + 1))
    worst_px, worst_rgb = 0.0, 0.0
    for k, (rgba, displacement) in enumerate(live, start=1):
        worst_px = max(worst_px, float(np.abs(io.read_displacement_exr(out / "displacement" / f"{k:04d}.exr")
                                              - displacement).max()))
        worst_rgb = max(worst_rgb, float(np.abs(io.read_image(out / "frames" / f"{k:04d}.png").rgb
                                                - rgba[:, :, :3]).max()))
    assert np.abs(live[3][1]).max() > 1.0 and np.abs(live[-8][1]).max() > 0.1  # held, then poked
    assert worst_px < 1e-4  # the same physics: equal up to float rounding
    assert worst_rgb <= 0.5 / 255 + 1e-4  # the PNG's 8-bit rounding


@pytest.mark.slow
def test_live_steps_are_answered_while_a_long_job_renders(serve, tmp_path):
    image, motion = tiny_inputs(tmp_path, width=320, height=200)
    serve.send({"id": 1, "method": "animate", "params": {
        "image": str(image), "output": str(tmp_path / "long"), "motion": str(motion), "frames": 400, "fps": 30}})
    while True:  # the job is rendering
        message = serve.read()
        if message.get("event") == "progress" and message["stage"] == "rendering" and message["done"] >= 1:
            break
        assert "error" not in message and "result" not in message, message
    serve.send({"id": 2, "method": "live_open", "params": {"image": str(image), "motion": str(motion)}})
    for k in range(10):
        serve.send({"id": 3 + k, "method": "live_step", "params": {"session": 1, "poke": {"x": 100, "y": 60, "dx": 3,
                                                                                         "dy": 0}}})
    done = set()
    while len(done) < 11:
        message = serve.read()
        assert message.get("id") != 1 or "event" in message, "the long job ended before the live steps"
        if "result" in message or "error" in message:
            assert "result" in message, message
            done.add(message["id"])
    serve.send({"id": 20, "method": "cancel", "params": {"target": 1}})
    assert serve.until_final(1)["error"] == "cancelled"


@pytest.mark.slow
def test_live_requests_with_mistakes_get_one_line_errors(serve, tmp_path):
    image, motion = tiny_inputs(tmp_path)
    static = tmp_path / "static.safetensors"
    spectral.save_volume(spectral.SpectralVolume(np.ones((1, 4, 32, 48), np.float32), np.zeros(1), 30.0, 60, "t"),
                         static)
    serve.send({"id": 1, "method": "live_open", "params": {"image": str(image), "motion": str(motion), "width": 32}})
    assert serve.until_final(1)["result"] == {"session": 1, "width": 32, "height": 21}
    cases = [
        ("live_step", {"session": 7}, "live_step: no open live session 7; open one with live_open"),
        ("live_step", {"session": 1, "hold": {"x": 1, "y": 1, "dx": 0, "dy": 0}, "release": True},
         "live_step: give at most one of hold, release and poke"),
        ("live_step", {"session": 1, "hold": {"x": 1, "y": 1, "dx": 0}},
         "live_step: parameter 'hold': missing key 'dy'; keys: x, y, dx, dy"),
        ("live_step", {"session": 1, "poke": {"x": 48, "y": 1, "dx": 0, "dy": 1}},
         "live_step: poke: pixel (48, 1) is outside the 48x32 image (x in 0..width-1 right, y in 0..height-1 down)"),
        ("live_step", {"session": 1, "hold": [1, 2]},
         "live_step: parameter 'hold' must be an object with keys x, y, dx, dy"),
        ("live_open", {"image": str(image), "width": 4}, "live_open: width must be at least 16 pixels, got 4"),
        ("live_open", {"motion": str(motion)},
         "live_open: missing parameter 'image'; parameters: image, motion, mask, damping, fps, width"),
        ("live_open", {"image": str(image), "motion": str(static)},
         f"live_open: {static} has no oscillating bands (only 0 Hz), so nothing can follow a drag"),
        ("live_open", {"image": str(tmp_path / "nope.png")}, f"image not found: {tmp_path / 'nope.png'}"),
        ("live_close", {"session": 3}, "live_close: no open live session 3; open one with live_open"),
    ]
    for n, (method, params, error) in enumerate(cases):
        serve.send({"id": 10 + n, "method": method, "params": params})
        assert serve.until_final(10 + n)["error"] == error
    serve.send({"id": 30, "method": "live_step", "params": {"session": 1}})
    frame = Path(serve.until_final(30)["result"]["frame"])  # the session survived its bad steps
    assert frame.is_file()
    serve.close()  # the server's exit removes the folders of sessions left open
    assert not frame.parent.exists()


# ---------------------------------------------------------------------------
# The editable motion mask


@pytest.fixture
def plants_and_house(shared_stills, tmp_path) -> Path:
    """A 512x160 photo: a wooden house wall (dog_window) on the left, sunflowers on the right."""
    house = cv2.imread(str(shared_stills / "dog_window.jpg"))[600:1100, 0:800]
    plants = cv2.imread(str(shared_stills / "sunflowers.jpg"))
    size = (256, 160)
    photo = np.hstack([cv2.resize(house, size, interpolation=cv2.INTER_AREA),
                       cv2.resize(plants, size, interpolation=cv2.INTER_AREA)])
    cv2.imwrite(str(tmp_path / "plants_and_house.png"), photo)
    return tmp_path / "plants_and_house.png"


@pytest.mark.slow
def test_mask_is_the_priors_what_moves_map_at_the_photos_size(plants_and_house, tmp_path, serve, capsys):
    out = tmp_path / "mask.png"
    assert main(["mask", str(plants_and_house), "-o", str(out)]) == 0
    assert "512x160" in capsys.readouterr().out
    mask = io.read_mask(out, 512, 160)
    assert io.read_image(out).rgb.shape == (160, 512, 3)
    # White moves: the sunflowers are whiter than the house. Measured 0.91 against 0.14.
    plants, house = float(mask[:, 256:].mean()), float(mask[:, :256].mean())
    assert plants > 0.7 and house < 0.3 and plants > 3 * house
    # The same analysis as the prior: the file is the map `what_moves` gives, to 8-bit rounding.
    expected = what_moves(io.read_image(plants_and_house), load_preset(DEFAULT_PRESET))
    assert np.abs(mask - expected).max() <= 0.5 / 255 + 1e-6
    # The server writes the same file.
    served = tmp_path / "served.png"
    serve.send({"id": 1, "method": "mask", "params": {"image": str(plants_and_house), "output": str(served)}})
    assert serve.until_final(1)["result"] == {"output": str(served), "width": 512, "height": 160}
    assert served.read_bytes() == out.read_bytes()
    serve.send({"id": 2, "method": "mask", "params": {"image": str(plants_and_house),
                                                      "output": str(tmp_path / "m.jpg")}})
    assert serve.until_final(2)["error"] == "the mask is written as PNG: give an output ending in .png, got m.jpg"
    assert main(["mask", str(tmp_path / "none.png"), "-o", str(tmp_path / "x.png")]) == 2
    assert "gdyn: error: image not found" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "m.jpg").exists()


@pytest.mark.slow
def test_a_region_painted_black_stays_exactly_still_in_animate_simulate_and_live(plants_and_house, tmp_path):
    still = io.read_image(plants_and_house)
    mask = what_moves(still, load_preset(DEFAULT_PRESET))
    painted = mask.copy()
    painted[20:120, 300:420] = 0.0  # paint a block of sunflowers black
    edited = tmp_path / "edited.png"
    io.write_png(edited, np.repeat(painted[:, :, None], 3, axis=2))
    region = (slice(20, 120), slice(300, 420))

    def region_motion(outdir: Path) -> tuple[float, float]:
        """(max |F| inside the region, max |F| elsewhere on the plants) over the run, pixels."""
        inside = outside = 0.0
        for path in sorted((outdir / "displacement").glob("*.exr")):
            field = np.abs(io.read_displacement_exr(path))
            inside = max(inside, float(field[:, region[0], region[1]].max()))
            outside = max(outside, float(field[:, :, 440:].max()))
        return inside, outside

    motion = tmp_path / "free" / "motion.safetensors"
    animate(plants_and_house, tmp_path / "free", AnimateOptions(frames=30))
    assert region_motion(tmp_path / "free")[0] > 0.3  # without the paint the region sways
    animate(plants_and_house, tmp_path / "anim", AnimateOptions(frames=30, mask=edited))
    inside, outside = region_motion(tmp_path / "anim")
    assert inside == 0.0 and outside > 0.3
    simulate(plants_and_house, tmp_path / "sim", SimulateOptions(
        motion=motion, mask=edited, frames=30, drags=(DragSpec(2, 10, 360, 70, 6, 0),),
        pokes=(PokeSpec(12, 470, 80, 8, 0),)))
    inside, outside = region_motion(tmp_path / "sim")
    assert inside == 0.0 and outside > 0.3
    (tmp_path / "live").mkdir()
    session = LiveSession(LiveOpenOptions(image=plants_and_house, mask=edited), still,
                          io.read_mask(edited, 512, 160), spectral.load_volume(motion), tmp_path / "live")
    inside = outside = 0.0
    gesture = ([LiveStepOptions(1, hold=LivePoint(360, 70, 6, 0))] * 5 + [LiveStepOptions(1, release=True)]
               + [LiveStepOptions(1, poke=LivePoint(470, 80, 8, 0))] + [LiveStepOptions(1)] * 10)
    for options in gesture:
        session.step(options)
        field = np.abs(session.displacement)
        inside = max(inside, float(field[:, region[0], region[1]].max()))
        outside = max(outside, float(field[:, :, 440:].max()))
    assert inside == 0.0 and outside > 0.3


def test_preview_never_enlarges_and_keeps_the_aspect(tmp_path):
    image = tmp_path / "small.png"
    io.write_png(image, synthetic_still(200, 100, seed=4))
    _, motion = tiny_inputs(tmp_path, width=200, height=100)
    still = io.read_image(image)
    for width, size in ((512, (200, 100)), (64, (64, 32))):
        session = LiveSession(LiveOpenOptions(image=image, width=width), still, None, spectral.load_volume(motion),
                              tmp_path)
        assert session.size == size
