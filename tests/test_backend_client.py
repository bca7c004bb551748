"""The add-on's backend client (addon/backend_client.py, no bpy) against a real `gdyn serve`."""

from __future__ import annotations

import os
import signal
import stat
import sys
import threading
from pathlib import Path

import pytest
from synthetic import tiny_inputs

import gdyn_backend
from addon.backend_client import PROTOCOL_VERSION, BackendClient, BackendError, call
from gdyn_backend import server


@pytest.fixture
def client():
    c = BackendClient(sys.executable)
    yield c
    c.stop()


def stand_in_python(folder: Path, script: str) -> str:
    """An executable that takes the place of the backend's python and runs `script` (sh)."""
    path = folder / "python"
    path.write_text("#!/bin/sh\n" + script + "\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def test_request_callbacks_run_on_the_polling_thread(client, tmp_path, poll_until):
    assert call(client, "ping")["pong"] is True
    assert client.backend["protocol"] == PROTOCOL_VERSION  # the handshake passed
    image, motion = tiny_inputs(tmp_path)
    seen = {"progress": [], "threads": set()}

    def on_progress(job, stage, done, total):
        seen["progress"].append((stage, done, total))
        seen["threads"].add(threading.get_ident())

    def on_done(job):
        seen["threads"].add(threading.get_ident())

    job = client.request("animate", {"image": str(image), "output": str(tmp_path / "o"),
                                     "motion": str(motion), "frames": 5}, on_progress, on_done)
    assert not job.finished  # request() never waits for the backend
    poll_until(client.poll, lambda: job.finished)
    assert job.error is None and job.result["frames"] == 5
    assert seen["threads"] == {threading.get_ident()}
    assert seen["progress"][-1] == ("rendering", 5, 5) and job.fraction == 1.0
    assert not client.busy


def test_backend_error_is_one_clear_line(client, tmp_path):
    with pytest.raises(BackendError, match="image not found: .*missing.png"):
        call(client, "animate", {"image": str(tmp_path / "missing.png"), "output": str(tmp_path / "o")})
    assert not (tmp_path / "o").exists()


def test_dead_backend_fails_pending_jobs_and_restarts_on_next_request(client, tmp_path, poll_until):
    image, motion = tiny_inputs(tmp_path, 320, 200)
    job = client.request("animate", {"image": str(image), "output": str(tmp_path / "o"),
                                     "motion": str(motion), "frames": 400})
    first_pid = client.pid
    poll_until(client.poll, lambda: job.done_units >= 1)  # let it start rendering, then kill it
    os.kill(first_pid, signal.SIGKILL)
    poll_until(client.poll, lambda: job.finished, timeout=30)
    assert job.result is None
    assert job.error.startswith("the backend process stopped (exit status -9)")
    assert "restarts on the next request" in job.error
    assert not (tmp_path / "o").exists()
    assert call(client, "ping")["pong"] is True  # a fresh process
    assert client.pid != first_pid and client.alive


def test_cancel_from_the_client(client, tmp_path, poll_until):
    image, motion = tiny_inputs(tmp_path, 320, 200)
    job = client.request("animate", {"image": str(image), "output": str(tmp_path / "o"),
                                     "motion": str(motion), "frames": 400})
    poll_until(client.poll, lambda: job.done_units >= 1)
    job.cancel()
    poll_until(client.poll, lambda: job.finished, timeout=60)
    assert job.error == "cancelled" and not (tmp_path / "o").exists()


def test_a_job_cancelled_before_the_handshake_never_reaches_the_backend(client, tmp_path):
    image, motion = tiny_inputs(tmp_path, 320, 200)
    job = client.request("animate", {"image": str(image), "output": str(tmp_path / "o"),
                                     "motion": str(motion), "frames": 400})
    job.cancel()  # the backend has not answered the handshake yet: the request is still held
    assert job.finished and job.error == "cancelled"
    assert call(client, "ping")["busy"] == 0  # nothing queued or running there
    assert not (tmp_path / "o").exists()


def test_unusable_backend_python_is_reported(tmp_path):
    with pytest.raises(BackendError, match="no backend Python is set"):
        BackendClient("").request("ping")
    with pytest.raises(BackendError, match="backend Python not found: /nowhere/python"):
        BackendClient("/nowhere/python").request("ping")
    # an interpreter without gdyn: prints an error and exits
    client = BackendClient(stand_in_python(tmp_path, 'echo "No module named gdyn_backend" >&2\nexit 1'))
    with pytest.raises(BackendError) as info:
        call(client, "ping", timeout=30)
    message = str(info.value)
    assert "exit status 1" in message and "No module named gdyn_backend" in message


def test_the_addon_speaks_the_backends_protocol():
    assert PROTOCOL_VERSION == server.PROTOCOL_VERSION


def test_a_backend_of_another_protocol_fails_every_job_with_one_line(tmp_path, poll_until):
    """A real `gdyn serve` that announces the previous protocol: nothing it is asked runs."""
    old = PROTOCOL_VERSION - 1
    python = stand_in_python(tmp_path, f'exec "{sys.executable}" -c "import gdyn_backend.server as s; '
                                       f's.PROTOCOL_VERSION = {old}; from gdyn_backend.cli import main; '
                                       "raise SystemExit(main(['serve']))\"")
    image, motion = tiny_inputs(tmp_path)
    client = BackendClient(python)
    try:
        jobs = [client.request("animate", {"image": str(image), "output": str(tmp_path / "o"),
                                           "motion": str(motion), "frames": 5}),
                client.request("presets")]
        first_pid = client.pid
        poll_until(client.poll, lambda: all(job.finished for job in jobs), timeout=60)
        want = (f"the gdyn backend at {python} (gdyn {gdyn_backend.__version__}) speaks protocol {old} "
                f"but this add-on needs protocol {PROTOCOL_VERSION}: update gdyn in that environment "
                f"({python} -m pip install -U /path/to/gdyn) or install the add-on zip built from the gdyn "
                "that is installed there")
        assert [job.error for job in jobs] == [want, want] and "\n" not in want
        assert all(job.result is None for job in jobs) and not (tmp_path / "o").exists()
        assert not client.alive and not client.busy and client.backend is None  # stopped, not half-used
        again = client.request("ping")  # the next request asks again, in a fresh process
        second_pid = client.pid
        poll_until(client.poll, lambda: again.finished, timeout=60)
        assert again.error == want and second_pid not in (None, first_pid)
    finally:
        client.stop()
