"""Make the backend's private Python environment. Imports no bpy (testable anywhere).

    setup = Setup(python, folder, wheel)   # starts at once
    while not setup.finished: setup.poll()  # the add-on's timer does this
    setup.error or setup.python             # one line, or the environment's python

`folder/env` becomes a venv made from `python` (a Python 3.11) with torch (the
version the gdyn wheel pins) and the bundled gdyn wheel, installed with pip
from the package registries as the user's pip is configured (the README's
commands do the same). The steps run one at a time as subprocesses whose
output a thread reads, so the caller never waits:

 1. check that `python` is 3.11 and can make environments (venv, ensurepip);
 2. make a venv in the staging folder `folder/env.partial`;
 3. pip install torch;  4. pip install the gdyn wheel;
 5. check that the new python imports torch, cv2 and gdyn_backend of the wheel's version;
 6. rename `folder/env.partial` to `folder/env` (an older `env` is removed after).

So an environment appears whole or not at all: a failed or cancelled setup
removes its staging folder (in a thread; `finished` turns true when it is
gone), and a staging folder left by a crash is removed by the next setup.
`Setup` has the progress interface of a backend `Job` (stage, done_units,
total_units, fraction, error 'cancelled', cancel()), so the job operator
shows it the same way.
"""

from __future__ import annotations

import collections
import json
import re
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path
from typing import Callable

from .backend_client import child_environment, start_helper

NEEDED_PYTHON = (3, 11)
OUTPUT_LINES_KEPT = 40
MARKER = "gdyn-setup.json"  # in the environment: what was installed, from which wheel
PYTHON_CHOICE = "Setup Python in Preferences > Add-ons > GDyn"
CHECK_PYTHON = "import sys, venv, ensurepip; print('%d.%d.%d' % sys.version_info[:3])"
CHECK_ENVIRONMENT = "import torch, cv2, gdyn_backend; print(gdyn_backend.__version__)"
NO_NETWORK = re.compile(r"Failed to establish a new connection|Temporary failure in name resolution|"
                        r"Name or service not known|Network is unreachable|Connection refused|"
                        r"\(from versions: none\)")  # pip saw no index at all
NOT_OFFERED = re.compile(r"No matching distribution found for (\S+)")  # the index has it, not for this system
NO_SPACE = re.compile(r"No space left on device|\[Errno 28\]")


def venv_python(env: Path) -> Path:
    """The python of the venv in folder `env` (Scripts\\python.exe on Windows)."""
    return env / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def wheel_version(wheel: Path) -> str:
    """The version in a wheel's file name: gdyn-0.1.0-py3-none-any.whl -> '0.1.0'."""
    return Path(wheel).name.split("-")[1]


def pinned_torch(wheel: Path) -> str:
    """The torch requirement the gdyn wheel pins ('torch==2.13.0'), from its METADATA."""
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(name for name in archive.namelist() if name.endswith(".dist-info/METADATA"))
        text = archive.read(metadata).decode("utf-8")
    found = re.search(r"^Requires-Dist: (torch\s*[=<>!~][^;\s]*)\s*$", text, re.MULTILINE)
    return found.group(1).replace(" ", "") if found else "torch"


def read_marker(env: Path) -> dict | None:
    """What a finished setup recorded in `env` ({"gdyn", "python", "seconds"}), or None."""
    try:
        return json.loads((Path(env) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class Step:
    """One subprocess of the setup: a label for the status bar, its command, and what to check
    in its output (`check(lines) -> error line or None`)."""

    def __init__(self, label: str, command: list[str], check: Callable[[list[str]], str | None] | None = None):
        self.label, self.command, self.check = label, command, check


class Setup:
    """A running setup of `folder/env` from `python` with `wheel`; see the module docstring.

    python: the interpreter to make the venv from (must be Python 3.11).
    folder: where `env` goes (the extension's user folder).
    wheel:  the gdyn wheel bundled with the add-on.
    log:    log(line) for every line the steps print (the system console).
    """

    def __init__(self, python: str, folder: Path, wheel: Path, log: Callable[[str], object] | None = None):
        self.source_python, self.folder, self.wheel = str(python), Path(folder), Path(wheel)
        self.log = log or (lambda line: print(f"GDyn setup: {line}"))
        self.target, self.staging = self.folder / "env", self.folder / "env.partial"
        self.python = venv_python(self.target)
        self.version = wheel_version(self.wheel)
        new = venv_python(self.staging)
        pip = [str(new), "-m", "pip", "install", "--progress-bar", "off", "--disable-pip-version-check"]
        self.steps = [
            Step("checking the Python", [self.source_python, "-c", CHECK_PYTHON], self._check_python),
            Step("creating the environment", [self.source_python, "-m", "venv", str(self.staging)]),
            Step("installing torch", pip + [pinned_torch(self.wheel)]),
            Step(f"installing gdyn {self.version}", pip + [str(self.wheel)]),
            Step("checking the environment", [str(new), "-c", CHECK_ENVIRONMENT], self._check_environment),
        ]
        self.stage, self.done_units, self.total_units = "", 0, len(self.steps)
        self.error: str | None = None
        self.finished = False
        self.check_job = None  # the add-on's check of the new backend, once it is in place
        self.started = time.monotonic()
        self.seconds = 0.0
        self._proc: subprocess.Popen | None = None
        self._output: collections.deque = collections.deque(maxlen=OUTPUT_LINES_KEPT)
        self._reader: threading.Thread | None = None
        self._cleanup: threading.Thread | None = None
        self.folder.mkdir(parents=True, exist_ok=True)
        self._remove_in_background(self.staging, then=self._next)  # a crashed setup's leftovers first

    # -- the Job interface ---------------------------------------------------

    @property
    def fraction(self) -> float:
        return self.done_units / self.total_units

    @property
    def detail(self) -> str:
        """The last line the running step printed."""
        return self._output[-1] if self._output else ""

    def cancel(self) -> None:
        """Stop the running step and remove what was made; `error` becomes 'cancelled'.
        Too late once the new environment is in place."""
        if self.finished or self.error is not None or self.stage == "done":
            return
        self._fail("cancelled")

    # -- running -------------------------------------------------------------

    def poll(self) -> bool:
        """Look at the running step: start the next one when it has ended; True when finished."""
        if self.finished:
            return True
        if self._cleanup is not None:
            if self._cleanup.is_alive():
                return False
            self._cleanup, then = None, self._after_cleanup
            then()
            return self.finished
        proc = self._proc
        if proc is None or proc.poll() is None:
            return False
        self._reader.join()
        lines, step = list(self._output), self.steps[self.done_units]
        self._proc = None
        if proc.returncode != 0:
            self._fail(self._explain(step, proc.returncode, lines))
        elif step.check is not None and (problem := step.check(lines)) is not None:
            self._fail(problem)
        else:
            self.done_units += 1
            self._next()
        return self.finished

    def _next(self) -> None:
        if self.done_units == len(self.steps):
            self._install()
            return
        step = self.steps[self.done_units]
        self.stage = step.label
        self._output.clear()
        self.log(f"{step.label}: {' '.join(step.command)}")
        try:
            self._proc = subprocess.Popen(step.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, text=True, encoding="utf-8",
                                          errors="replace", env=child_environment())
        except OSError as exc:
            culprit = step.command[0]
            self._fail(f"cannot run {culprit}: {exc.strerror or exc}; choose a Python 3.11 under {PYTHON_CHOICE}"
                       if culprit == self.source_python else f"{step.label} failed: {exc.strerror or exc}")
            return
        self._reader = start_helper(self._read, self._proc)

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            line = line.rstrip()
            if line:
                self._output.append(line)
                self.log(line)

    def _install(self) -> None:
        """Record what was installed, then put the new environment in place of any older one."""
        self.seconds = time.monotonic() - self.started
        old = self.folder / "env.old"
        try:
            (self.staging / MARKER).write_text(json.dumps(
                {"gdyn": self.version, "wheel": self.wheel.name, "seconds": round(self.seconds, 1)}),
                encoding="utf-8")
            if old.exists():
                shutil.rmtree(old)
            if self.target.exists():
                self.target.rename(old)
            self.staging.rename(self.target)
        except OSError as exc:
            if old.exists() and not self.target.exists():
                old.rename(self.target)
            self._fail(f"the new environment could not be put in place in {self.folder}: "
                       f"{exc.strerror or exc}; close other programs using it and press Set Up Backend again")
            return
        self.stage, self.error = "done", None
        self._remove_in_background(old, then=self._done)

    def _done(self) -> None:
        self.finished = True

    def _fail(self, error: str) -> None:
        """End with `error`: stop the running step, then remove the staging folder."""
        self.error = error
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._proc = None
        self.seconds = time.monotonic() - self.started
        self._remove_in_background(self.staging, then=self._done)

    def _remove_in_background(self, path: Path, then: Callable[[], None]) -> None:
        """Remove `path` (a folder of maybe 1 GB) in a thread; `then()` runs in `poll` after."""
        self._cleanup = start_helper(shutil.rmtree, path, True)  # ignore_errors
        self._after_cleanup = then

    # -- what went wrong -------------------------------------------------------

    def _check_python(self, lines: list[str]) -> str | None:
        found = lines[-1] if lines else "?"
        if tuple(int(part) for part in found.split(".")[:2] if part.isdigit()) == NEEDED_PYTHON:
            return None
        return (f"{self.source_python} is Python {found}, but the gdyn backend needs Python "
                f"{'.'.join(map(str, NEEDED_PYTHON))}: install Python 3.11 and choose its python under "
                f"{PYTHON_CHOICE}, then press Set Up Backend")

    def _check_environment(self, lines: list[str]) -> str | None:
        found = lines[-1] if lines else ""
        if found == self.version:
            return None
        return (f"the new environment has gdyn {found or '(none)'} instead of {self.version} from "
                f"{self.wheel.name}: rebuild the add-on zip with build_addon.py and install it again")

    def _explain(self, step: Step, code: int, lines: list[str]) -> str:
        """One line naming the cause and the fix of a step that exited with status `code`."""
        text = "\n".join(lines)
        if NO_SPACE.search(text):
            return (f"{step.label} failed: no disk space left for the environment in {self.folder} "
                    "(it needs about 2 GB): free some space and press Set Up Backend again")
        if step is self.steps[0]:
            return (f"{self.source_python} cannot make Python environments (no venv or ensurepip module; "
                    "on Debian or Ubuntu: apt install python3.11-venv): choose another Python 3.11 under "
                    f"{PYTHON_CHOICE}")
        if "pip" in step.command and NO_NETWORK.search(text):
            return (f"{step.label} failed: pip could not download it (no network, or the package registry "
                    "is unreachable): connect to the internet (or set pip's proxy) and press Set Up Backend again")
        offered = NOT_OFFERED.search(text) if "pip" in step.command else None
        if offered:
            return (f"{step.label} failed: the package registry has no {offered.group(1)} for this computer "
                    f"({sys.platform}, Python 3.11): the system console lists what it has")
        errors = [line for line in lines if line.startswith("ERROR") or "Error" in line]
        said = (errors or lines or ["no output"])[-1]
        return (f"{step.label} failed (exit status {code}): {said}; the system console has the whole "
                "output: fix that and press Set Up Backend again")
