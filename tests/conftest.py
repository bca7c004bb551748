"""Shared fixtures and helpers: real photos and clips from ../shared/data (skip cleanly when absent),
the one "poll until done" helper, a `gdyn serve` subprocess (`serve`), and the repository root on
sys.path (`addon`)."""

import sys
import time
from pathlib import Path
from typing import Callable

import pytest

import gdyn_backend  # noqa: F401  (sets OpenCV/OpenMP environment before torch loads)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))  # tests/synthetic.py
sys.path.insert(0, str(ROOT))  # the Blender add-on, `addon` (not an installed package)

from backend_process import Serve  # noqa: E402
from synthetic import SHARED_STILLS  # noqa: E402

POLL_STEP_S = 0.01


@pytest.fixture
def shared_stills() -> Path:
    """Folder of the real test photos; skips when ../shared/data is not beside the checkout."""
    if not SHARED_STILLS.is_dir():
        pytest.skip("../shared/data/stills is absent (it is not part of the project)")
    return SHARED_STILLS


@pytest.fixture
def shared_videos() -> Path:
    """Folder of the real test clips; skips when ../shared/data is not beside the checkout."""
    videos = SHARED_STILLS.parent / "videos"
    if not videos.is_dir():
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
    server = Serve()
    yield server
    server.close()
    if server.proc.poll() is None:
        server.proc.kill()
