"""Run the add-on's tests on the other Blender versions of the support matrix.

    .venv/bin/python tests/bpy_matrix.py [BPY_VERSION ...]

bpy 5.0.1 (Python 3.11) is the project's own: the whole suite runs there.
For each other row of `MATRIX` this makes `.venv-bpy/<bpy version>/` with
only bpy, pytest and numpy (kept and reused while it has that bpy; all rows
install at once, the downloads being the slow part), then runs the add-on's
tests there (`TESTS`, not the `slow` ones nor those of plain Python behind
the add-on, which are the same on every Blender: Set Up Backend's steps in
tests/test_addon_setup.py, the client, output names) with the backend in the project's venv, this interpreter
(`GDYN_BACKEND_PYTHON`, see tests/backend_side.py). The rows' tests run at
the same time (each mostly waits on its backend); their output follows in
order. A row whose Python is not on this machine is reported and skipped;
any failure makes the exit status 1. The last line names the rows that
passed, failed and were skipped.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENVS = ROOT / ".venv-bpy"
MATRIX = (("4.2.23", "3.11"), ("4.5.15", "3.11"), ("5.3.0", "3.13"))  # (bpy, Python): LTS, LTS, newest
# Named, not globbed: a test module runs here only once it reads pictures and makes inputs through
# tests/backend_side.py (the matrix has no OpenCV and no gdyn_backend packages to import).
TESTS = ["tests/test_build_addon.py", "tests/test_addon_blender.py", "tests/test_addon_render.py",
         "tests/test_addon_ui.py", "tests/test_addon_view.py"]
SAME_ON_EVERY_BLENDER = (  # plain Python behind the add-on: run once, in the project's venv
    "--deselect=tests/test_addon_blender.py::test_dead_backend_is_reported_and_restarted",  # the client
    "--deselect=tests/test_addon_blender.py::test_two_quick_animates_get_separate_outputs",  # output names
)


def python_of(version: str) -> str | None:
    """An interpreter of Python `version` ('3.13'): this one, one on the PATH, or one pyenv
    installed; None when there is none."""
    if f"{sys.version_info[0]}.{sys.version_info[1]}" == version:
        return sys.executable
    pyenv = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates = [f"python{version}", *sorted(glob.glob(f"{pyenv}/versions/{version}.*/bin/python{version}"))]
    for candidate in candidates:
        try:
            found = subprocess.run([candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                   capture_output=True, text=True, timeout=60)
        except OSError:
            continue
        if found.returncode == 0 and found.stdout.strip() == version:
            return candidate
    return None


def venv_python(bpy_version: str) -> Path:
    return VENVS / bpy_version / "bin" / "python"


def has_bpy(bpy_version: str) -> bool:
    """The row's venv exists and has that bpy."""
    python = venv_python(bpy_version)
    if not python.exists():
        return False
    check = subprocess.run([str(python), "-c", "import importlib.metadata as m; print(m.version('bpy'))"],
                           capture_output=True, text=True)
    return check.returncode == 0 and check.stdout.strip() == bpy_version


def install(bpy_version: str, python: str) -> subprocess.Popen:
    """Start making the row's venv (bpy, pytest, numpy); the pip process."""
    folder = VENVS / bpy_version
    subprocess.run([python, "-m", "venv", "--clear", str(folder)], check=True)
    log = open(VENVS / f"{bpy_version}.log", "w")
    return subprocess.Popen([str(venv_python(bpy_version)), "-m", "pip", "install", "--quiet",
                             "--disable-pip-version-check", f"bpy=={bpy_version}", "pytest", "numpy"],
                            stdout=log, stderr=subprocess.STDOUT)


def main(argv: list[str]) -> int:
    rows = [(bpy, py) for bpy, py in MATRIX if not argv or bpy in argv]
    VENVS.mkdir(exist_ok=True)
    started = time.monotonic()
    installing, runnable, missing = {}, [], []
    for bpy_version, version in rows:
        python = python_of(version)
        if python is None:
            missing.append(bpy_version)
            print(f"bpy {bpy_version}: skipped, no Python {version} on this machine", flush=True)
        elif has_bpy(bpy_version):
            runnable.append(bpy_version)
        else:
            installing[bpy_version] = install(bpy_version, python)
    failed = []
    for bpy_version, proc in installing.items():
        if proc.wait() == 0:
            runnable.append(bpy_version)
        else:
            failed.append(bpy_version)
            print(f"bpy {bpy_version}: pip failed, see {VENVS / f'{bpy_version}.log'}", flush=True)
    print(f"bpy matrix: environments ready in {time.monotonic() - started:.0f} s", flush=True)
    env = {**os.environ, "GDYN_BACKEND_PYTHON": sys.executable}
    runs = {}
    for bpy_version in sorted(runnable):  # at once: much of a run is waiting for its backend
        log = open(VENVS / f"{bpy_version}.tests.log", "w+")
        runs[bpy_version] = log, subprocess.Popen(
            [str(venv_python(bpy_version)), "-m", "pytest", "-q", "-m", "not slow", "-p", "no:cacheprovider",
             *SAME_ON_EVERY_BLENDER, *TESTS], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    for bpy_version, (log, proc) in runs.items():
        code = proc.wait()
        log.seek(0)
        print(f"bpy {bpy_version}: add-on tests\n{log.read().rstrip()}", flush=True)
        log.close()
        if code != 0:
            failed.append(bpy_version)
    passed = sorted(set(runnable) - set(failed))
    print(f"bpy matrix: bpy {', '.join(passed) or '-'} passed; failed: {', '.join(failed) or 'none'}; "
          f"skipped: {', '.join(missing) or 'none'} ({time.monotonic() - started:.0f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
