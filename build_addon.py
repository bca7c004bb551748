"""Build the installable Blender extension zip of the GDyn add-on, with its backend inside.

    python build_addon.py [-o dist/gdyn_addon.zip]

The zip has `blender_manifest.toml` and the add-on's Python files at its
root (the layout `blender --command extension build` makes), so it installs
in Blender 4.2+ with Edit > Preferences > Get Extensions > Install from
Disk. It also carries the gdyn backend as a wheel of this project,
`backend/gdyn-<version>-py3-none-any.whl` (with the motion presets as its
package data), which the add-on's Set Up Backend installs into a private
environment; Blender itself never installs or imports it. The add-on and
the wheel have one version: the build stops unless the manifest, the
add-on's `bl_info`, pyproject.toml and `gdyn_backend.__version__` agree.

The wheel is built with this interpreter's pip and setuptools from a copy of
the sources (no stale build/ folder can leak into it). Entries are sorted
and time-stamped at a fixed date, in the zip and in the wheel
(SOURCE_DATE_EPOCH), so the same sources give the same bytes. The zip is
written through `gdyn_backend.io.atomic_path`: it appears whole or not at all.
"""

from __future__ import annotations

import argparse
import ast
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

import gdyn_backend
from gdyn_backend.io import atomic_path

ROOT = Path(__file__).resolve().parent
ADDON = ROOT / "addon"
FIXED_TIME = (2024, 1, 1, 0, 0, 0)  # zip entries' timestamp (reproducible builds)
SOURCE_DATE_EPOCH = "1704067200"  # the same instant for the wheel's entries
WHEEL_SOURCES = ("pyproject.toml", "README.md", "gdyn_backend", "presets")
WHEEL_FOLDER = "backend"  # where the wheel lies in the zip (environment.bundled_wheel)


def addon_version() -> str:
    """The one version of add-on and backend; SystemExit naming the files that disagree."""
    manifest = tomllib.loads((ADDON / "blender_manifest.toml").read_text(encoding="utf-8"))
    module = ast.parse((ADDON / "__init__.py").read_text(encoding="utf-8"))
    bl_info = next(ast.literal_eval(node.value) for node in module.body if isinstance(node, ast.Assign)
                   and any(getattr(t, "id", "") == "bl_info" for t in node.targets))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    versions = {"addon/blender_manifest.toml": manifest.get("version"),
                "addon/__init__.py bl_info": ".".join(map(str, bl_info["version"])),
                "pyproject.toml": project["version"], "gdyn_backend.__version__": gdyn_backend.__version__}
    if len(set(versions.values())) != 1:
        listed = ", ".join(f"{where} {version}" for where, version in versions.items())
        raise SystemExit(f"build_addon: the add-on and the backend must have one version, found {listed}")
    return project["version"]


def addon_files() -> list[tuple[Path, str]]:
    """(source file, name in the zip) for the manifest and the add-on's .py files."""
    manifest = ADDON / "blender_manifest.toml"
    if not manifest.is_file():
        raise SystemExit(f"build_addon: {manifest} is missing")
    data = tomllib.loads(manifest.read_text(encoding="utf-8"))
    for key in ("id", "version", "blender_version_min", "schema_version"):
        if key not in data:
            raise SystemExit(f"build_addon: {manifest} has no '{key}'")
    files = [(manifest, "blender_manifest.toml")]
    files += [(p, p.name) for p in sorted(ADDON.glob("*.py"))]
    if not any(name == "__init__.py" for _, name in files):
        raise SystemExit("build_addon: addon/__init__.py is missing")
    return files


def build_wheel(folder: Path) -> Path:
    """Build the gdyn wheel into `folder` from a copy of the sources; its path."""
    with tempfile.TemporaryDirectory(prefix="gdyn-wheel-") as scratch:
        source = Path(scratch) / "src"
        for name in WHEEL_SOURCES:
            path = ROOT / name
            if path.is_dir():
                shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                source.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, source / name)
        env = {**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH}
        proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                               "--quiet", "--disable-pip-version-check", "-w", str(folder), str(source)],
                              capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            said = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise SystemExit(f"build_addon: building the gdyn wheel failed: {said} (it needs pip and "
                             f"setuptools>=68 in {sys.executable})")
    return next(folder.glob("gdyn-*.whl"))


def _add(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, FIXED_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    archive.writestr(info, data)


def build(output: Path) -> Path:
    """Write the extension zip (add-on and backend wheel) to `output` and return its path."""
    output = Path(output)
    version = addon_version()
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gdyn-wheelhouse-") as wheelhouse:
        wheel = build_wheel(Path(wheelhouse))
        if wheel.name != f"gdyn-{version}-py3-none-any.whl":
            raise SystemExit(f"build_addon: the wheel is {wheel.name}, expected gdyn {version}")
        with atomic_path(output) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
            for source, name in addon_files():
                _add(archive, name, source.read_bytes())
            _add(archive, f"{WHEEL_FOLDER}/{wheel.name}", wheel.read_bytes())
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the GDyn Blender extension zip.")
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "dist" / "gdyn_addon.zip",
                        help="zip to write (default: dist/gdyn_addon.zip)")
    args = parser.parse_args(argv)
    path = build(args.output)
    print(f"wrote {path} ({path.stat().st_size // 1024} KiB); install it in Blender 4.2+ with "
          "Edit > Preferences > Get Extensions > Install from Disk", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
