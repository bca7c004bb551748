"""The add-on's UI on this bpy, where no window can exist: panels drawn into a recording stand-in
layout that checks every call against this Blender's RNA (function, keywords, property, operator,
icon), and the modal operators driven with stand-in events, windows and a region whose view
mapping is known. Everything behind them (scenes, images, jobs, the backend) is real.
"""

from __future__ import annotations

import sys
import time
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest
from backend_side import BACKEND_PYTHON, tiny_inputs
from standins import Event as MouseAt
from standins import StandInArea, StandInRegion, known_region, stand_in_python

bpy = pytest.importorskip("bpy")

UILAYOUT = bpy.types.UILayout.bl_rna.functions
ICONS = set(UILAYOUT["label"].parameters["icon"].enum_items.keys())
SUBLAYOUTS = {"row", "column", "box", "split", "column_flow", "grid_flow"}


class Recorder:
    """A stand-in `UILayout`: records (function, arguments by name) in `calls` and fails at once on
    anything this Blender would refuse: an unknown function or keyword, a property its data lacks,
    an unregistered operator or UI list, a property set on an operator that it lacks, an unknown icon."""

    def __init__(self, calls: list):
        self.calls = calls

    def __getattr__(self, name):
        function = UILAYOUT.get(name)
        assert function is not None, f"UILayout.{name} does not exist in bpy {bpy.app.version_string}"
        params = [p.identifier for p in function.parameters]

        def call(*args, **kwargs):
            assert len(args) <= len(params) and not set(kwargs) - set(params), (name, args, kwargs)
            given = {**dict(zip(params, args)), **kwargs}
            self.calls.append((name, given))
            if given.get("icon"):
                assert given["icon"] in ICONS, f"icon {given['icon']} unknown to bpy {bpy.app.version_string}"
            for data, prop in (("data", "property"), ("search_data", "search_property"), ("dataptr", "propname"),
                               ("active_dataptr", "active_propname")):
                if data in given:
                    assert given[prop] in given[data].bl_rna.properties, f"{given[data]} has no {given[prop]}"
            if name == "template_list":
                assert hasattr(bpy.types, given["listtype_name"])
            if name == "operator":
                return OperatorProperties(given["operator"])
            return Recorder(self.calls) if name in SUBLAYOUTS else None

        return call

    def texts(self, function: str = "label") -> list[str]:
        return [given.get("text", "") for name, given in self.calls if name == function]

    def operators(self) -> list[str]:
        return [given["operator"] for name, given in self.calls if name == "operator"]

    def props(self) -> list[str]:
        return [given["property"] for name, given in self.calls if name == "prop"]


class OperatorProperties:
    """What `layout.operator()` returns: setting a property it lacks fails."""

    def __init__(self, idname: str):
        module, name = idname.split(".")
        rna = getattr(getattr(bpy.ops, module), name).get_rna_type()  # fails when not registered
        object.__setattr__(self, "_names", set(rna.properties.keys()))

    def __setattr__(self, name, value):
        assert name in self._names, f"the operator has no property {name}"


def draw(panel, context=None) -> Recorder:
    layout = Recorder([])
    panel.draw(SimpleNamespace(layout=layout), context or bpy.context)
    return layout


@pytest.fixture
def scene(gdyn, tmp_path):
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    scene.frame_start, scene.frame_end = 1, 6
    scene.gdyn.output_dir = str(tmp_path / "outputs")
    return scene


@pytest.fixture
def long_job(gdyn, scene, finish, poll_until, tmp_path):
    """A real Animate that runs for a while (400 frames of 320x200), cancelled after the test."""
    still, motion = tiny_inputs(tmp_path, 320, 200)
    scene.frame_end = 400
    scene.gdyn.source, scene.gdyn.motion_file = "motion", str(motion)
    job = gdyn.jobs.start_animate(scene, still)
    poll_until(gdyn.session.poll, lambda: job.done_units >= 1, 60, "the first frame")
    yield job
    job.cancel()
    finish(job)


@pytest.mark.slow
def test_main_panel_draws_every_branch(gdyn, scene, tmp_path, long_job, finish):
    main = bpy.types.GDYN_PT_main
    for source, use_scene_range in [(s, r) for s in ("procedural", "motion", "model") for r in (True, False)]:
        scene.gdyn.source, scene.gdyn.use_scene_range = source, use_scene_range
        layout = draw(main)
        wanted = {"procedural": "preset", "motion": "motion_file", "model": "checkpoint"}[source]
        assert wanted in layout.props() and ("frames" in layout.props()) != use_scene_range
        assert {"output_dir", "match_photo", "use_sequencer"} <= set(layout.props())
        assert "gdyn.animate" in layout.operators()
    # a job runs: its progress and a Cancel button; the job buttons are greyed (poll)
    busy = draw(main)
    assert "gdyn.cancel_jobs" in busy.operators()
    assert any(text.startswith("GDyn Animate: rendering ") for text in busy.texts())
    assert not bpy.ops.gdyn.animate.poll() and not bpy.ops.gdyn.simulate.poll()
    assert not bpy.ops.gdyn.export_loop.poll() and bpy.ops.gdyn.cancel_jobs.poll()
    long_job.cancel()
    finish(long_job)
    idle = draw(main)
    assert "gdyn.cancel_jobs" not in idle.operators() and bpy.ops.gdyn.animate.poll()
    # unsaved file, '//' output: says where outputs go; saved: says nothing
    scene.gdyn.output_dir = "//gdyn/"
    assert "Unsaved file: outputs go to the temp folder" in draw(main).texts()
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "saved.blend"))
    assert "Unsaved file: outputs go to the temp folder" not in draw(main).texts()


def test_pokes_panel_and_list_draw_every_branch(gdyn, scene):
    pokes = bpy.types.GDYN_PT_pokes
    empty = draw(pokes)
    assert [g["listtype_name"] for n, g in empty.calls if n == "template_list"] == ["GDYN_UL_pokes"]
    assert "force" not in empty.props()  # no active poke: no details
    for kind in ("FORCE", "DRAG"):
        poke = scene.gdyn.pokes.add()
        poke.name, poke.kind = f"{kind} poke", kind
        scene.gdyn.active_poke = len(scene.gdyn.pokes) - 1
        layout = draw(pokes)
        assert {"kind", "frame", "duration", "location", "force"} <= set(layout.props())
        assert {"gdyn.add_poke", "gdyn.drag_poke", "gdyn.remove_poke", "gdyn.simulate"} <= set(layout.operators())
        item = Recorder([])
        bpy.types.GDYN_UL_pokes.draw_item(None, bpy.context, item, scene.gdyn, poke, 0, scene.gdyn, "active_poke", 0)
        assert item.props() == ["enabled", "name"] and item.texts() == [f"frame {poke.frame}"]
    scene.gdyn.active_poke = 5  # out of range (pokes removed elsewhere): no details, no error
    assert "force" not in draw(pokes).props()
    export = draw(bpy.types.GDYN_PT_export)
    assert export.props() == ["export_format", "export_path"] and export.operators() == ["gdyn.export_loop"]


@pytest.fixture
def private_folder(gdyn, monkeypatch, tmp_path, addon_zip):
    """The extension's user folder in tmp_path, and the add-on carrying the built wheel."""
    folder = tmp_path / "user"
    wheels = tmp_path / "extension"
    with zipfile.ZipFile(addon_zip) as archive:
        archive.extractall(wheels)
    monkeypatch.setattr(gdyn.environment, "user_folder", lambda create=False: folder)
    monkeypatch.setattr(gdyn.environment, "bundled_wheel", lambda: next(wheels.glob("backend/*.whl")))
    return folder


@pytest.mark.slow
def test_preferences_draw_every_branch(gdyn, monkeypatch, private_folder, finish, poll_until, tmp_path):
    prefs = bpy.context.preferences.addons["addon"].preferences

    def drawn() -> Recorder:
        layout = Recorder([])
        gdyn.panels.draw_preferences(layout, prefs)
        assert {"setup_python", "backend_python"} <= set(layout.props())
        return layout

    without = Recorder([])
    monkeypatch.setattr(gdyn.environment, "bundled_wheel", lambda: None)
    gdyn.panels.draw_preferences(without, prefs)
    assert any("carries no backend" in text for text in without.texts())
    assert not bpy.ops.gdyn.setup_backend.poll()
    monkeypatch.undo()
    monkeypatch.setattr(gdyn.environment, "user_folder", lambda create=False: private_folder)
    monkeypatch.setattr(gdyn.environment, "bundled_wheel",
                        lambda: next((tmp_path / "extension").glob("backend/*.whl")))
    fresh = drawn()
    assert fresh.operators()[0] == "gdyn.setup_backend" and bpy.ops.gdyn.setup_backend.poll()
    assert not bpy.ops.gdyn.update_backend.poll()  # nothing to update yet

    env = private_folder / "env"
    env.mkdir(parents=True)
    (env / "gdyn-setup.json").write_text('{"gdyn": "%s"}' % gdyn.environment.ADDON_VERSION)
    current = drawn()
    assert f"Private backend: gdyn {gdyn.environment.ADDON_VERSION}" in current.texts()
    (env / "gdyn-setup.json").write_text('{"gdyn": "0.0.9"}')
    outdated = drawn()
    assert "gdyn.update_backend" in outdated.operators() and bpy.ops.gdyn.update_backend.poll()
    assert f"The add-on is {gdyn.environment.ADDON_VERSION} but its backend has gdyn 0.0.9" in outdated.texts()

    # The private python answers as gdyn 0.0.9 (protocol 2): Check Backend says to press Update Backend.
    old = stand_in_python(env / "bin", f'exec "{BACKEND_PYTHON}" -c "import gdyn_backend.server as s; '
                                        "s.__version__ = '0.0.9'; from gdyn_backend.cli import main; "
                                        "raise SystemExit(main(['serve']))\"")
    prefs.backend_python = old
    try:
        finish(gdyn.session.request("info", {}))
        note = gdyn.session.version_note()
        assert note == (f"the backend has gdyn 0.0.9 but this add-on is {gdyn.environment.ADDON_VERSION}: "
                        "press Update Backend in Preferences > Add-ons > GDyn")
        assert note in drawn().texts()
    finally:
        prefs.backend_python = BACKEND_PYTHON
        gdyn.session.stop_backend()

    # A set-up runs (its python hangs at the first step): progress and Cancel, greyed job buttons.
    setup = gdyn.environment.start(stand_in_python(tmp_path / "slow", "exec sleep 60"))
    try:
        poll_until(gdyn.environment.poll, lambda: setup.stage == "checking the Python", 30, "the first step")
        running = drawn()
        assert "gdyn.cancel_setup" in running.operators()
        assert running.texts()[0].startswith("GDyn Set Up Backend: checking the Python 0/5")
        assert not bpy.ops.gdyn.animate.poll() and not bpy.ops.gdyn.check_backend.poll()
    finally:
        setup.cancel()
        poll_until(gdyn.environment.poll, lambda: setup.finished, 30, "the cancel")
    assert setup.error == "cancelled" and not (private_folder / "env.partial").exists()


@dataclass
class StandInWindowManager:
    """The window manager's progress and timer calls, recorded (no window exists here)."""

    calls: list = field(default_factory=list)
    windows: tuple = ()

    def __getattr__(self, name):
        return lambda *args, **kwargs: self.calls.append(name)


@dataclass
class StandInWorkspace:
    status: list = field(default_factory=list)

    def status_text_set(self, text):
        self.status.append(text)


def job_context(playing: bool = False):
    area = SimpleNamespace(x=300, y=20, width=600, height=400, type="IMAGE_EDITOR")
    return SimpleNamespace(window_manager=StandInWindowManager(), workspace=StandInWorkspace(), area=area,
                           screen=SimpleNamespace(is_animation_playing=playing), window=None)


def event(kind: str, x: int = 0, y: int = 0, value: str = "PRESS"):
    return SimpleNamespace(type=kind, value=value, mouse_x=x, mouse_y=y)


class DrivenJob:
    """Drives the job operators' modal logic (`operators._JobOperator`) with a real job."""

    def __new__(cls, gdyn, job):
        class Driven(gdyn.operators._JobOperator):
            verb = "Animate"

            def report(self, kinds, text):
                self.reports.append((kinds, text))

        driven = Driven()
        driven._job, driven.reports, driven._area_rect = job, [], (300, 20, 600, 400)
        return driven


@pytest.mark.slow
def test_esc_cancels_only_over_the_jobs_editor_and_not_during_playback(gdyn, long_job, finish):
    op, context = DrivenJob(gdyn, long_job), job_context()
    assert op.modal(context, event("ESC", 100, 100)) == {"PASS_THROUGH"}  # over another editor
    assert op.modal(job_context(playing=True), event("ESC", 400, 100)) == {"PASS_THROUGH"}  # stops playback
    assert op.modal(context, event("TIMER")) == {"RUNNING_MODAL"} and not long_job.cancel_requested
    assert context.workspace.status[-1].startswith("GDyn Animate: rendering ")
    assert op.modal(context, event("ESC", 400, 100)) == {"RUNNING_MODAL"} and long_job.cancel_requested
    finish(long_job)
    assert op.modal(context, event("TIMER")) == {"CANCELLED"}
    assert op.reports == [({"WARNING"}, "GDyn: Animate cancelled; nothing was written")]
    assert "progress_end" in context.window_manager.calls and context.workspace.status[-1] is None


def test_cancel_when_blender_ends_the_modal_cleans_up_and_stops_the_job(gdyn, long_job, finish):
    op, context = DrivenJob(gdyn, long_job), job_context()
    op._timer = "the window timer"
    op.cancel(context)  # what Blender calls on file load or when the window closes
    assert context.window_manager.calls == ["progress_end", "event_timer_remove"]
    assert context.workspace.status == [None] and long_job.cancel_requested
    assert finish(long_job).error == "cancelled"


class DrivenDrag:
    """Drives Drag Point's modal logic (`operators._DragPoint`)."""

    def __new__(cls, gdyn):
        class Driven(gdyn.operators._DragPoint):
            def report(self, kinds, text):
                self.reports.append((kinds, text))

        driven = Driven()
        driven.reports = []
        return driven


@dataclass
class StandInImageArea(StandInArea):
    type: str = "IMAGE_EDITOR"
    header: list = field(default_factory=list)

    def header_text_set(self, text):
        self.header.append(text)


def drag_context(photo, region):
    sidebar = StandInRegion("UI", 900, 20, 200, 400)
    area = StandInImageArea([StandInRegion("HEADER", 300, 420, 800, 20), region, sidebar])
    return SimpleNamespace(area=area, region=sidebar, scene=bpy.context.scene, screen=None,
                           space_data=SimpleNamespace(type="IMAGE_EDITOR", image=photo),
                           window_manager=StandInWindowManager())


def region_xy(region, i: float, j: float) -> tuple[int, int]:
    """Window pixel over photo pixel (i, j) of `known_region` (scale 4, photo 64 x 48 at (100, 50))."""
    return int(region.x + 100 + 4 * (i + 0.5)), int(region.y + 50 + 4 * (48 - j - 0.5))


def test_drag_point_stores_the_pressed_photo_pixel_and_the_drag(gdyn, scene, tmp_path):
    still, _ = tiny_inputs(tmp_path, 64, 48)
    photo = bpy.data.images.load(str(still))
    region = known_region()
    op, context = DrivenDrag(gdyn), drag_context(photo, region)
    scene.frame_current, scene.gdyn.drag_hold = 3, 9
    assert op.invoke(context, MouseAt(950, 100)) == {"RUNNING_MODAL"}  # pressed in the sidebar
    assert op.modal(context, event("LEFTMOUSE", 950, 100)) == {"PASS_THROUGH"}  # the sidebar's
    assert op.modal(context, event("LEFTMOUSE", *region_xy(region, 10, 5))) == {"RUNNING_MODAL"}
    assert op.modal(context, event("MOUSEMOVE", *region_xy(region, 14, 3), value="NOTHING")) == {"RUNNING_MODAL"}
    assert context.area.header[-1].startswith("GDyn drag: (10, 5) by (+4.0, -2.0) px")
    assert op.modal(context, event("LEFTMOUSE", *region_xy(region, 18, 1), "RELEASE")) == {"FINISHED"}
    poke = scene.gdyn.pokes[scene.gdyn.active_poke]
    assert (poke.kind, poke.frame, poke.duration) == ("DRAG", 3, 9)
    assert tuple(poke.location) == pytest.approx((10, 5), abs=0.13) and tuple(poke.force) == pytest.approx((8, -4), abs=0.26)
    assert context.area.header[-1] is None and op.reports == []


def test_drag_point_refuses_a_press_off_the_photo_or_in_a_view_without_numbers(gdyn, scene, tmp_path):
    still, _ = tiny_inputs(tmp_path, 64, 48)
    photo = bpy.data.images.load(str(still))
    for region, where in ((known_region(), (310, 60)), (known_region(scale=0.0), (500, 200))):
        op, context = DrivenDrag(gdyn), drag_context(photo, region)
        op.invoke(context, MouseAt(950, 100))
        assert op.modal(context, event("LEFTMOUSE", *where)) == {"RUNNING_MODAL"}
        assert op.reports == [({"WARNING"}, "GDyn: that point is not on the photo: press on the image itself")]
        assert op.modal(context, event("LEFTMOUSE", *where, "RELEASE")) == {"PASS_THROUGH"} and not scene.gdyn.pokes
        assert op.modal(context, event("ESC")) == {"CANCELLED"} and context.area.header[-1] is None
    assert len(scene.gdyn.pokes) == 0


def test_path_properties_take_blend_relative_paths_without_warnings(gdyn, scene):
    paths = ("motion_file", "checkpoint", "output_dir", "last_output", "export_path")
    supported = bpy.app.version >= (4, 5, 0)  # 4.2-4.4 do not know the flag (and do not warn)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in paths:
            setattr(scene.gdyn, name, "//somewhere/")
        prefs = bpy.context.preferences.addons["addon"].preferences
        before = prefs.setup_python
        prefs.setup_python = "//python3.11"
        prefs.setup_python = before
    if supported:
        for name in paths:
            assert scene.gdyn.bl_rna.properties[name].is_path_supports_blend_relative


@pytest.mark.slow
def test_switching_away_from_a_hung_backend_never_blocks(gdyn, scene, tmp_path, poll_until):
    """Issue 11 item 10: a backend that answers the handshake and then nothing else."""
    hung = stand_in_python(tmp_path / "hung", f'exec "{sys.executable}" -c "import json, sys, time; '
                                              "m = json.loads(sys.stdin.readline()); "
                                              "print(json.dumps({'id': m['id'], 'result': {'pong': True, "
                                              f"'protocol': {gdyn.backend_client.PROTOCOL_VERSION}, "
                                              "'version': 'hung'}}), flush=True); time.sleep(600)\"")
    prefs = bpy.context.preferences.addons["addon"].preferences
    prefs.backend_python = hung
    try:
        job = gdyn.session.request("info", {})
        poll_until(gdyn.session.poll, lambda: gdyn.session.client().backend is not None, 30, "the handshake")
        pid = gdyn.session.client().pid
        prefs.backend_python = BACKEND_PYTHON
        start = time.perf_counter()
        gdyn.session.client()  # the preference changed: the hung backend is stopped
        assert time.perf_counter() - start < 0.5
        assert job.finished and job.error == "the backend was stopped"
        # the reaper kills it after its grace (3 s) and collects it
        poll_until(lambda: None, lambda: not Path(f"/proc/{pid}").exists(), 10, "the hung backend's end")
    finally:
        prefs.backend_python = BACKEND_PYTHON


def test_check_backend_names_the_cpu_renderers_path(gdyn):
    """The report says which CPU renderer the backend runs, and why it is the slower one."""
    info = {"gdyn": "0.1.0", "torch": "2.13.0", "device": "cpu", "python": "3.11.7"}
    native = gdyn.operators.describe_backend({**info, "cpu renderer": "native kernel (cc, /home/a/.cache/gdyn/k.so)"})
    portable = gdyn.operators.describe_backend({**info, "cpu renderer": "portable (no C compiler found: set CC)"})
    assert "CPU renderer native kernel," in native and ".cache" not in native
    assert "CPU renderer portable (no C compiler found: set CC)," in portable

