"""Client for the `gdyn serve` backend process. Imports no bpy (testable anywhere).

The backend runs in its own interpreter (a venv with gdyn and torch), started
as `<python> -m gdyn_backend serve`, and speaks JSON lines over stdin/stdout
(protocol in `gdyn_backend/server.py`). A reader thread puts every reply on a
queue; nothing here ever waits on the backend. The owner calls `poll()`
regularly from ONE thread (in Blender: `session.poll`, a `bpy.app.timers`
function on the main thread), and `poll()` runs the `Job` callbacks on that
thread.

Handshake: a fresh process is first sent `ping`; requests made before its
reply are held back. If the backend speaks another protocol than
`PROTOCOL_VERSION`, every held job fails with one line naming both versions
and the fix, the process is stopped, and nothing was run. Otherwise the
held requests go out and `on_ready(client)` runs.

When the process dies, every pending job fails with one clear line that
names the cause and the fix (the backend's last stderr lines, less its ready
banner), and the next `request()` starts a fresh process.

A hung backend never blocks the caller: `stop()` returns at once (a reaper
thread kills a backend that does not exit within `STOP_GRACE_S`); a cancel
the backend does not answer within `CANCEL_GRACE_S` stops it; a backend that
does not answer the handshake within `handshake_timeout_s` is stopped and its
held jobs fail.
"""

from __future__ import annotations

import atexit
import collections
import json
import os
import queue
import re
import signal
import subprocess
import threading
import time
from typing import Any, Callable

PROTOCOL_VERSION = 3  # the `gdyn serve` protocol this add-on speaks (= gdyn_backend.server.PROTOCOL_VERSION)
STDERR_LINES_KEPT = 20
STOP_GRACE_S = 3.0  # a stopped backend that has not exited by then is killed (by a reaper thread)
CANCEL_GRACE_S = 5.0  # a backend that has not answered a cancel by then is hung: it is stopped
HANDSHAKE_TIMEOUT_S = 120.0  # from start to the handshake's answer (importing torch on a busy CPU)
READY_BANNER = re.compile(r"^gdyn serve \S+: ready\b")  # the backend's start-up line, never a cause
MISSING_GDYN = re.compile(r"No module named '?gdyn_backend'?")
EXIT_WAIT_S = 2.0  # at interpreter exit: how long backends and helper threads get to end
_backends: set[subprocess.Popen] = set()  # backends started and not yet seen to end; ended at interpreter exit
_helpers: set[threading.Thread] = set()  # reader and reaper threads still running; joined at interpreter exit


def start_helper(target: Callable, *args) -> threading.Thread:
    """Start `target(*args)` in a daemon thread that the interpreter's exit waits for (see
    `_end_backends`) while it runs; the thread."""

    def run() -> None:
        try:
            target(*args)
        finally:
            _helpers.discard(thread)

    thread = threading.Thread(target=run, daemon=True)
    _helpers.add(thread)
    thread.start()
    return thread


@atexit.register
def _end_backends() -> None:
    """Blender quits: end every backend this add-on started (end of input: a running job is
    cancelled and its partial output removed; killed when not gone within `EXIT_WAIT_S`), then
    let every helper thread end. A thread still reading a pipe while Python finalizes crashes
    Blender 4.2's exit and hangs 4.5's (tests/test_addon_blender.py)."""
    deadline = time.monotonic() + EXIT_WAIT_S
    for proc in list(_backends):
        try:
            proc.stdin.close()
        except (OSError, ValueError):
            pass
    for proc in list(_backends):
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for thread in list(_helpers):
        thread.join(timeout=max(0.0, deadline - time.monotonic()) + 0.5)


def _reap(proc: subprocess.Popen, grace: float) -> None:
    """Wait up to `grace` seconds for a stopped backend to exit, then kill it (own thread)."""
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    _backends.discard(proc)


def child_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for another Python run from Blender: this one less Blender's PYTHONHOME
    and PYTHONPATH (they would break a venv), unbuffered, plus `extra`."""
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONHOME", "PYTHONPATH")}
    env.update(extra or {})
    env["PYTHONUNBUFFERED"] = "1"
    return env


class BackendError(Exception):
    """The backend could not be started or is unusable; message is one line."""


class Job:
    """A pending request: a small future whose callbacks run inside `poll()`.

    on_progress(job, stage, done, total) for each progress event;
    on_done(job) once, when `result` or `error` is set; what it returns is
    kept as `outcome` (in the add-on: what was wired into the scene).
    """

    detail = ""  # progress interface shared with backend_setup.Setup (its last output line)

    def __init__(self, client: "BackendClient", rid: int, method: str,
                 on_progress: Callable | None, on_done: Callable | None):
        self.client, self.id, self.method = client, rid, method
        self.on_progress, self.on_done = on_progress, on_done
        self.stage, self.done_units, self.total_units = "", 0, 0
        self.result: dict | None = None
        self.error: str | None = None
        self.outcome: Any = None
        self.finished = False
        self.cancel_requested = False

    @property
    def fraction(self) -> float:
        """Progress of the current stage, 0..1."""
        return min(self.done_units / self.total_units, 1.0) if self.total_units > 0 else 0.0

    def cancel(self) -> None:
        """Ask the backend to stop this job; its on_done then reports error 'cancelled'."""
        if not self.finished:
            self.client.cancel(self)

    def _progress(self, stage: str, done: int, total: int) -> None:
        self.stage, self.done_units, self.total_units = stage, done, total
        if self.on_progress is not None:
            self.on_progress(self, stage, done, total)

    def _finish(self, result: dict | None, error: str | None) -> None:
        if self.finished:
            return
        self.result, self.error, self.finished = result, error, True
        if self.on_done is not None:
            self.outcome = self.on_done(self)


class BackendClient:
    """One backend process, restarted on demand.

    python:   path of the backend interpreter (a venv with gdyn installed).
    env:      extra environment variables for the backend process.
    on_ready: on_ready(client), run inside `poll()` each time a started
              backend has passed the handshake.
    update_fix: what to tell the user to update gdyn there (default: the
              pip command), e.g. the add-on's Update Backend button.
    `backend` is the running backend's ping reply (version, protocol,
    python) once the handshake passed, else None.
    """

    def __init__(self, python: str, env: dict[str, str] | None = None,
                 on_ready: Callable[["BackendClient"], Any] | None = None, update_fix: str | None = None):
        self.python = python
        self.env = dict(env or {})
        self.on_ready = on_ready
        self.update_fix = update_fix  # how to update gdyn there, for the protocol-mismatch line
        self.handshake_timeout_s = HANDSHAKE_TIMEOUT_S
        self.backend: dict | None = None
        self._proc: subprocess.Popen | None = None
        self._replies: queue.Queue = queue.Queue()
        self._stderr: collections.deque = collections.deque(maxlen=STDERR_LINES_KEPT)
        self._jobs: dict[int, Job] = {}
        self._held: dict[int, dict] = {}  # requests waiting for the handshake, by id
        self._handshake: int | None = None  # id of the start-up ping until it is answered
        self._started_at = 0.0  # time.monotonic() of the last start
        self._cancel_deadline: float | None = None  # a cancel unanswered by then means a hung backend
        self._next_id = 1
        self._write_lock = threading.Lock()
        self._stderr_reader: threading.Thread | None = None

    # -- process -----------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        """Start the backend if it is not running and send the handshake ping; BackendError if
        it cannot start."""
        if self.alive:
            return
        if not self.python:
            raise BackendError("no backend Python is set: in Preferences > Add-ons > GDyn, "
                               "set it to the python of a venv with gdyn installed (.venv/bin/python)")
        if not os.path.isfile(self.python):
            raise BackendError(f"backend Python not found: {self.python}; set the path of the venv's "
                               "python in Preferences > Add-ons > GDyn")
        env = child_environment(self.env)
        self._stderr.clear()
        self._replies = queue.Queue()  # replies of a dead process must not reach the new one
        try:
            proc = subprocess.Popen(
                [self.python, "-m", "gdyn_backend", "serve"], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
                bufsize=1, env=env)
        except OSError as exc:
            raise BackendError(f"cannot start the backend {self.python}: {exc.strerror or exc}") from None
        self._proc = proc
        _backends.difference_update([ended for ended in _backends if ended.poll() is not None])
        _backends.add(proc)
        start_helper(self._read_stdout, proc, self._replies)
        self._stderr_reader = start_helper(self._read_stderr, proc)
        self.backend, self._held = None, {}
        self._started_at, self._cancel_deadline = time.monotonic(), None
        self._handshake = self._take_id()
        self._send_or_explain({"id": self._handshake, "method": "ping", "params": {}})

    def _read_stdout(self, proc: subprocess.Popen, replies: queue.Queue) -> None:
        for line in proc.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                replies.put(json.loads(line))
            except json.JSONDecodeError:
                self._stderr.append(f"(stdout, not JSON) {line[:200]}")
        replies.put({"_exit": True})

    def _read_stderr(self, proc: subprocess.Popen) -> None:
        for line in proc.stderr:
            if line.strip():
                self._stderr.append(line.rstrip())

    def last_log(self, lines: int = 3) -> str:
        """The backend's last stderr lines (not its ready banner) joined into one line."""
        said = [line for line in self._stderr if not READY_BANNER.match(line)]
        return " | ".join(said[-lines:])

    def stop(self, grace: float = STOP_GRACE_S, reason: str = "the backend was stopped") -> None:
        """Ask the backend to shut down and return at once; pending jobs fail with `reason`.
        A backend still running `grace` seconds later is killed by a reaper thread."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            try:
                self._send({"id": 0, "method": "shutdown", "params": {}})
            except BackendError:
                pass
            start_helper(_reap, proc, grace)
        self._fail_all(reason)
        self._proc, self.backend, self._handshake, self._cancel_deadline = None, None, None, None

    # -- requests ----------------------------------------------------------

    def _send(self, message: dict) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            raise BackendError("the backend is not running")
        try:
            with self._write_lock:
                proc.stdin.write(json.dumps(message) + "\n")
                proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            raise BackendError("the backend stopped while a request was sent") from None

    def _take_id(self) -> int:
        rid = self._next_id
        self._next_id += 1
        return rid

    def _send_or_explain(self, message: dict) -> None:
        """Send, or raise BackendError saying why the process died (it died at start)."""
        try:
            self._send(message)
        except BackendError:
            try:
                self._proc.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                self.stop(grace=0.0)
                raise BackendError(f"the backend at {self.python} does not read its requests: it was stopped; "
                                   "try again, or press Check Backend in Preferences > Add-ons > GDyn") from None
            raise BackendError(self._death_message()) from None

    def request(self, method: str, params: dict | None = None, on_progress: Callable | None = None,
                on_done: Callable | None = None) -> Job:
        """Send a request (starting the backend if needed) and return its Job at once.

        A dead backend is noticed here: its pending jobs fail, and a new one
        starts. Until the new one has answered the handshake the request is held.
        """
        if not self.alive:
            if self._proc is not None:
                self._fail_all(self._death_message())
            self.start()
        rid = self._take_id()
        job = Job(self, rid, method, on_progress, on_done)
        message = {"id": rid, "method": method, "params": params or {}}
        self._jobs[rid] = job
        if self.backend is None:
            self._held[rid] = message
            return job
        try:
            self._send_or_explain(message)
        except BackendError:
            self._jobs.pop(rid, None)
            raise
        return job

    def cancel(self, job: Job) -> None:
        """Cancel a job: a held one at once; a sent one by asking the backend, which is
        stopped if it has not answered within `CANCEL_GRACE_S` (see `poll`)."""
        if self._held.pop(job.id, None) is not None:  # never sent: nothing ran
            self._jobs.pop(job.id, None)
            job._finish(None, "cancelled")
        elif job.id in self._jobs and self.alive:
            job.cancel_requested = True
            if self._cancel_deadline is None:
                self._cancel_deadline = time.monotonic() + CANCEL_GRACE_S
            try:
                self._send({"id": self._take_id(), "method": "cancel", "params": {"target": job.id}})
            except BackendError:
                pass  # it died: the end of its output finishes the job

    def pending(self) -> list[Job]:
        """The jobs not finished yet (sent or held)."""
        return list(self._jobs.values())

    @property
    def busy(self) -> bool:
        """Jobs are pending, or a started backend has not answered the handshake yet."""
        return bool(self._jobs) or self._handshake is not None

    def poll(self) -> int:
        """Dispatch every reply received so far; returns how many were handled.

        Runs the jobs' callbacks on the calling thread. If the process has
        died, pending jobs fail with a message naming the exit status and the
        backend's last log lines.
        """
        handled = 0
        exited = False
        while True:
            try:
                message = self._replies.get_nowait()
            except queue.Empty:
                break
            handled += 1
            if message.get("_exit"):
                exited = True
                continue
            if self._handshake is not None and message.get("id") == self._handshake:
                self._greet(message)
                continue
            job = self._jobs.get(message.get("id"))
            if job is None:
                continue
            if message.get("event") == "progress":
                job._progress(str(message.get("stage", "")), int(message.get("done", 0)),
                              int(message.get("total", 0)))
            elif "result" in message or "error" in message:
                self._jobs.pop(job.id, None)
                job._finish(message.get("result"), message.get("error"))
        if exited:  # the reader saw end of output: the process is gone or going
            if self._proc is not None:
                try:
                    self._proc.wait(timeout=1.0)
                except subprocess.TimeoutExpired:  # closed its output but lives on: it is of no use
                    self._proc.kill()
                    self._proc.wait()
            message = self._death_message()
            self.backend, self._handshake, self._cancel_deadline = None, None, None
            self._fail_all(message)
        else:
            self._stop_if_hung()
        return handled

    def _stop_if_hung(self) -> None:
        """Stop a backend that left a cancel or the handshake unanswered for too long."""
        now = time.monotonic()
        if self._cancel_deadline is not None and not any(j.cancel_requested for j in self._jobs.values()):
            self._cancel_deadline = None  # every cancel was answered
        if self._cancel_deadline is not None and now > self._cancel_deadline:
            for job in [j for j in self._jobs.values() if j.cancel_requested]:
                self._jobs.pop(job.id)
                job._finish(None, "cancelled")
            self.stop(grace=0.0, reason=f"the backend at {self.python} did not answer a cancel within "
                                        f"{CANCEL_GRACE_S:g} s, so it was stopped; the next request starts a new one")
        elif self._handshake is not None and now > self._started_at + self.handshake_timeout_s:
            log = self.last_log()
            self.stop(grace=0.0, reason=f"the backend at {self.python} did not answer within "
                                        f"{self.handshake_timeout_s:g} s of starting"
                                        + (f" (it wrote: {log})" if log else "")
                                        + "; check Backend Python in Preferences > Add-ons > GDyn, "
                                          "or press Set Up Backend there")

    def _greet(self, reply: dict) -> None:
        """The handshake's ping reply: send the held requests, or fail them if the protocols differ."""
        self._handshake = None
        result = reply.get("result") or {}
        protocol = result.get("protocol")
        if protocol != PROTOCOL_VERSION:
            spoken = f"protocol {protocol}" if protocol is not None else "no known protocol"
            if "error" in reply:
                spoken += f" (its ping failed: {reply['error']})"
            fix = self.update_fix or (
                f"update gdyn in that environment ({self.python} -m pip install -U /path/to/gdyn) "
                "or install the add-on zip built from the gdyn that is installed there")
            self._fail_all(
                f"the gdyn backend at {self.python} (gdyn {result.get('version', '?')}) speaks {spoken} "
                f"but this add-on needs protocol {PROTOCOL_VERSION}: {fix}")
            self.stop()
            return
        self.backend = result
        held, self._held = list(self._held.values()), {}
        try:
            for message in held:
                self._send(message)
        except BackendError:
            return  # it died: the end of its output fails the jobs with the reason
        if self.on_ready is not None:
            self.on_ready(self)

    def _death_message(self) -> str:
        """One line on why the process died and what to do: a Python without gdyn, a backend
        that could not start, or one that stopped while it worked."""
        if self._stderr_reader is not None:
            self._stderr_reader.join(timeout=1.0)  # its last words explain the death
        code = self._proc.poll() if self._proc is not None else None
        log = self.last_log()
        if MISSING_GDYN.search(log):
            return (f"the Python at {self.python} has no gdyn backend installed (exit status {code}: {log}): "
                    "press Set Up Backend in Preferences > Add-ons > GDyn, or set Backend Python there to "
                    "the python of an environment with gdyn")
        if self.backend is None:  # it never answered the handshake
            return (f"the backend at {self.python} could not start (exit status {code})"
                    + (f": {log}" if log else "") + "; check Backend Python in Preferences > Add-ons > GDyn, "
                    "or press Set Up Backend there")
        if isinstance(code, int) and code < 0:
            try:
                how = f"killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"killed by signal {-code}"
            cause = log or f"{how}, from outside or for lack of memory"
        else:
            cause = log or "it wrote no reason"
        working = sorted({job.method for job in self._jobs.values()})
        during = f" during {', '.join(working)}" if working else ""
        return (f"the backend process stopped (exit status {code}){during}: {cause}; "
                "it restarts on the next request: start the job again")

    def _fail_all(self, message: str) -> None:
        jobs, self._jobs = list(self._jobs.values()), {}
        for job in jobs:
            job._finish(None, message)


def call(client: BackendClient, method: str, params: dict | None = None, timeout: float = 60.0,
         sleep: Callable[[float], Any] | None = None) -> dict:
    """Blocking request for scripts and tests (never use this on Blender's UI thread).

    Returns the result; raises BackendError with the backend's error line.
    """
    import time

    sleep = sleep or time.sleep
    job = client.request(method, params)
    deadline = time.monotonic() + timeout
    while not job.finished:
        client.poll()
        if time.monotonic() > deadline:
            job.cancel()
            raise BackendError(f"{method} did not answer within {timeout:.0f} s")
        sleep(0.01)
    if job.error is not None:
        raise BackendError(job.error)
    return job.result
