"""Shared fixtures: real photos from ../shared/data (skip cleanly when absent)."""

import sys
from pathlib import Path

import pytest

import gdyn_backend  # noqa: F401  (sets OpenCV/OpenMP environment before torch loads)

sys.path.insert(0, str(Path(__file__).parent))  # tests/synthetic.py

from synthetic import SHARED_STILLS  # noqa: E402



@pytest.fixture
def shared_stills() -> Path:
    """Folder of the real test photos; skips when ../shared/data is not beside the checkout."""
    if not SHARED_STILLS.is_dir():
        pytest.skip("../shared/data/stills is absent (it is not part of the project)")
    return SHARED_STILLS
