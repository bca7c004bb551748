"""The Blender add-on with the real `bpy` module (no mocks) and a real `gdyn serve` backend.

Background `bpy` has no window, so modal operators and timers never tick;
the tests drive the operators' logic (`addon.jobs`: start a job; the one
poller `addon.session.poll` until the backend is done, which wires the
result) the way the timer does in the UI. They run on every bpy of the
matrix (tests/bpy_matrix.py) with the backend in the project's venv
(`backend_side`).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from backend_side import BACKEND_PYTHON, PRESETS, read_rgb, read_xy, tiny_inputs
from blender_fixtures import FRAMES, fresh_scene

bpy = pytest.importorskip("bpy")



RENDER_TOLERANCE = 1.5 / 255  # 8-bit PNG in, sRGB -> linear -> Standard view -> 8-bit out; measured 1/255
MAP_TOLERANCE_PX = 1e-4  # EXR maps through the compositor (float, Non-Color); measured 0.0


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
    from addon import compositor as wiring

    return wiring.scene_tree(scene)


def test_registers_panel_operators_properties(gdyn):
    panel = bpy.types.GDYN_PT_main
    assert (panel.bl_space_type, panel.bl_region_type, panel.bl_category) == ("IMAGE_EDITOR", "UI", "GDyn")
    for op in ("animate", "simulate", "add_poke", "remove_poke", "drag_poke", "export_loop"):
        assert getattr(bpy.ops.gdyn, op).get_rna_type().identifier.startswith("GDYN_OT_")
    settings = bpy.context.scene.gdyn
    from addon import properties

    # No backend has answered yet: the menu holds the current value, the add-on's default.
    names = [item[0] for item in properties._preset_items(settings, bpy.context)]
    assert settings.preset == settings.preset_name == "gentle_breeze" and names == ["gentle_breeze"]


def test_pokes_are_keyframeable_and_become_simulate_pokes(gdyn, tmp_path):
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
    pokes, drags = gdyn.params.collect_pokes(scene)
    assert [f["frame"] for f in pokes] == [1, 2, 3]  # frames counted from the scene start
    assert pokes[0]["dx"] == pytest.approx(4.0 / 3) and pokes[2]["dy"] == pytest.approx(-6.0 / 3)
    assert sum(f["dx"] for f in pokes) == pytest.approx((4.0 + 2.0 + 0.0) / 3, abs=0.3)
    assert drags == [{"start": 4, "end": 5, "x": 20.0, "y": 5.0, "dx": 1.0, "dy": 2.0}]
    assert scene.frame_current == 3  # evaluating keyframes does not move the user's playhead
    bpy.data.scenes.remove(scene)


@pytest.fixture(scope="module")
def animated(gdyn, finish, tmp_path_factory):
    """One Animate run through the add-on's job functions and the real backend."""
    tmp_path = tmp_path_factory.mktemp("animate")
    image, motion = tiny_inputs(tmp_path)
    scene = fresh_scene(tmp_path, 48, 32, "animate", active=True)
    assert bpy.context.preferences.addons["addon"].preferences.backend_python == BACKEND_PYTHON
    scene.gdyn.source = "motion"
    scene.gdyn.motion_file = str(motion)
    job = gdyn.jobs.start_animate(scene, image)
    assert not job.finished  # the UI thread never waits
    finish(job)
    assert job.error is None, job.error
    return scene, job, image, tmp_path


@pytest.mark.slow
def test_animate_wires_compositor_and_renders_the_backend_frames(animated, gdyn):
    scene, job, image, tmp_path = animated
    outdir = Path(job.result["output"])
    assert outdir.parent == tmp_path / "outputs" and job.result["frames"] == FRAMES
    assert scene.gdyn.last_output == str(outdir)
    tree = compositor(scene)
    frames_node, maps_node = tree.nodes["GDyn Frames"], tree.nodes["GDyn Displacement"]
    assert job.outcome.frames == frames_node.image and job.outcome.count == FRAMES
    # The first job started the backend, which then listed its presets for the menu.
    assert gdyn.presets.offered() == sorted(p.stem for p in PRESETS.glob("*.toml"))
    assert frames_node.frame_duration == FRAMES and frames_node.frame_start == scene.frame_start
    assert maps_node.image.colorspace_settings.name == "Non-Color"
    assert tree.nodes["GDyn Displacement XY"].inputs[0].links[0].from_node == maps_node
    # Timeline frame f shows the backend's frame f - frame_start, pixel for pixel.
    for frame in (1, 4, FRAMES):
        out = render(scene, frame, tmp_path / f"render_{frame}")
        got = read_rgb(out)
        want = read_rgb(outdir / "frames" / f"{frame - 1:04d}.png")
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= RENDER_TOLERANCE
    # Frames differ over time, so matching frame 4 to 0003.png is a real check.
    f0, f3 = (read_rgb(outdir / "frames" / f"{i:04d}.png") for i in (0, 3))
    assert np.abs(f0 - f3).max() > 10 * RENDER_TOLERANCE
    # The displacement node carries pixels: render it to EXR through the output.
    output = frames_node.outputs["Image"].links[0].to_socket
    tree.links.new(maps_node.outputs["Image"], output)
    try:
        exr = render(scene, 4, tmp_path / "render_map", "OPEN_EXR")
        got = read_xy(exr)
        want = read_xy(outdir / "displacement" / "0003.exr")
        assert np.abs(want).max() > 0.5
        assert np.abs(got - want).max() <= MAP_TOLERANCE_PX
    finally:
        tree.links.new(frames_node.outputs["Image"], output)


def test_blenders_image_reader_matches_the_backends(animated):
    """The tests read pictures with Blender (also where the backend's readers cannot run): the same
    numbers as gdyn_backend.io for the frames (8-bit PNG: byte * (1/255) against byte / 255, so
    float32 rounding apart) and exactly for the maps (float EXR)."""
    io = pytest.importorskip("gdyn_backend.io")  # absent in the bpy matrix
    outdir = Path(animated[1].result["output"])
    png, exr = outdir / "frames" / "0003.png", outdir / "displacement" / "0003.exr"
    assert np.abs(read_rgb(png) - io.read_image(png).rgb).max() <= 1e-6
    assert np.array_equal(read_xy(exr), io.read_displacement_exr(exr))


def test_sequencer_strip_option(animated, finish, gdyn, tmp_path):
    _, job, image, _ = animated
    scene = fresh_scene(tmp_path, 48, 32, "sequencer")
    scene.gdyn.source, scene.gdyn.motion_file = "motion", animated[0].gdyn.motion_file
    scene.gdyn.use_sequencer = True
    assert finish(gdyn.jobs.start_animate(scene, image)).error is None
    strips = scene.sequence_editor.strips if hasattr(scene.sequence_editor, "strips") else scene.sequence_editor.sequences
    strip = strips["GDyn Animation"]
    start, duration = ((strip.left_handle, strip.duration) if hasattr(strip, "left_handle")  # 5.3+
                       else (strip.frame_final_start, strip.frame_final_duration))
    assert start == scene.frame_start and duration == FRAMES
    assert [e.filename for e in strip.elements] == [f"{i:04d}.png" for i in range(FRAMES)]


def test_simulate_from_pokes_rewires_the_compositor(animated, finish, gdyn):
    scene, job, image, tmp_path = animated
    poke = scene.gdyn.pokes.add()
    poke.frame, poke.location, poke.force = 2, (24.0, 16.0), (3.0, 0.0)
    sim = finish(gdyn.jobs.start_simulate(scene, image))
    assert sim.error is None, sim.error
    outdir = Path(sim.result["output"])
    assert outdir != Path(job.result["output"]) and "simulate" in outdir.name
    assert Path(compositor(scene).nodes["GDyn Frames"].image.filepath).parent == outdir / "frames"
    moved = read_xy(outdir / "displacement" / f"{FRAMES - 1:04d}.exr")
    assert np.abs(moved[0]).max() > 0.05  # the push moved pixels along x
    scene.gdyn.pokes.clear()


def test_failure_and_cancel_leave_the_users_scene_untouched(gdyn, finish, poll_until, tmp_path):
    image, motion = tiny_inputs(tmp_path, 320, 200)
    scene = fresh_scene(tmp_path, 320, 200, "user work")
    scene.gdyn.source = "motion"
    scene.gdyn.motion_file = str(motion)
    tree = bpy.data.node_groups.new("user comp", "CompositorNodeTree") if bpy.app.version >= (5, 0, 0) else None
    if tree is not None:
        gdyn.compositor.set_scene_tree(scene, tree)
    else:
        scene.use_nodes = True
        tree = scene.node_tree
    user_node = tree.nodes.new("CompositorNodeRGB")
    user_node.name = "my colour"
    before = sorted(n.name for n in tree.nodes)

    failed = finish(gdyn.jobs.start_animate(scene, tmp_path / "missing.png"))
    assert failed.error.startswith("image not found") and failed.result is None

    scene.frame_end = 400
    job = gdyn.jobs.start_animate(scene, image)
    poll_until(gdyn.session.poll, lambda: job.done_units >= 1, 60, "the first frame")
    job.cancel()
    finish(job)
    assert job.error == "cancelled"
    assert sorted(n.name for n in tree.nodes) == before and tree.nodes["my colour"] == user_node
    assert scene.gdyn.last_output == ""
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").iterdir())


@pytest.mark.slow
def test_dead_backend_is_reported_and_restarted(gdyn, finish, poll_until, tmp_path):
    image, motion = tiny_inputs(tmp_path, 320, 200)
    scene = fresh_scene(tmp_path, 320, 200, "dead backend")
    scene.gdyn.source, scene.gdyn.motion_file = "motion", str(motion)
    scene.frame_end = 400
    job = gdyn.jobs.start_animate(scene, image)
    poll_until(gdyn.session.poll, lambda: job.done_units >= 1, 60, "the first frame")
    old_pid = gdyn.session.client().pid
    os.kill(old_pid, signal.SIGKILL)
    finish(job, timeout=30)
    assert job.error.startswith("the backend process stopped") and compositor(scene) is None
    scene.frame_end = FRAMES
    again = finish(gdyn.jobs.start_animate(scene, image))
    assert again.error is None and gdyn.session.client().pid != old_pid
    assert compositor(scene).nodes["GDyn Frames"].frame_duration == FRAMES


def test_operators_from_a_script(gdyn, wait_idle, tmp_path):
    """The operators as a script calls them (no window: they start the job, the poll finishes it)."""
    image_file, motion = tiny_inputs(tmp_path)
    scene = fresh_scene(tmp_path, 48, 32, "script", active=True)
    with pytest.raises(RuntimeError, match="open a photo in the Image Editor first"):
        bpy.ops.gdyn.animate()
    image = bpy.data.images.load(str(image_file))
    scene.gdyn.source, scene.gdyn.motion_file = "motion", str(motion)
    assert bpy.ops.gdyn.animate(image=image.name) == {"FINISHED"}
    wait_idle()
    outdir = Path(scene.gdyn.last_output)
    assert len(list((outdir / "frames").glob("*.png"))) == FRAMES
    assert compositor(scene).nodes["GDyn Frames"].image.filepath.startswith(str(outdir))

    assert bpy.ops.gdyn.add_poke() == {"FINISHED"}
    assert tuple(scene.gdyn.pokes[0].location) == (24.0, 16.0)  # the middle of the 48x32 photo
    assert bpy.ops.gdyn.simulate(image=image.name) == {"FINISHED"}
    wait_idle()
    assert "simulate" in Path(scene.gdyn.last_output).name
    assert bpy.ops.gdyn.remove_poke(index=0) == {"FINISHED"} and len(scene.gdyn.pokes) == 0

    scene.gdyn.export_format, scene.gdyn.export_path = "MP4", str(tmp_path / "plate")
    assert bpy.ops.gdyn.export_loop(image=image.name) == {"FINISHED"}
    wait_idle()
    assert (tmp_path / "plate.mp4").stat().st_size > 0
    assert len(list((tmp_path / "plate" / "frames").glob("*.png"))) == FRAMES
    assert bpy.ops.gdyn.export_loop(image=image.name) == {"FINISHED"}  # never overwrites
    wait_idle()
    assert (tmp_path / "plate_001.mp4").is_file() and (tmp_path / "plate.mp4").is_file()


def test_two_quick_animates_get_separate_outputs(gdyn, finish, tmp_path):
    image, motion = tiny_inputs(tmp_path)
    scene = fresh_scene(tmp_path, 48, 32, "twice")
    scene.gdyn.source, scene.gdyn.motion_file = "motion", str(motion)
    first, second = gdyn.jobs.start_animate(scene, image), gdyn.jobs.start_animate(scene, image)
    finish(first)
    finish(second)
    outputs = {first.result["output"], second.result["output"]}
    assert len(outputs) == 2 and all(len(list((Path(o) / "frames").iterdir())) == FRAMES for o in outputs)


@pytest.mark.slow
def test_preset_menu_lists_the_backends_presets_and_files_keep_the_name(gdyn, wait_idle, tmp_path, monkeypatch):
    """Issue 11, item 6: a saved 'water_shimmer' stays 'water_shimmer' when a later backend offers
    one more preset (one that sorts first, so every index after it shifts)."""
    older, newer = tmp_path / "older", tmp_path / "newer"
    for folder in (older, newer):
        shutil.copytree(PRESETS, folder, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    (newer / "aaa_still_air.toml").write_text(
        (older / "gentle_breeze.toml").read_text().replace('label = "Gentle breeze"', 'label = "Still air"'))

    def start_backend(presets_folder: Path) -> list[tuple[str, str, str]]:
        """A fresh backend offering the presets in `presets_folder`; the menu's (name, label, description)."""
        gdyn.session.shutdown()
        monkeypatch.setenv("GDYN_PRESETS", str(presets_folder))
        assert bpy.ops.gdyn.check_backend() == {"FINISHED"}
        wait_idle()
        return [item[:3] for item in gdyn.presets.menu_items(bpy.context.scene.gdyn.preset_name)]

    def labelled(folder: Path) -> list[tuple[str, str, str]]:
        files = sorted(folder.glob("*.toml"))
        return [(p.stem, *(tomllib.loads(p.read_text())[k] for k in ("label", "description"))) for p in files]

    bpy.ops.wm.read_homefile(use_empty=True)
    try:
        assert start_backend(older) == labelled(older)
        settings = bpy.context.scene.gdyn
        settings.preset = "water_shimmer"
        assert settings.preset_name == "water_shimmer"
        old_number = gdyn.presets.number_of("water_shimmer")
        saved = tmp_path / "sway.blend"
        bpy.ops.wm.save_as_mainfile(filepath=str(saved))

        menu = start_backend(newer)
        assert menu == labelled(newer) and menu[0][0] == "aaa_still_air"
        assert menu[old_number][0] != "water_shimmer"  # what a stored index would now read
        bpy.ops.wm.open_mainfile(filepath=str(saved))
        settings = bpy.context.scene.gdyn
        assert settings.preset == settings.preset_name == "water_shimmer"
        request = gdyn.params.animate_params(bpy.context.scene, tmp_path / "photo.png", tmp_path / "out")
        assert request["preset"] == "water_shimmer"
    finally:
        gdyn.session.shutdown()  # the next backend reads the shipped presets again
        bpy.ops.wm.read_homefile(use_empty=True)


QUIT_SCRIPT = """
import sys, time
sys.path.insert(0, sys.argv[1])
import bpy
import addon_utils  # on the path once bpy is imported
module = addon_utils.enable("addon", default_set=True, handle_error=None)
bpy.context.preferences.addons["addon"].preferences.backend_python = sys.argv[2]
assert bpy.ops.gdyn.check_backend() == {"FINISHED"}
deadline = time.monotonic() + 120
while module.session.busy() and time.monotonic() < deadline:
    module.session.poll()
    time.sleep(0.01)
assert not module.session.busy(), "the backend did not answer"
if sys.argv[3] == "disable":
    addon_utils.disable("addon", default_set=True)  # stops the backend; its threads still run
print("quitting")
"""


@pytest.mark.parametrize("how", ["disable", "running"])
def test_blender_quits_cleanly_right_after_the_backend_answered(tmp_path, how):
    """Quit Blender (here: its Python exits) while the backend's reader threads still run, after
    disabling the add-on or with the backend running: exit status 0. bpy 4.2 crashed in this exit
    (SIGSEGV freeing its panels after Python had finalized) and 4.5 hung, until the add-on ended its
    backends and threads at exit."""
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", QUIT_SCRIPT, str(root), BACKEND_PYTHON, how],
                          capture_output=True, text=True, timeout=120)  # a hang fails here
    assert "quitting" in proc.stdout, proc.stderr[-2000:]
    assert proc.returncode == 0, f"exit status {proc.returncode}: {proc.stderr[-2000:]}"
