"""A plain (non-editable) install works like the checkout: the wheel carries every module and the presets."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from gdyn_backend.presets import list_presets

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # builds a wheel and animates 5 times in fresh processes (~30 s)


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory) -> Path:
    """`pip wheel .` installed (no -e, no dependencies) into a folder of its own; returns that folder."""
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp / "dist"), str(ROOT)], check=True, capture_output=True)
    (wheel,) = (tmp / "dist").glob("gdyn-*.whl")
    target = tmp / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                    str(wheel)], check=True, capture_output=True)
    return target


def test_wheel_holds_every_module_and_preset(installed_wheel):
    for pattern in ("*.py", "*.c"):  # modules, and the native kernel's source
        sources = {p.relative_to(ROOT).as_posix() for p in (ROOT / "gdyn_backend").rglob(pattern)}
        shipped = {p.relative_to(installed_wheel).as_posix() for p in (installed_wheel / "gdyn_backend").rglob(pattern)}
        assert sources == shipped and sources
    presets = sorted(p.stem for p in (installed_wheel / "gdyn_backend" / "preset_files").glob("*.toml"))
    assert presets == list_presets() and len(presets) >= 5


def test_installed_wheel_animates_with_every_preset_outside_the_checkout(installed_wheel, tmp_path):
    """Run from a folder outside the checkout, importing the installed copy (not the editable one)."""
    env = {**os.environ, "PYTHONPATH": str(installed_wheel)}
    env.pop("GDYN_PRESETS", None)
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = subprocess.run([sys.executable, "-c", "import gdyn_backend; print(gdyn_backend.__file__)"],
                           cwd=work, env=env, capture_output=True, text=True, check=True).stdout
    assert Path(where.strip()).is_relative_to(installed_wheel)
    subprocess.run([sys.executable, "-m", "gdyn_backend", "example", "still.png", "--size", "64x40"],
                   cwd=work, env=env, check=True, capture_output=True)
    for name in list_presets():
        done = subprocess.run([sys.executable, "-m", "gdyn_backend", "animate", "still.png", "-o", name,
                               "--preset", name, "--frames", "3"], cwd=work, env=env,
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert len(list((work / name / "frames").glob("*.png"))) == 3
    with zipfile.ZipFile(next((installed_wheel.parent / "dist").glob("*.whl"))) as archive:
        assert not [n for n in archive.namelist() if n.startswith(("tests/", "addon/"))]
