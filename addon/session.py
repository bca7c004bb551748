"""The add-on's one backend client and the one place that dispatches its replies.

`client()` is the single `BackendClient`, re-made when the Backend Python
preference changes. `poll()` dispatches every reply received so far and so
runs the jobs' callbacks on Blender's main thread; a `bpy.app.timers`
function calls it while jobs are pending (in background mode, with no
timers ticking, a script calls it). Nothing else polls the backend: the job
operators only read their job's state.

Each time a backend starts and passes the protocol handshake, its presets
are asked for and kept in `presets` (the Preset menu).
"""

from __future__ import annotations

import bpy

from . import presets, properties
from .backend_client import BackendClient, Job

POLL_INTERVAL_S = 0.1
_client: BackendClient | None = None


def _ask_presets(client: BackendClient) -> None:
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
        _client = BackendClient(python, on_ready=_ask_presets)
    return _client


def busy() -> bool:
    """A backend job is pending (or a started backend has not answered yet)."""
    return _client is not None and _client.busy


def shutdown() -> None:
    """Stop the backend and the timer (add-on disabled)."""
    global _client
    if _client is not None:
        _client.stop()
        _client = None
    if bpy.app.timers.is_registered(_timer):
        bpy.app.timers.unregister(_timer)


def poll() -> None:
    """Dispatch backend replies (runs job callbacks on this, the main, thread)."""
    if _client is not None:
        _client.poll()


def _timer():
    poll()
    return POLL_INTERVAL_S if busy() else None


def request(method: str, params: dict, on_done=None, on_progress=None) -> Job:
    """Send a request and make sure the timer polls for its replies; BackendError if it cannot."""
    job = client().request(method, params, on_progress=on_progress, on_done=on_done)
    if not bpy.app.timers.is_registered(_timer):
        bpy.app.timers.register(_timer, first_interval=POLL_INTERVAL_S, persistent=True)
    return job
