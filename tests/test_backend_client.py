"""The add-on's backend client (addon/backend_client.py, no bpy) against a real `gdyn serve`."""

from __future__ import annotations

import os
import signal
import stat
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: `addon`

from addon.backend_client import BackendClient, BackendError, call  # noqa: E402
from test_server import tiny_inputs  # noqa: E402


def wait(client: BackendClient, job, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not job.finished:
        assert time.monotonic() < deadline, f"{job.method} did not finish in {timeout} s"
        client.poll()
        time.sleep(0.01)


@pytest.fixture
def client():
    c = BackendClient(sys.executable)
    yield c
    c.stop()


def test_request_callbacks_run_on_the_polling_thread(client, tmp_path):
    assert call(client, "ping")["pong"] is True
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
    wait(client, job)
    assert job.error is None and job.result["frames"] == 5
    assert seen["threads"] == {threading.get_ident()}
    assert seen["progress"][-1] == ("rendering", 5, 5) and job.fraction == 1.0
    assert not client.busy


def test_backend_error_is_one_clear_line(client, tmp_path):
    with pytest.raises(BackendError, match="image not found: .*missing.png"):
        call(client, "animate", {"image": str(tmp_path / "missing.png"), "output": str(tmp_path / "o")})
    assert not (tmp_path / "o").exists()


def test_dead_backend_fails_pending_jobs_and_restarts_on_next_request(client, tmp_path):
    image, motion = tiny_inputs(tmp_path, 320, 200)
    job = client.request("animate", {"image": str(image), "output": str(tmp_path / "o"),
                                     "motion": str(motion), "frames": 400})
    first_pid = client.pid
    while job.done_units < 1:  # let it start rendering, then kill it
        client.poll()
        time.sleep(0.01)
    os.kill(first_pid, signal.SIGKILL)
    wait(client, job, timeout=30)
    assert job.result is None
    assert job.error.startswith("the backend process stopped (exit status -9)")
    assert "restarts on the next request" in job.error
    assert not (tmp_path / "o").exists()
    assert call(client, "ping")["pong"] is True  # a fresh process
    assert client.pid != first_pid and client.alive


def test_cancel_from_the_client(client, tmp_path):
    image, motion = tiny_inputs(tmp_path, 320, 200)
    job = client.request("animate", {"image": str(image), "output": str(tmp_path / "o"),
                                     "motion": str(motion), "frames": 400})
    while job.done_units < 1:
        client.poll()
        time.sleep(0.01)
    job.cancel()
    wait(client, job, timeout=60)
    assert job.error == "cancelled" and not (tmp_path / "o").exists()


def test_unusable_backend_python_is_reported(tmp_path):
    with pytest.raises(BackendError, match="no backend Python is set"):
        BackendClient("").request("ping")
    with pytest.raises(BackendError, match="backend Python not found: /nowhere/python"):
        BackendClient("/nowhere/python").request("ping")
    fake = tmp_path / "python"  # an interpreter without gdyn: prints an error and exits
    fake.write_text("#!/bin/sh\necho \"No module named gdyn_backend\" >&2\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    client = BackendClient(str(fake))
    with pytest.raises(BackendError) as info:
        call(client, "ping", timeout=30)
    message = str(info.value)
    assert "exit status 1" in message and "No module named gdyn_backend" in message
