"""What the add-on tests need from the backend side, also in the bpy version matrix
(tests/bpy_matrix.py), where the tests' interpreter has only bpy, pytest and numpy and the
backend stays in the project's venv: `$GDYN_BACKEND_PYTHON` (default: this interpreter).

Pictures are read back with Blender's own image loader (`read_rgb`, `read_xy`), which
tests/test_addon_blender.py checks against gdyn_backend.io where both can run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
BACKEND_PYTHON = os.environ.get("GDYN_BACKEND_PYTHON") or sys.executable
PRESETS = ROOT / "presets"  # the motion presets, which the gdyn package ships as package data


def run_backend(code: str, *args, timeout: float = 120.0) -> str:
    """Run Python `code` in the backend's interpreter with tests/ and the repository on its path
    (`sys.argv[1:]` = args as strings); its stdout. Fails the test with its stderr."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(ROOT)])}
    proc = subprocess.run([BACKEND_PYTHON, "-c", code, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def tiny_inputs(folder: Path, width: int = 48, height: int = 32) -> tuple[Path, Path]:
    """`synthetic.tiny_inputs` (a still PNG and a spectral volume in `folder`), made in this process
    when the backend's packages are here, else by the backend's interpreter."""
    try:
        from synthetic import tiny_inputs as make
    except ImportError:  # no OpenCV / gdyn_backend here: the bpy matrix
        run_backend("import sys; from pathlib import Path; from synthetic import tiny_inputs; "
                    "tiny_inputs(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))", folder, width, height)
        return folder / "still.png", folder / "motion.safetensors"
    return make(folder, width, height)


def _pixels(path: Path) -> np.ndarray:
    """The pixels of an image file as Blender loads them, float32 [H, W, 4], row 0 at the top
    (8-bit files: the stored values / 255; float EXR: the stored floats)."""
    import bpy

    image = bpy.data.images.load(str(path), check_existing=False)
    try:
        width, height = image.size
        flat = np.empty(width * height * 4, np.float32)
        image.pixels.foreach_get(flat)
    finally:
        bpy.data.images.remove(image)
    return flat.reshape(height, width, 4)[::-1]


def read_rgba(path: Path) -> np.ndarray:
    """An 8-bit PNG's RGBA in 0..1 (alpha 1 where the file has none), float32 [H, W, 4]."""
    return _pixels(path).copy()


def read_rgb(path: Path) -> np.ndarray:
    """An 8-bit PNG's RGB in 0..1, float32 [H, W, 3]."""
    return _pixels(path)[..., :3].copy()


def read_xy(path: Path) -> np.ndarray:
    """A displacement EXR's x (R) and y (G) in pixels, float32 [2, H, W]."""
    return np.moveaxis(_pixels(path)[..., :2], -1, 0).copy()
