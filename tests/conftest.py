"""Shared fixtures and helpers: real photos from ../shared/data (skip cleanly when absent),
the one "poll until done" helper, the built add-on zip, and the repository root on sys.path
(`addon`, and `gdyn_backend` from source where it is not installed: the bpy matrix)."""

import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))  # tests/synthetic.py, tests/backend_side.py
sys.path.insert(0, str(ROOT))  # the Blender add-on, `addon` (not an installed package)

import gdyn_backend  # noqa: E402, F401  (sets OpenCV/OpenMP environment before torch loads)
from backend_side import BACKEND_PYTHON  # noqa: E402

try:
    from synthetic import SHARED_STILLS
except ImportError:  # no OpenCV here (the bpy matrix runs only the add-on's tests)
    SHARED_STILLS = None
POLL_STEP_S = 0.01


@pytest.fixture
def shared_stills() -> Path:
    """Folder of the real test photos; skips when ../shared/data is not beside the checkout."""
    if SHARED_STILLS is None or not SHARED_STILLS.is_dir():
        pytest.skip("../shared/data/stills is absent (it is not part of the project)")
    return SHARED_STILLS


def _poll_until(poll: Callable[[], object], done: Callable[[], bool], timeout: float = 120.0,
                what: str = "the backend's answer") -> None:
    """Call `poll()` every 10 ms until `done()` is true; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"{what} did not come within {timeout:g} s"
        poll()
        time.sleep(POLL_STEP_S)


@pytest.fixture(scope="session")
def poll_until() -> Callable[..., None]:
    """poll_until(poll, done, timeout=120, what=...): the tests' one wait loop, always with a deadline."""
    return _poll_until


@pytest.fixture(scope="session")
def addon_zip(tmp_path_factory) -> Path:
    """The extension zip as build_addon.py makes it (with the backend's interpreter, which has
    gdyn's build requirements)."""
    out = tmp_path_factory.mktemp("dist") / "gdyn_addon.zip"
    proc = subprocess.run([BACKEND_PYTHON, str(ROOT / "build_addon.py"), "-o", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="module")
def gdyn():
    """The add-on package (real bpy), enabled like a user would, with the project's interpreter
    as backend; disabled again after the module's tests."""
    bpy = pytest.importorskip("bpy")
    import addon_utils  # ships with bpy

    module = addon_utils.enable("addon", default_set=True, handle_error=None)
    bpy.context.preferences.addons["addon"].preferences.backend_python = BACKEND_PYTHON
    yield module
    addon_utils.disable("addon", default_set=True)
    assert not hasattr(bpy.types.Scene, "gdyn")


@pytest.fixture(scope="module")
def finish(gdyn, poll_until):
    """finish(job, timeout=120): poll the add-on's one poller until the job is over; the job."""

    def finished(job, timeout: float = 120.0):
        poll_until(gdyn.session.poll, lambda: job.finished, timeout, f"the end of {job.method}")
        return job

    return finished


@pytest.fixture(scope="module")
def wait_idle(gdyn, poll_until):
    """wait_idle(): poll as a script does until the add-on's backend has nothing pending."""
    return lambda: poll_until(gdyn.session.poll, lambda: not gdyn.session.busy(), what="an idle backend")
