"""Issue 15: Set Up Backend makes the backend's private environment from the zip alone.

The quick tests drive `addon.backend_setup.Setup` with the wheel build_addon.py puts in the zip:
a Python that is not 3.11, a cancel halfway, no reachable package registry and a full disk each
leave no environment and one line. The `slow` test installs the zip into a real bpy (its own user
folder), presses Set Up Backend against this machine's Python 3.11 and registries as pip is
configured here (torch 2.13.0 from a local wheel), then animates through what it made.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from backend_side import tiny_inputs
from standins import stand_in_python

bpy = pytest.importorskip("bpy")

from addon import backend_setup  # noqa: E402


@pytest.fixture(scope="module")
def wheel(addon_zip, tmp_path_factory) -> Path:
    """The gdyn wheel inside the built zip."""
    folder = tmp_path_factory.mktemp("extension")
    with zipfile.ZipFile(addon_zip) as archive:
        archive.extractall(folder)
    return next(folder.glob("backend/gdyn-*.whl"))


def python_311() -> str:
    """A Python 3.11 of this machine (this one, or python3.11 on the PATH)."""
    found = sys.executable if sys.version_info[:2] == (3, 11) else shutil.which("python3.11")
    if found is None:
        pytest.skip("no Python 3.11 on this machine")
    return found


def other_python(tmp_path: Path) -> tuple[str, str]:
    """(a Python that is not 3.11, its version): this one, another this machine has, or, where
    there is none, a stand-in that answers as 3.12.1."""
    if sys.version_info[:2] != (3, 11):
        return sys.executable, "%d.%d.%d" % sys.version_info[:3]
    pyenv = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    for candidate in sorted(glob.glob(f"{pyenv}/versions/3.1[2-9]*/bin/python3")):
        found = subprocess.run([candidate, "-c", backend_setup.CHECK_PYTHON], capture_output=True, text=True)
        if found.returncode == 0:
            return candidate, found.stdout.strip()
    return stand_in_python(tmp_path / "py312", "echo 3.12.1"), "3.12.1"


def run(setup: backend_setup.Setup, poll_until, timeout: float = 120.0) -> backend_setup.Setup:
    poll_until(setup.poll, lambda: setup.finished, timeout, f"the set-up ({setup.stage})")
    return setup


def assert_nothing_left(folder: Path) -> None:
    assert not (folder / "env").exists() and not (folder / "env.partial").exists()


@pytest.mark.slow
def test_a_python_that_is_not_3_11_is_refused_with_one_line(wheel, tmp_path, poll_until):
    python, version = other_python(tmp_path)
    setup = run(backend_setup.Setup(python, tmp_path / "user", wheel, log=lambda line: None), poll_until)
    assert setup.error == (f"{python} is Python {version}, but the gdyn backend needs Python 3.11: install "
                           "Python 3.11 and choose its python under Setup Python in Preferences > Add-ons > GDyn, "
                           "then press Set Up Backend")
    assert_nothing_left(tmp_path / "user")
    missing = run(backend_setup.Setup(str(tmp_path / "no python"), tmp_path / "user", wheel, log=lambda line: None),
                  poll_until)
    assert missing.error.startswith(f"cannot run {tmp_path / 'no python'}: No such file or directory; "
                                    "choose a Python 3.11 under Setup Python")
    assert_nothing_left(tmp_path / "user")


@pytest.mark.slow
def test_cancel_halfway_leaves_no_environment(wheel, tmp_path, poll_until):
    said = []
    setup = backend_setup.Setup(python_311(), tmp_path / "user", wheel, log=said.append)
    poll_until(setup.poll, lambda: setup.stage == "installing torch" or setup.finished, 120, "the torch step")
    assert setup.error is None and (tmp_path / "user" / "env.partial").is_dir()  # a venv, half-made
    pip = setup._proc
    setup.cancel()
    run(setup, poll_until, 60)
    assert setup.error == "cancelled" and pip.poll() is not None
    assert_nothing_left(tmp_path / "user")
    assert any("venv" in line for line in said)  # the steps' commands reach the console


@pytest.mark.slow
def test_no_reachable_registry_is_one_line_and_leaves_nothing(wheel, tmp_path, poll_until, monkeypatch):
    """pip, as configured for a machine whose registry refuses connections (a closed port here)."""
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # no find-links or local indexes from pip.conf
    for name in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_NO_INDEX"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "5")
    setup = run(backend_setup.Setup(python_311(), tmp_path / "user", wheel, log=lambda line: None), poll_until)
    assert setup.error == ("installing torch failed: pip could not download it (no network, or the package "
                           "registry is unreachable): connect to the internet (or set pip's proxy) and press "
                           "Set Up Backend again")
    assert_nothing_left(tmp_path / "user")


@pytest.fixture
def small_disk(tmp_path):
    """A 32 MiB file system (a tmpfs; needs root, as CI has): room for a venv, not for torch."""
    folder = tmp_path / "small disk"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small file system here: {mounted.stderr.decode().strip()}")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_leaves_nothing(wheel, small_disk, poll_until):
    setup = run(backend_setup.Setup(python_311(), small_disk, wheel, log=lambda line: None), poll_until, 300)
    assert setup.error == (f"installing torch failed: no disk space left for the environment in {small_disk} "
                           "(it needs about 2 GB): free some space and press Set Up Backend again")
    assert_nothing_left(small_disk)


SET_UP_AND_ANIMATE = r"""
import json, sys, time
from pathlib import Path
import bpy

zip_path, python311, still, motion, out = sys.argv[sys.argv.index("--") + 1:]
assert bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default",
                                                enable_on_install=True) == {"FINISHED"}
gdyn = sys.modules["bl_ext.user_default.gdyn"]
prefs = bpy.context.preferences.addons["bl_ext.user_default.gdyn"].preferences
assert prefs.backend_python == "" and gdyn.environment.installed() is None
prefs.setup_python = python311
assert bpy.ops.gdyn.setup_backend() == {"FINISHED"}  # started; a script polls (no timers here)
setup = gdyn.environment.running()
deadline = time.monotonic() + 1500
while not (setup.finished and (setup.check_job is None or setup.check_job.finished)):
    assert time.monotonic() < deadline, setup.stage
    gdyn.environment.poll()
    gdyn.session.poll()
    time.sleep(0.05)
assert setup.error is None, setup.error
check = setup.check_job.result
scene = bpy.context.scene
scene.frame_start, scene.frame_end = 1, 6
scene.gdyn.output_dir, scene.gdyn.source, scene.gdyn.motion_file = out, "motion", motion
job = gdyn.jobs.start_animate(scene, still)
while not job.finished:
    gdyn.session.poll()
    time.sleep(0.05)
assert job.error is None, job.error
print("RESULT " + json.dumps({
    "seconds": setup.seconds, "backend_python": prefs.backend_python, "private": str(gdyn.environment.private_python()),
    "installed": gdyn.environment.installed(), "check": check, "frames": job.outcome.count,
    "frames_node": gdyn.compositor.scene_tree(scene).nodes["GDyn Frames"].image.filepath}))
"""


@pytest.mark.slow
def test_set_up_backend_from_the_zip_alone_then_animate(addon_zip, tmp_path):
    """The README's Blender section, headless: install the zip, press Set Up Backend, Animate."""
    still, motion = tiny_inputs(tmp_path)
    env = {**os.environ, "BLENDER_USER_RESOURCES": str(tmp_path / "blender user")}  # not the real user's
    env.pop("GDYN_PYTHON", None)
    proc = subprocess.run([sys.executable, "-c", SET_UP_AND_ANIMATE, "--", str(addon_zip), python_311(), str(still),
                           str(motion), str(tmp_path / "outputs")], capture_output=True, text=True, env=env,
                          timeout=1800)
    results = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and results, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(results[-1][len("RESULT "):])
    print(f"Set Up Backend took {result['seconds']:.0f} s (venv, torch 2.13.0, gdyn wheel and its "
          "dependencies, check); shared CPU")
    assert result["backend_python"] == result["private"] and Path(result["private"]).is_file()
    assert str(tmp_path / "blender user") in result["private"]  # the extension's user folder
    assert result["installed"]["gdyn"] == result["check"]["gdyn"] == "0.1.0"
    assert result["check"]["torch"].startswith("2.13.0") and result["frames"] == 6
    assert result["frames_node"].startswith(str(tmp_path / "outputs"))
