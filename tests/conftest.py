"""Shared fixtures and helpers: real photos and clips from ../shared/data (skip cleanly when
absent), the one "poll until done" helper, a `gdyn serve` subprocess (`serve`), the built add-on
zip, and the repository root on sys.path (`addon`, and `gdyn_backend` from source where it is
not installed: the bpy matrix)."""

import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))  # tests/synthetic.py, tests/backend_side.py
sys.path.insert(0, str(ROOT))  # the Blender add-on, `addon` (not an installed package)

from backend_process import Serve  # noqa: E402
from backend_side import BACKEND_PYTHON  # noqa: E402

import gdyn_backend  # noqa: E402, F401  (sets OpenCV/OpenMP environment before torch loads)

try:
    from synthetic import SHARED_STILLS
except ImportError:  # no OpenCV here (the bpy matrix runs only the add-on's tests)
    SHARED_STILLS = None
POLL_STEP_S = 0.01
pytest_plugins = ["blender_fixtures"]  # the Blender tests' fixtures


@pytest.fixture
def shared_stills() -> Path:
    """Folder of the real test photos; skips when ../shared/data is not beside the checkout."""
    if SHARED_STILLS is None or not SHARED_STILLS.is_dir():
        pytest.skip("../shared/data/stills is absent (it is not part of the project)")
    return SHARED_STILLS


@pytest.fixture
def shared_videos() -> Path:
    """Folder of the real test clips; skips when ../shared/data is not beside the checkout."""
    videos = SHARED_STILLS.parent / "videos" if SHARED_STILLS is not None else None
    if videos is None or not videos.is_dir():
        pytest.skip("../shared/data/videos is absent (it is not part of the project)")
    return videos


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


@pytest.fixture
def serve():
    """A running `gdyn serve` process (`backend_process.Serve`), shut down after the test."""
    server = Serve()
    yield server
    server.close()
    if server.proc.poll() is None:
        server.proc.kill()


@pytest.fixture(scope="session")
def addon_zip(tmp_path_factory) -> Path:
    """The extension zip as build_addon.py makes it (with the backend's interpreter, which has
    gdyn's build requirements)."""
    out = tmp_path_factory.mktemp("dist") / "gdyn_addon.zip"
    proc = subprocess.run([BACKEND_PYTHON, str(ROOT / "build_addon.py"), "-o", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return out

