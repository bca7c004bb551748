"""The add-on's backend client (addon/backend_client.py, no bpy) against a real `gdyn serve`."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
from standins import stand_in_python
from synthetic import tiny_inputs

import gdyn_backend
from addon import backend_client
from addon.backend_client import PROTOCOL_VERSION, BackendClient, BackendError, call
from gdyn_backend import server


@pytest.fixture
def client():
    c = BackendClient(sys.executable)
    yield c
    c.stop()


@pytest.mark.slow
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


@pytest.mark.slow
def test_backend_error_is_one_clear_line(client, tmp_path):
    with pytest.raises(BackendError, match="image not found: .*missing.png"):
        call(client, "animate", {"image": str(tmp_path / "missing.png"), "output": str(tmp_path / "o")})
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_dead_backend_fails_pending_jobs_and_restarts_on_next_request(client, tmp_path, poll_until):
    image, motion = tiny_inputs(tmp_path, 320, 200)
    job = client.request("animate", {"image": str(image), "output": str(tmp_path / "o"),
                                     "motion": str(motion), "frames": 400})
    first_pid = client.pid
    poll_until(client.poll, lambda: job.done_units >= 1)  # let it start rendering, then kill it
    os.kill(first_pid, signal.SIGKILL)
    poll_until(client.poll, lambda: job.finished, timeout=30)
    assert job.result is None
    assert job.error.startswith("the backend process stopped (exit status -9) during animate: killed by SIGKILL")
    assert "restarts on the next request" in job.error
    assert "ready" not in job.error and "\n" not in job.error  # the start-up banner is no cause
    assert not (tmp_path / "o").exists()
    assert call(client, "ping")["pong"] is True  # a fresh process
    assert client.pid != first_pid and client.alive


@pytest.mark.slow
def test_cancel_from_the_client(client, tmp_path, poll_until):
    image, motion = tiny_inputs(tmp_path, 320, 200)
    job = client.request("animate", {"image": str(image), "output": str(tmp_path / "o"),
                                     "motion": str(motion), "frames": 400})
    poll_until(client.poll, lambda: job.done_units >= 1)
    job.cancel()
    poll_until(client.poll, lambda: job.finished, timeout=60)
    assert job.error == "cancelled" and not (tmp_path / "o").exists()


@pytest.mark.slow
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
    assert message.startswith(f"the Python at {client.python} has no gdyn backend installed")
    assert "press Set Up Backend in Preferences > Add-ons > GDyn" in message and "restarts" not in message
    # one that fails otherwise at start: the cause it wrote, and where to fix it
    broken = BackendClient(stand_in_python(tmp_path / "broken", 'echo "Fatal Python error: init" >&2\nexit 3'))
    with pytest.raises(BackendError, match=r"^the backend at .* could not start \(exit status 3\): "
                                           r"Fatal Python error: init; check Backend Python in Preferences"):
        call(broken, "ping", timeout=30)


def test_the_addon_speaks_the_backends_protocol():
    assert PROTOCOL_VERSION == server.PROTOCOL_VERSION


@pytest.mark.slow
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


HUNG = ('exec "{python}" -c "import json, sys, time; m = json.loads(sys.stdin.readline()); '
        "print(json.dumps({{'id': m['id'], 'result': {{'pong': True, 'protocol': {protocol}, "
        "'version': 'hung'}}}}), flush=True); time.sleep(600)\"")


@pytest.mark.slow
def test_a_hung_backend_blocks_nothing_and_a_cancel_stops_it(tmp_path, poll_until):
    """It answers the handshake, then nothing: the job can still be cancelled (the process is
    stopped after CANCEL_GRACE_S), and stop() returns at once."""
    client = BackendClient(stand_in_python(tmp_path, HUNG.format(python=sys.executable, protocol=PROTOCOL_VERSION)))
    try:
        job = client.request("animate", {"image": "x.png", "output": str(tmp_path / "o")})
        other = client.request("presets")
        poll_until(client.poll, lambda: client.backend is not None, 30, "the handshake")
        pid = client.pid
        job.cancel()
        start = time.monotonic()
        poll_until(client.poll, lambda: job.finished, backend_client.CANCEL_GRACE_S + 5, "the cancel")
        waited = time.monotonic() - start
        assert job.error == "cancelled" and backend_client.CANCEL_GRACE_S - 0.5 <= waited
        assert other.error == (f"the backend at {client.python} did not answer a cancel within "
                               f"{backend_client.CANCEL_GRACE_S:g} s, so it was stopped; the next request starts a new one")
        poll_until(lambda: None, lambda: not Path(f"/proc/{pid}").exists(), 10, "its end")
        again = client.request("ping")  # a fresh one, equally hung: stop() must not wait for it
        poll_until(client.poll, lambda: client.backend is not None, 30, "the handshake")
        start = time.perf_counter()
        client.stop()
        assert time.perf_counter() - start < 0.5 and again.error == "the backend was stopped"
    finally:
        client.stop(grace=0.0)


def test_a_backend_that_never_answers_the_handshake_is_stopped(tmp_path, poll_until):
    client = BackendClient(stand_in_python(tmp_path, "echo 'loading...' >&2\nexec sleep 600"))
    client.handshake_timeout_s = 1.0
    job = client.request("ping")
    poll_until(client.poll, lambda: job.finished, 10, "the handshake timeout")
    assert job.error == (f"the backend at {client.python} did not answer within 1 s of starting (it wrote: "
                         "loading...); check Backend Python in Preferences > Add-ons > GDyn, or press Set Up "
                         "Backend there")
    assert not client.busy and not client.alive
