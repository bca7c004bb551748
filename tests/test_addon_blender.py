"""The Blender add-on with the real `bpy` module (no mocks) and a real `gdyn serve` backend.

Background `bpy` has no window, so modal operators and timers never tick;
the tests drive the operators' logic (`addon.jobs`: start a job, poll until
the backend is done, wire the result) the way the timer does in the UI.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import addon_utils  # noqa: E402  (ships with bpy)

from gdyn_backend import io  # noqa: E402
from test_server import tiny_inputs  # noqa: E402

FRAMES = 6
RENDER_TOLERANCE = 1.5 / 255  # 8-bit PNG in, sRGB -> linear -> Standard view -> 8-bit out; measured 1/255
MAP_TOLERANCE_PX = 1e-4  # EXR maps through the compositor (float, Non-Color); measured 0.0


@pytest.fixture(scope="module")
def gdyn():
    """The add-on enabled like a user would, with the test's interpreter as backend."""
    addon_utils.enable("addon", default_set=True, handle_error=None)
    bpy.context.preferences.addons["addon"].preferences.backend_python = sys.executable
    from addon import jobs

    yield jobs
    addon_utils.disable("addon", default_set=True)
    assert not hasattr(bpy.types.Scene, "gdyn")


def fresh_scene(tmp_path: Path, width: int, height: int, name: str, active: bool = False):
    """A new scene; `active` makes it the context scene of a fresh empty file (the one
    `frame_set` + render evaluate image sequences for, as the user's scene in the UI)."""
    if active:
        bpy.ops.wm.read_homefile(use_empty=True)
        scene = bpy.context.scene
        scene.name = name
    else:
        scene = bpy.data.scenes.new(name)
    scene.frame_start, scene.frame_end = 1, FRAMES
    scene.render.fps, scene.render.fps_base = 24, 1.0
    scene.render.resolution_x, scene.render.resolution_y = width, height
    scene.render.resolution_percentage = 100
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.look = "None"
    scene.gdyn.output_dir = str(tmp_path / "outputs")
    return scene


def run_job(jobs, job, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while not job.finished:
        assert time.monotonic() < deadline, "the backend did not finish"
        jobs.poll()
        time.sleep(0.01)
    return job


def render(scene, frame: int, path: Path, file_format: str = "PNG") -> Path:
    scene.render.image_settings.file_format = file_format
    if file_format == "OPEN_EXR":
        scene.render.image_settings.color_depth = "32"
    scene.render.filepath = str(path)
    scene.render.use_sequencer = False  # the compositor's result, whatever strips exist
    scene.render.use_compositing = True
    scene.frame_set(frame)
    bpy.ops.render.render(write_still=True, scene=scene.name)
    return path.with_suffix(".png" if file_format == "PNG" else ".exr")


def compositor(scene):
    return scene.compositing_node_group if bpy.app.version >= (5, 0, 0) else scene.node_tree


def test_registers_panel_operators_properties(gdyn):
    panel = bpy.types.GDYN_PT_main
    assert (panel.bl_space_type, panel.bl_region_type, panel.bl_category) == ("IMAGE_EDITOR", "UI", "GDyn")
    for op in ("animate", "simulate", "add_poke", "remove_poke", "drag_poke", "export_loop"):
        assert getattr(bpy.ops.gdyn, op).get_rna_type().identifier.startswith("GDYN_OT_")
    settings = bpy.context.scene.gdyn
    from addon import properties

    names = [item[0] for item in properties._preset_items(settings, bpy.context)]
    assert settings.preset == "gentle_breeze"
    assert set(names) == {p.stem for p in (ROOT / "presets").glob("*.toml")}


def test_pokes_are_keyframeable_and_become_forces(gdyn, tmp_path):
    scene = fresh_scene(tmp_path, 48, 32, "pokes")
    poke = scene.gdyn.pokes.add()
    poke.frame, poke.duration, poke.location = 2, 3, (10.0, 12.0)
    poke.force = (4.0, 0.0)
    poke.keyframe_insert("force", frame=2)
    poke.force = (0.0, -6.0)
    poke.keyframe_insert("force", frame=4)
    drag = scene.gdyn.pokes.add()
    drag.kind, drag.frame, drag.duration, drag.location, drag.force = "DRAG", 5, 2, (20.0, 5.0), (1.0, 2.0)
    scene.frame_current = 3
    forces, drags = gdyn.collect_pokes(scene)
    assert [f["frame"] for f in forces] == [1, 2, 3]  # frames counted from the scene start
    assert forces[0]["dx"] == pytest.approx(4.0 / 3) and forces[2]["dy"] == pytest.approx(-6.0 / 3)
    assert sum(f["dx"] for f in forces) == pytest.approx((4.0 + 2.0 + 0.0) / 3, abs=0.3)
    assert drags == [{"start": 4, "end": 5, "x": 20.0, "y": 5.0, "dx": 1.0, "dy": 2.0}]
    assert scene.frame_current == 3  # evaluating keyframes does not move the user's playhead
    bpy.data.scenes.remove(scene)


@pytest.fixture(scope="module")
def animated(gdyn, tmp_path_factory):
    """One Animate run through the add-on's job functions and the real backend."""
    tmp_path = tmp_path_factory.mktemp("animate")
    image, motion = tiny_inputs(tmp_path)
    scene = fresh_scene(tmp_path, 48, 32, "animate", active=True)
    assert bpy.context.preferences.addons["addon"].preferences.backend_python == sys.executable
    scene.gdyn.source = "motion"
    scene.gdyn.motion_file = str(motion)
    job = gdyn.start_animate(scene, image)
    assert not job.finished  # the UI thread never waits
    run_job(gdyn, job)
    assert job.error is None, job.error
    return scene, job, image, tmp_path


def test_animate_wires_compositor_and_renders_the_backend_frames(animated):
    scene, job, image, tmp_path = animated
    outdir = Path(job.result["output"])
    assert outdir.parent == tmp_path / "outputs" and job.result["frames"] == FRAMES
    assert scene.gdyn.last_output == str(outdir)
    tree = compositor(scene)
    frames_node, maps_node = tree.nodes["GDyn Frames"], tree.nodes["GDyn Displacement"]
    assert frames_node.frame_duration == FRAMES and frames_node.frame_start == scene.frame_start
    assert maps_node.image.colorspace_settings.name == "Non-Color"
    assert tree.nodes["GDyn Displacement XY"].inputs[0].links[0].from_node == maps_node
    # Timeline frame f shows the backend's frame f - frame_start, pixel for pixel.
    for frame in (1, 4, FRAMES):
        out = render(scene, frame, tmp_path / f"render_{frame}")
        got = io.read_image(out).rgb
        want = io.read_image(outdir / "frames" / f"{frame - 1:04d}.png").rgb
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= RENDER_TOLERANCE
    # Frames differ over time, so matching frame 4 to 0003.png is a real check.
    f0, f3 = (io.read_image(outdir / "frames" / f"{i:04d}.png").rgb for i in (0, 3))
    assert np.abs(f0 - f3).max() > 10 * RENDER_TOLERANCE
    # The displacement node carries pixels: render it to EXR through the output.
    output = frames_node.outputs["Image"].links[0].to_socket
    tree.links.new(maps_node.outputs["Image"], output)
    try:
        exr = render(scene, 4, tmp_path / "render_map", "OPEN_EXR")
        got = io.read_displacement_exr(exr)
        want = io.read_displacement_exr(outdir / "displacement" / "0003.exr")
        assert np.abs(want).max() > 0.5
        assert np.abs(got - want).max() <= MAP_TOLERANCE_PX
    finally:
        tree.links.new(frames_node.outputs["Image"], output)


def test_sequencer_strip_option(animated, gdyn, tmp_path):
    _, job, image, _ = animated
    scene = fresh_scene(tmp_path, 48, 32, "sequencer")
    scene.gdyn.source, scene.gdyn.motion_file = "motion", animated[0].gdyn.motion_file
    scene.gdyn.use_sequencer = True
    assert run_job(gdyn, gdyn.start_animate(scene, image)).error is None
    strips = scene.sequence_editor.strips if hasattr(scene.sequence_editor, "strips") else scene.sequence_editor.sequences
    strip = strips["GDyn Animation"]
    assert strip.frame_final_start == scene.frame_start and strip.frame_final_duration == FRAMES
    assert [e.filename for e in strip.elements] == [f"{i:04d}.png" for i in range(FRAMES)]


def test_simulate_from_pokes_rewires_the_compositor(animated, gdyn):
    scene, job, image, tmp_path = animated
    poke = scene.gdyn.pokes.add()
    poke.frame, poke.location, poke.force = 2, (24.0, 16.0), (3.0, 0.0)
    sim = run_job(gdyn, gdyn.start_simulate(scene, image))
    assert sim.error is None, sim.error
    outdir = Path(sim.result["output"])
    assert outdir != Path(job.result["output"]) and "simulate" in outdir.name
    assert Path(compositor(scene).nodes["GDyn Frames"].image.filepath).parent == outdir / "frames"
    moved = io.read_displacement_exr(outdir / "displacement" / f"{FRAMES - 1:04d}.exr")
    assert np.abs(moved[0]).max() > 0.05  # the push moved pixels along x
    scene.gdyn.pokes.clear()


def test_failure_and_cancel_leave_the_users_scene_untouched(gdyn, tmp_path):
    image, motion = tiny_inputs(tmp_path, 320, 200)
    scene = fresh_scene(tmp_path, 320, 200, "user work")
    scene.gdyn.source = "motion"
    scene.gdyn.motion_file = str(motion)
    tree = bpy.data.node_groups.new("user comp", "CompositorNodeTree") if bpy.app.version >= (5, 0, 0) else None
    if tree is not None:
        scene.compositing_node_group = tree
    else:
        scene.use_nodes = True
        tree = scene.node_tree
    user_node = tree.nodes.new("CompositorNodeRGB")
    user_node.name = "my colour"
    before = sorted(n.name for n in tree.nodes)

    failed = run_job(gdyn, gdyn.start_animate(scene, tmp_path / "missing.png"))
    assert failed.error.startswith("image not found") and failed.result is None

    scene.frame_end = 400
    job = gdyn.start_animate(scene, image)
    while job.done_units < 1:
        gdyn.poll()
        time.sleep(0.01)
    job.cancel()
    run_job(gdyn, job)
    assert job.error == "cancelled"
    assert sorted(n.name for n in tree.nodes) == before and tree.nodes["my colour"] == user_node
    assert scene.gdyn.last_output == ""
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").iterdir())


def test_dead_backend_is_reported_and_restarted(gdyn, tmp_path):
    image, motion = tiny_inputs(tmp_path, 320, 200)
    scene = fresh_scene(tmp_path, 320, 200, "dead backend")
    scene.gdyn.source, scene.gdyn.motion_file = "motion", str(motion)
    scene.frame_end = 400
    job = gdyn.start_animate(scene, image)
    while job.done_units < 1:
        gdyn.poll()
        time.sleep(0.01)
    old_pid = gdyn.client().pid
    os.kill(old_pid, signal.SIGKILL)
    run_job(gdyn, job, timeout=30)
    assert job.error.startswith("the backend process stopped") and compositor(scene) is None
    scene.frame_end = FRAMES
    again = run_job(gdyn, gdyn.start_animate(scene, image))
    assert again.error is None and gdyn.client().pid != old_pid
    assert compositor(scene).nodes["GDyn Frames"].frame_duration == FRAMES


def wait_idle(jobs, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while jobs.client().busy:
        assert time.monotonic() < deadline, "the backend did not finish"
        jobs.poll()
        time.sleep(0.01)


def test_operators_from_a_script(gdyn, tmp_path):
    """The operators as a script calls them (no window: they start the job, the poll finishes it)."""
    image_file, motion = tiny_inputs(tmp_path)
    scene = fresh_scene(tmp_path, 48, 32, "script", active=True)
    with pytest.raises(RuntimeError, match="open a photo in the Image Editor first"):
        bpy.ops.gdyn.animate()
    image = bpy.data.images.load(str(image_file))
    scene.gdyn.source, scene.gdyn.motion_file = "motion", str(motion)
    assert bpy.ops.gdyn.animate(image=image.name) == {"FINISHED"}
    wait_idle(gdyn)
    outdir = Path(scene.gdyn.last_output)
    assert len(list((outdir / "frames").glob("*.png"))) == FRAMES
    assert compositor(scene).nodes["GDyn Frames"].image.filepath.startswith(str(outdir))

    assert bpy.ops.gdyn.add_poke() == {"FINISHED"}
    assert tuple(scene.gdyn.pokes[0].location) == (24.0, 16.0)  # the middle of the 48x32 photo
    assert bpy.ops.gdyn.simulate(image=image.name) == {"FINISHED"}
    wait_idle(gdyn)
    assert "simulate" in Path(scene.gdyn.last_output).name
    assert bpy.ops.gdyn.remove_poke(index=0) == {"FINISHED"} and len(scene.gdyn.pokes) == 0

    scene.gdyn.export_format, scene.gdyn.export_path = "MP4", str(tmp_path / "plate")
    assert bpy.ops.gdyn.export_loop(image=image.name) == {"FINISHED"}
    wait_idle(gdyn)
    assert (tmp_path / "plate.mp4").stat().st_size > 0
    assert len(list((tmp_path / "plate" / "frames").glob("*.png"))) == FRAMES
    assert bpy.ops.gdyn.export_loop(image=image.name) == {"FINISHED"}  # never overwrites
    wait_idle(gdyn)
    assert (tmp_path / "plate_001.mp4").is_file() and (tmp_path / "plate.mp4").is_file()


def test_two_quick_animates_get_separate_outputs(gdyn, tmp_path):
    image, motion = tiny_inputs(tmp_path)
    scene = fresh_scene(tmp_path, 48, 32, "twice")
    scene.gdyn.source, scene.gdyn.motion_file = "motion", str(motion)
    first, second = gdyn.start_animate(scene, image), gdyn.start_animate(scene, image)
    run_job(gdyn, first)
    run_job(gdyn, second)
    outputs = {first.result["output"], second.result["output"]}
    assert len(outputs) == 2 and all(len(list((Path(o) / "frames").iterdir())) == FRAMES for o in outputs)
