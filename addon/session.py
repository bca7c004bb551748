"""The add-on's one backend client and the one place that dispatches its replies.

`client()` is the single `BackendClient`, re-made when the Backend Python
preference changes (the old backend is stopped without waiting for it).
`poll()` dispatches every reply received so far and so runs the jobs'
callbacks on Blender's main thread; a `bpy.app.timers` function calls it
while jobs are pending (in background mode, with no timers ticking, a script
calls it). Nothing else polls the backend: the job operators only read their
job's state.

Each time a backend starts and passes the protocol handshake, its presets
are asked for and kept in `presets` (the Preset menu), and its gdyn version
is compared with the add-on's (`version_note`).

Opening or creating a file (File > New/Open) starts a new `file_generation()`:
jobs started for the old file are cancelled and never wire into the new one.
"""

from __future__ import annotations

import bpy

from . import environment, presets, properties
from .backend_client import BackendClient, Job

POLL_INTERVAL_S = 0.1
_client: BackendClient | None = None
_generation = 0  # counts file loads; a job's result belongs to the file of its generation
_file_jobs: list[Job] = []  # jobs whose result belongs to the open file


def _on_ready(client: BackendClient) -> None:
    """on_ready: fill the Preset menu from the backend that has just started."""

    def keep(job: Job) -> None:
        if job.error is None:
            presets.store(job.result["presets"])

    client.request("presets", on_done=keep)


def client(context=None) -> BackendClient:
    """The add-on's backend client, re-made when the backend Python preference changes."""
    global _client
    python = properties.backend_python(context or bpy.context)
    if _client is None or _client.python != python:
        if _client is not None:
            _client.stop()
        presets.forget()
        update_fix = ("press Update Backend in Preferences > Add-ons > GDyn"
                      if environment.is_private_python(python) else None)
        _client = BackendClient(python, on_ready=_on_ready, update_fix=update_fix)
    return _client


def version_note() -> str | None:
    """A line when the running backend's gdyn differs from this add-on's version, else None."""
    backend = _client.backend if _client is not None else None
    if backend is None or backend.get("version") in (None, environment.ADDON_VERSION):
        return None
    fix = ("press Update Backend in Preferences > Add-ons > GDyn" if environment.is_private_python(_client.python)
           else "install the matching gdyn there or the add-on zip built from it")
    return (f"the backend has gdyn {backend['version']} but this add-on is {environment.ADDON_VERSION}: {fix}")


def busy() -> bool:
    """A backend job is pending (or a started backend has not answered yet)."""
    return _client is not None and _client.busy


def pending() -> list[Job]:
    """The backend jobs not finished yet."""
    return _client.pending() if _client is not None else []


def cancel_all() -> int:
    """Cancel every pending backend job; returns how many were asked to stop."""
    jobs = pending()
    for job in jobs:
        job.cancel()
    return len(jobs)


def stop_backend() -> None:
    """Stop the backend process (it is started again by the next request)."""
    global _client
    if _client is not None:
        _client.stop()
        _client = None


def shutdown() -> None:
    """Stop the backend, the timer and the file handler (add-on disabled)."""
    stop_backend()
    if bpy.app.timers.is_registered(_timer):
        bpy.app.timers.unregister(_timer)
    if _file_changing in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.remove(_file_changing)


def poll() -> None:
    """Dispatch backend replies (runs job callbacks on this, the main, thread)."""
    if _client is not None:
        _client.poll()


def _timer():
    poll()
    return POLL_INTERVAL_S if busy() else None


def file_generation() -> int:
    """The number of the open file: it changes with every File > New/Open (and file load)."""
    return _generation


@bpy.app.handlers.persistent
def _file_changing(*_args) -> None:
    """load_pre: the open file is left; its jobs are cancelled and will wire nothing."""
    global _generation
    _generation += 1
    for job in _file_jobs:
        job.cancel()
    _file_jobs.clear()


def request(method: str, params: dict, on_done=None, on_progress=None, for_file: bool = False) -> Job:
    """Send a request and make sure the timer polls for its replies; BackendError if it cannot.
    `for_file`: the result belongs to the open file (cancelled when another file is opened)."""
    job = client().request(method, params, on_progress=on_progress, on_done=on_done)
    if for_file:
        _file_jobs[:] = [j for j in _file_jobs if not j.finished] + [job]
    if _file_changing not in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.append(_file_changing)
    if not bpy.app.timers.is_registered(_timer):
        bpy.app.timers.register(_timer, first_interval=POLL_INTERVAL_S, persistent=True)
    return job
