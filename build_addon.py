"""Build the installable Blender extension zip of the GDyn add-on.

    python build_addon.py [-o dist/gdyn_addon.zip]

The zip has `blender_manifest.toml` and the add-on's Python files at its
root (the layout `blender --command extension build` makes), so it installs
in Blender 4.2+ with Edit > Preferences > Get Extensions > Install from
Disk. It holds no motion presets: the add-on's Preset menu lists what the
backend offers. Entries are sorted and time-stamped at a fixed date, so the
same sources give the same bytes. The zip is written through
`gdyn_backend.io.atomic_path`: it appears whole or not at all.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
import zipfile
from pathlib import Path

from gdyn_backend.io import atomic_path

ROOT = Path(__file__).resolve().parent
ADDON = ROOT / "addon"
FIXED_TIME = (2024, 1, 1, 0, 0, 0)  # zip entries' timestamp (reproducible builds)


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


def build(output: Path) -> Path:
    """Write the extension zip to `output` and return its path."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(output) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for source, name in addon_files():
            info = zipfile.ZipInfo(name, FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, source.read_bytes())
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
