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
includes the last lines the backend wrote to stderr, and the next `request()`
starts a fresh process.
"""

from __future__ import annotations

import collections
import json
import os
import queue
import subprocess
import threading
from typing import Any, Callable

PROTOCOL_VERSION = 3  # the `gdyn serve` protocol this add-on speaks (= gdyn_backend.server.PROTOCOL_VERSION)
STDERR_LINES_KEPT = 20


class BackendError(Exception):
    """The backend could not be started or is unusable; message is one line."""


class Job:
    """A pending request: a small future whose callbacks run inside `poll()`.

    on_progress(job, stage, done, total) for each progress event;
    on_done(job) once, when `result` or `error` is set; what it returns is
    kept as `outcome` (in the add-on: what was wired into the scene).
    """

    def __init__(self, client: "BackendClient", rid: int, method: str,
                 on_progress: Callable | None, on_done: Callable | None):
        self.client, self.id, self.method = client, rid, method
        self.on_progress, self.on_done = on_progress, on_done
        self.stage, self.done_units, self.total_units = "", 0, 0
        self.result: dict | None = None
        self.error: str | None = None
        self.outcome: Any = None
        self.finished = False

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
    `backend` is the running backend's ping reply (version, protocol,
    python) once the handshake passed, else None.
    """

    def __init__(self, python: str, env: dict[str, str] | None = None,
                 on_ready: Callable[["BackendClient"], Any] | None = None):
        self.python = python
        self.env = dict(env or {})
        self.on_ready = on_ready
        self.backend: dict | None = None
        self._proc: subprocess.Popen | None = None
        self._replies: queue.Queue = queue.Queue()
        self._stderr: collections.deque = collections.deque(maxlen=STDERR_LINES_KEPT)
        self._jobs: dict[int, Job] = {}
        self._held: dict[int, dict] = {}  # requests waiting for the handshake, by id
        self._handshake: int | None = None  # id of the start-up ping until it is answered
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
        env = dict(os.environ)
        for key in ("PYTHONHOME", "PYTHONPATH"):  # Blender's own settings would break a venv
            env.pop(key, None)
        env.update(self.env)
        env["PYTHONUNBUFFERED"] = "1"
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
        threading.Thread(target=self._read_stdout, args=(proc, self._replies), daemon=True).start()
        self._stderr_reader = threading.Thread(target=self._read_stderr, args=(proc,), daemon=True)
        self._stderr_reader.start()
        self.backend, self._held = None, {}
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
        """The backend's last stderr lines joined into one line."""
        return " | ".join(list(self._stderr)[-lines:])

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the backend to shut down, kill it if it does not; pending jobs fail."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            try:
                self._send({"id": 0, "method": "shutdown", "params": {}})
                proc.wait(timeout=timeout)
            except (BackendError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait()
        self._fail_all("the backend was stopped")
        self._proc, self.backend, self._handshake = None, None, None

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
                raise BackendError("the backend does not accept requests") from None
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
        if self._held.pop(job.id, None) is not None:  # never sent: nothing ran
            self._jobs.pop(job.id, None)
            job._finish(None, "cancelled")
        elif job.id in self._jobs and self.alive:
            self._send({"id": self._take_id(), "method": "cancel", "params": {"target": job.id}})

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
                self._proc.wait()
            self.backend, self._handshake = None, None
            self._fail_all(self._death_message())
        return handled

    def _greet(self, reply: dict) -> None:
        """The handshake's ping reply: send the held requests, or fail them if the protocols differ."""
        self._handshake = None
        result = reply.get("result") or {}
        protocol = result.get("protocol")
        if protocol != PROTOCOL_VERSION:
            spoken = f"protocol {protocol}" if protocol is not None else "no known protocol"
            if "error" in reply:
                spoken += f" (its ping failed: {reply['error']})"
            self._fail_all(
                f"the gdyn backend at {self.python} (gdyn {result.get('version', '?')}) speaks {spoken} "
                f"but this add-on needs protocol {PROTOCOL_VERSION}: update gdyn in that environment "
                f"({self.python} -m pip install -U /path/to/gdyn) or install the add-on zip built "
                "from the gdyn that is installed there")
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
        if self._stderr_reader is not None:
            self._stderr_reader.join(timeout=1.0)  # its last words explain the death
        code = self._proc.poll() if self._proc is not None else None
        log = self.last_log()
        return (f"the backend process stopped (exit status {code})"
                + (f": {log}" if log else "") + "; it restarts on the next request")

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
