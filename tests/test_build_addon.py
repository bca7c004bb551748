"""build_addon.py makes an extension zip that holds the add-on and registers in real bpy."""

from __future__ import annotations

import importlib
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist") / "gdyn_addon.zip"
    proc = subprocess.run([sys.executable, str(ROOT / "build_addon.py"), "-o", str(out)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return out


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
    subprocess.run([sys.executable, str(ROOT / "build_addon.py"), "-o", str(again)], check=True,
                   capture_output=True, timeout=60)
    assert again.read_bytes() == built.read_bytes()  # reproducible


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
