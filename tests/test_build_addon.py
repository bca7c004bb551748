"""build_addon.py makes an extension zip that holds the add-on and its backend wheel, and
registers in real bpy."""

from __future__ import annotations

import email.parser
import importlib
import io
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from backend_side import BACKEND_PYTHON, PRESETS

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def built(addon_zip) -> Path:
    return addon_zip


@pytest.mark.slow
def test_zip_holds_manifest_and_code_but_no_presets(built, tmp_path):
    with zipfile.ZipFile(built) as archive:
        names = set(archive.namelist())
        manifest = tomllib.loads(archive.read("blender_manifest.toml").decode())
    assert manifest["id"] == "gdyn" and manifest["type"] == "add-on"
    assert manifest["blender_version_min"] == "4.2.0"
    assert {p.name for p in (ROOT / "addon").glob("*.py")} <= names
    # The Preset menu lists what the backend offers (test_addon_blender); no copy rides along.
    assert not [n for n in names if n.endswith(".toml") and n != "blender_manifest.toml"]
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    again = tmp_path / "again.zip"
    subprocess.run([BACKEND_PYTHON, str(ROOT / "build_addon.py"), "-o", str(again)], check=True,
                   capture_output=True, timeout=300)
    assert again.read_bytes() == built.read_bytes()  # reproducible, the wheel inside too


def test_zip_carries_the_backend_wheel_of_the_same_version_with_its_presets(built):
    """Issue 15: the gdyn backend rides in the zip as a wheel, versioned with the add-on."""
    with zipfile.ZipFile(built) as archive:
        manifest = tomllib.loads(archive.read("blender_manifest.toml").decode())
        wheels = [n for n in archive.namelist() if n.startswith("backend/") and n.endswith(".whl")]
        assert wheels == [f"backend/gdyn-{manifest['version']}-py3-none-any.whl"]
        wheel = zipfile.ZipFile(io.BytesIO(archive.read(wheels[0])))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = set(wheel.namelist())
    metadata = email.parser.Parser().parsestr(wheel.read(f"gdyn-{manifest['version']}.dist-info/METADATA").decode())
    assert metadata["Version"] == manifest["version"] == project["version"]
    assert sorted(metadata.get_all("Requires-Dist")[:len(project["dependencies"])]) == sorted(project["dependencies"])
    assert {f"gdyn_backend/preset_files/{p.name}" for p in PRESETS.glob("*.toml")} <= names
    assert "gdyn_backend/server.py" in names and not [n for n in names if "__pycache__" in n or n.startswith("tests/")]
    assert built.stat().st_size < 1024 * 1024  # stated in the README: about 270 KiB


def test_a_version_mismatch_stops_the_build_with_one_line(tmp_path):
    """The add-on and its wheel always match: a manifest of another version builds nothing."""
    copy = tmp_path / "gdyn"
    for name in ("addon", "gdyn_backend", "presets"):
        shutil.copytree(ROOT / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("build_addon.py", "pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, copy / name)
    manifest = copy / "addon" / "blender_manifest.toml"
    manifest.write_text(manifest.read_text().replace('version = "0.1.0"', 'version = "0.2.0"', 1))
    proc = subprocess.run([BACKEND_PYTHON, str(copy / "build_addon.py"), "-o", str(tmp_path / "out.zip")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and not (tmp_path / "out.zip").exists()
    assert proc.stderr.strip() == ("build_addon: the add-on and the backend must have one version, found "
                                   "addon/blender_manifest.toml 0.2.0, addon/__init__.py bl_info 0.1.0, "
                                   "pyproject.toml 0.1.0, gdyn_backend.__version__ 0.1.0")


def test_zip_package_imports_and_registers_in_bpy(built, tmp_path):
    bpy = pytest.importorskip("bpy")
    package = tmp_path / "site" / "gdyn_ext"
    with zipfile.ZipFile(built) as archive:
        archive.extractall(package)
    sys.path.insert(0, str(package.parent))
    try:
        module = importlib.import_module("gdyn_ext")
        module.register()
        try:
            assert bpy.types.GDYN_PT_main.bl_category == "GDyn"
            assert hasattr(bpy.context.scene, "gdyn") and bpy.ops.gdyn.animate.poll() in (True, False)
            presets = importlib.import_module("gdyn_ext.presets")  # before any backend answered:
            settings = bpy.context.scene.gdyn  # the menu shows the current value, the default
            assert settings.preset == settings.preset_name == presets.DEFAULT_PRESET == "gentle_breeze"
            assert [item[0] for item in presets.menu_items(settings.preset_name)] == ["gentle_breeze"]
        finally:
            module.unregister()
        assert not hasattr(bpy.types, "GDYN_PT_main") and not hasattr(bpy.types.Scene, "gdyn")
    finally:
        sys.path.remove(str(package.parent))


def test_addon_never_imports_torch_cv2_or_the_backend(built, tmp_path):
    pytest.importorskip("bpy")
    with zipfile.ZipFile(built) as archive:
        archive.extractall(tmp_path / "gdyn_ext")
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import bpy, gdyn_ext; gdyn_ext.register(); "
            "print(sorted(m for m in ('torch', 'cv2', 'gdyn_backend') if m in sys.modules)); "
            "gdyn_ext.unregister()")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_blenders_own_extension_tool_validates_and_installs_the_zip(built, tmp_path):
    """bpy ships Blender's extension CLI (bl_pkg/cli/blender_ext.py): it must accept the zip."""
    import importlib.util

    spec = importlib.util.find_spec("bpy")
    tools = sorted(Path(spec.origin).parent.glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py")) if spec else []
    if not tools:
        pytest.skip("bpy with Blender's extension tool is not installed")
    tool = str(tools[-1])
    check = subprocess.run([sys.executable, tool, "validate", str(built)], capture_output=True, text=True,
                           timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    (tmp_path / "repo").mkdir()
    install = subprocess.run([sys.executable, tool, "install-files", str(built), "--local-dir",
                              str(tmp_path / "repo")], capture_output=True, text=True, timeout=120)
    assert install.returncode == 0 and 'Installed "gdyn"' in install.stdout, install.stdout + install.stderr
    installed = tmp_path / "repo" / "gdyn"
    assert {p.name for p in (ROOT / "addon").glob("*.py")} <= {p.name for p in installed.iterdir()}
