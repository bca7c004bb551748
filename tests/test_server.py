"""`gdyn serve`: the JSON-lines protocol, as a subprocess, the way the add-on uses it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from backend_process import Serve
from hostile import hostile_inputs, private_mounts, snapshot
from synthetic import tiny_inputs

from gdyn_backend import io, spectral


@pytest.mark.slow
def test_ping_presets_info(serve):
    serve.send({"id": 1, "method": "ping", "params": {}})
    reply = serve.until_final(1)
    assert reply["result"]["pong"] is True and reply["result"]["protocol"] == 3
    serve.send({"id": 2, "method": "presets", "params": {}})
    names = {p["name"] for p in serve.until_final(2)["result"]["presets"]}
    assert {"gentle_breeze", "candle_flame"} <= names
    serve.send({"id": 3, "method": "info"})
    assert serve.until_final(3)["result"]["gdyn"]


@pytest.mark.slow
def test_garbage_and_unknown_method_get_errors_and_server_survives(serve):
    serve.send("this is not json {")
    reply = serve.read()
    assert reply["id"] is None and "malformed JSON" in reply["error"]
    serve.send({"id": 5, "method": "levitate", "params": {}})
    reply = serve.until_final(5)
    assert "unknown method 'levitate'" in reply["error"] and "\n" not in reply["error"]
    serve.send('[1, 2, 3]')
    assert "must be a JSON object" in serve.read()["error"]
    serve.send({"id": 6, "method": "animate", "params": {"image": "/nope.png", "output": "/tmp/x", "frames": "ten"}})
    assert "'frames' must be an integer" in serve.until_final(6)["error"]
    serve.send({"id": 7, "method": "ping"})
    assert serve.until_final(7)["result"]["pong"] is True
    assert serve.proc.poll() is None


@pytest.mark.slow
def test_animate_job_streams_progress_and_writes_outdir(serve, tmp_path):
    image, motion = tiny_inputs(tmp_path)
    outdir = tmp_path / "out"
    serve.send({"id": 10, "method": "animate", "params": {
        "image": str(image), "output": str(outdir), "motion": str(motion), "frames": 6, "fps": 30,
        "loop": True}})
    events: list = []
    reply = serve.until_final(10, events)
    assert "result" in reply, reply
    progress = [e for e in events if e.get("event") == "progress" and e["id"] == 10]
    assert progress and progress[-1]["done"] == progress[-1]["total"] == 6
    assert [e["done"] for e in progress] == sorted(e["done"] for e in progress)
    assert Path(reply["result"]["output"]) == outdir and reply["result"]["frames"] == 6
    assert sorted(p.name for p in (outdir / "frames").iterdir()) == [f"{i:04d}.png" for i in range(6)]
    assert len(list((outdir / "displacement").glob("*.exr"))) == 6
    assert (outdir / "motion.safetensors").is_file()
    # Frame 0 is the still (F_0 = 0) within 8-bit rounding.
    first = io.read_image(outdir / "frames" / "0000.png").rgb
    assert np.abs(first - io.read_image(image).rgb).max() <= 1 / 255 + 1e-6
    # A user error of the pipeline comes back as one line; nothing is written.
    serve.send({"id": 11, "method": "animate", "params": {
        "image": str(tmp_path / "missing.png"), "output": str(tmp_path / "o2"), "motion": str(motion)}})
    error = serve.until_final(11)["error"]
    assert "image not found" in error and not (tmp_path / "o2").exists()


@pytest.mark.slow
def test_cancel_mid_job_leaves_no_output_and_ping_answers_meanwhile(serve, tmp_path):
    image, motion = tiny_inputs(tmp_path, width=320, height=200)
    outdir = tmp_path / "cancelled"
    serve.send({"id": 20, "method": "animate", "params": {
        "image": str(image), "output": str(outdir), "motion": str(motion), "frames": 400, "fps": 30}})
    while True:  # wait until the job is really rendering
        message = serve.read()
        if message.get("event") == "progress" and message["done"] >= 1:
            break
        assert "error" not in message and "result" not in message, message
    serve.send({"id": 21, "method": "ping"})
    serve.send({"id": 22, "method": "cancel", "params": {"target": 20}})
    replies = {}
    while 20 not in replies:
        message = serve.read()
        if "result" in message or "error" in message:
            replies[message["id"]] = message
    assert replies[21]["result"]["pong"] is True and replies[21]["result"]["busy"] == 1
    assert replies[22]["result"]["cancelled"] is True
    assert replies[20]["error"] == "cancelled"
    assert not outdir.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".cancelled")]  # no temp folder left
    serve.send({"id": 23, "method": "cancel", "params": {"target": 20}})
    assert serve.until_final(23)["result"]["cancelled"] is False  # already over


@pytest.mark.slow
def test_end_of_input_stops_the_server(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "gdyn_backend", "serve"],
                          input='{"id": 1, "method": "ping"}\n', capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert json.loads(proc.stdout.splitlines()[0])["result"]["pong"] is True
    assert "ready" in proc.stderr


@pytest.mark.slow
def test_simulate_job_writes_outdir_and_rejects_bad_pokes(serve, tmp_path):
    image, motion = tiny_inputs(tmp_path)
    outdir = tmp_path / "sim"
    serve.send({"id": 30, "method": "simulate", "params": {
        "image": str(image), "motion": str(motion), "output": str(outdir), "frames": 8, "fps": 30,
        "pokes": [{"frame": 1, "x": 24, "y": 16, "dx": 3, "dy": 0}],
        "drags": [{"start": 3, "end": 4, "x": 10, "y": 10, "dx": 0, "dy": 2}]}})
    reply = serve.until_final(30)
    assert "result" in reply, reply
    assert len(list((outdir / "frames").glob("*.png"))) == 8
    maps = [io.read_displacement_exr(outdir / "displacement" / f"{i:04d}.exr") for i in (0, 2)]
    assert np.abs(maps[0]).max() == 0.0  # frame 0 is the still at rest
    assert np.abs(maps[1][0]).max() > 0.1  # the push to the right moved something along x
    assert reply["result"]["source"] == "simulation of test" and reply["result"]["frames"] == 8
    record = json.loads(spectral.load_volume(outdir / "motion.safetensors").metadata["simulation"])
    assert record["pokes"] == [{"frame": 1, "x": 24.0, "y": 16.0, "dx": 3.0, "dy": 0.0, "duration": 1}]
    bad = {"image": str(image), "motion": str(motion), "output": str(tmp_path / "bad"), "frames": 24}
    cases = [
        ({"pokes": [{"frame": 1, "x": 24, "y": 16, "dx": 3}]},
         "simulate: poke 1: missing key 'dy'; keys: frame, x, y, dx, dy, duration"),
        ({"pokes": [{"frame": 1, "x": 24, "y": 16, "dx": 3, "dy": 0}, {"frame": 49, "x": 24, "y": 16, "dx": 3, "dy": 0}]},
         "poke 2: frame 49 is past the last frame 23"),
        ({"drags": [{"start": 3, "end": 4, "x": 10, "y": "ten", "dx": 0, "dy": 2}]},
         "simulate: drag 1: key 'y' must be a number, got 'ten'"),
        ({"forces": [{"frame": 1, "x": 24, "y": 16, "dx": 3, "dy": 0}]},  # protocol 1's name is gone
         ("simulate: unknown parameter 'forces'; allowed: image, output, motion, pokes, drags, damping, "
          "frames, fps, integrator, mask, video, bit_depth")),
    ]
    for n, (change, error) in enumerate(cases):
        serve.send({"id": 31 + n, "method": "simulate", "params": {**bad, **change}})
        assert serve.until_final(31 + n)["error"] == error
    assert not (tmp_path / "bad").exists()


# -- hostile requests: every one answered with one line, the server keeps serving -----------------


def _hostile_requests(paths: dict[str, str], ro: str | None) -> list[tuple[object, str, str]]:
    """(request line or object, the id its reply carries, words the error must hold)."""
    still, motion, out = paths["still"], paths["motion"], paths["out"]
    job = {"image": still, "motion": motion, "output": f"{out}/never", "frames": 2}
    poke = {"frame": 1, "x": 10, "y": 10, "dx": 2, "dy": 0}

    def animate(rid, **change):
        return {"id": rid, "method": "animate", "params": {**job, **change}}

    def simulate(rid, **change):
        return {"id": rid, "method": "simulate", "params": {**job, "pokes": [poke], **change}}

    requests = [
        ("this is not json {", None, "malformed JSON request"),
        ("", None, None),  # an empty line is skipped: no reply
        ('{"id": 1, "method": "ping"', None, "malformed JSON request"),
        ("[" * 100_000 + "]" * 100_000, None, "malformed JSON request"),
        ("[1, 2, 3]", None, "must be a JSON object"),
        ('"ping"', None, "must be a JSON object"),
        ("null", None, "must be a JSON object"),
        ('{"id": NaN, "method": "ping"}', None, "NaN is not a JSON number"),
        ('{"id": 101, "method": "animate", "params": {"frames": Infinity}}', None, "Infinity is not a JSON number"),
        ('{"id": 102, "method": "animate", "params": {"frames": NaN}}', None, "NaN is not a JSON number"),
        ({"id": 103}, 103, '"method" must be a string'),
        ({"id": 104, "method": 7}, 104, '"method" must be a string'),
        ({"id": 105, "method": "levitate"}, 105, "unknown method 'levitate'"),
        ({"id": 106, "method": "ping", "params": []}, 106, '"params" of ping must be a JSON object'),
        ({"id": 107, "method": "ping", "params": "x"}, 107, '"params" of ping must be a JSON object'),
        ({"id": 108, "method": "ping", "params": {"verbose": True}}, 108, "ping: unknown parameter 'verbose'"),
        ({"id": 109, "method": "ping", "jsonrpc": "2.0"}, 109, "unknown request key 'jsonrpc'"),
        ({"id": 110, "method": "cancel", "params": {}}, 110, "cancel: missing parameter 'target'"),
        ({"id": 111, "method": "cancel", "params": {"target": 1, "all": True}}, 111, "unknown parameter 'all'"),
        ({"id": 112, "method": "shutdown", "params": {"now": True}}, 112, "unknown parameter 'now'"),
        ({"id": 113, "method": "animate"}, 113, "missing parameter 'image'"),
        (animate(114, image=""), 114, "missing parameter 'image'"),
        (animate(115, image=5), 115, "'image' must be a file path"),
        (animate(116, output=["a"]), 116, "'output' must be a file path"),
        (animate(117, loop="no"), 117, "'loop' must be true or false, got 'no'"),
        (animate(118, loop=1), 118, "'loop' must be true or false, got 1"),
        (animate(119, frames="ten"), 119, "'frames' must be an integer"),
        (animate(120, frames=2.5), 120, "'frames' must be an integer"),
        (animate(121, frames=True), 121, "'frames' must be an integer"),
        (animate(122, frames=0), 122, "--frames must be at least 1"),
        (animate(123, fps=-30), 123, "--fps must be a positive number"),
        (animate(124, fps=1e400), None, "Infinity is not a JSON number"),  # json.dumps writes inf as Infinity
        (animate(125, seed=-1), 125, "--seed must be a whole number from 0"),
        (animate(126, seed=2**40), 126, "--seed must be a whole number from 0"),
        (animate(127, amplitude=1e30), 127, "is too large"),
        (animate(128, bit_depth=12), 128, "--bit-depth must be 8 or 16"),
        (animate(129, source="magic"), 129, "unknown motion source 'magic'"),
        (animate(130, source="motion", motion=None), 130, 'source "motion" needs a "motion" file'),
        (animate(131, wobble=1), 131, "animate: unknown parameter 'wobble'"),
        (animate(132, image=paths["cut_jpg"]), 132, "truncated"),
        (animate(133, image=paths["huge_png"]), 133, "a 100000x100000 still needs"),
        (animate(134, image=paths["a_folder"]), 134, "is a folder"),
        (animate(135, motion=paths["m_float64"]), 135, "amplitudes are float64"),
        (animate(136, motion=paths["m_negative_fps"]), 136, "fps in the metadata must be a positive number"),
        (animate(137, motion=paths["m_absurd"]), 137, "moves pixels by up to"),
        (animate(138, video=f"{out}/v.avi"), 138, "--video must end in .mp4 or .gif"),
        (animate(139, output=f"{paths['a_file_txt']}/out"), 139, "a file stands where a folder is needed"),
        (animate(140, mask=paths["square_mask"]), 140, "aspect ratios differ"),
        (simulate(141, pokes={"frame": 1}), 141, "'pokes' must be a list of objects"),
        (simulate(142, pokes=[[1, 2, 3]]), 142, "poke 1 must be an object"),
        (simulate(143, pokes=[{**poke, "dx": "2"}]), 143, "poke 1: key 'dx' must be a number"),
        (simulate(144, pokes=[{**poke, "dx": 1e30}]), 144, "larger than the 48x32 image"),
        (simulate(145, pokes=[{**poke, "x": 500}]), 145, "outside the 48x32 image"),
        (simulate(146, damping=1.5), 146, "damping must be a ratio"),
        (simulate(147, integrator=3), 147, "'integrator' must be a string"),
        (simulate(148, motion=paths["m_nan"]), 148, "NaN or infinite"),
        (simulate(149, drags=[{"start": 5, "end": 2, "x": 1, "y": 1, "dx": 1, "dy": 0}]), 149, "0 <= start <= end"),
    ]
    if ro is not None:
        requests += [(animate(150, output=f"{ro}/out"), 150, "read-only file system"),
                     (animate(151, output=f"{out}/v_ok", video=f"{ro}/v.mp4"), 151, "read-only file system"),
                     (simulate(152, output=f"{ro}/sim"), 152, "read-only file system")]
    return requests


@pytest.fixture(scope="module")
def hostile_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    paths = {k: str(v) for k, v in hostile_inputs(root / "inputs").items()}
    (root / "out").mkdir()
    return root, {**paths, "out": str(root / "out")}


@pytest.mark.slow
def test_hostile_requests_get_one_line_each_and_the_server_keeps_serving(hostile_files, tmp_path):
    root, paths = hostile_files
    ro = tmp_path / "ro"
    prefix = private_mounts(tmp_path / "probe")
    if prefix is None:  # no private mount namespace: every case but the read-only output
        serve, ro_path = Serve(), None
    else:
        ro.mkdir()
        serve = Serve([*prefix, "sh", "-c", f"mount -t tmpfs -o ro,size=64k tmpfs '{ro}' && "
                                            f"exec '{sys.executable}' -m gdyn_backend serve"])
        ro_path = str(ro)
    try:
        requests = _hostile_requests(paths, ro_path)
        before = snapshot(root)
        for request, rid, words in requests:
            serve.send(request)
            if words is None:
                continue
            reply = serve.until_final(rid, timeout=60)
            assert "error" in reply, (request, reply)
            assert words in reply["error"] and "\n" not in reply["error"], (request, reply)
            assert "internal error" not in reply["error"], reply
        serve.send({"id": "last", "method": "ping"})
        assert serve.until_final("last")["result"]["pong"] is True
        assert serve.proc.poll() is None
        assert snapshot(root) == before
    finally:
        serve.close()
    assert "Traceback" not in serve.proc.stderr.read()
    assert sum(1 for _, _, words in requests if words) >= 40


@pytest.mark.slow
def test_request_ids_of_any_json_type_are_answered(serve, tmp_path):
    image, motion = tiny_inputs(tmp_path)
    ids = [[1], {"a": 1}, "seven", 1.5, True, None, [{"deep": [1, {"x": None}]}], -3, ""]
    for rid in ids:
        serve.send({"id": rid, "method": "ping"})
        assert serve.until_final(rid)["result"]["pong"] is True
    serve.send({"id": 1, "method": "cancel", "params": {"target": [1]}})  # a list: nothing runs under it
    assert serve.until_final(1)["result"]["cancelled"] is False
    # A job under a list id runs, reports progress under that id, and can be cancelled by it.
    job = {"image": str(image), "motion": str(motion), "frames": 400}
    serve.send({"id": [2], "method": "animate", "params": {**job, "output": str(tmp_path / "a")}})
    while True:
        message = serve.read()
        if message.get("event") == "progress" and message["id"] == [2] and message["done"] >= 1:
            break
    serve.send({"id": {"c": 1}, "method": "cancel", "params": {"target": [2]}})
    replies = {}
    while "job" not in replies:
        message = serve.read()
        if message.get("id") == {"c": 1}:
            replies["cancel"] = message
        elif message.get("id") == [2] and "event" not in message:
            replies["job"] = message
    assert replies["cancel"]["result"]["cancelled"] is True and replies["job"]["error"] == "cancelled"
    # 1 and true are two ids (Python's dict would take them for one).
    serve.send({"id": True, "method": "cancel", "params": {"target": 1}})
    assert serve.until_final(True)["result"]["cancelled"] is False
    assert not (tmp_path / "a").exists()


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="RSS read from /proc (Linux)")
@pytest.mark.slow
def test_a_hundred_jobs_in_a_row_do_not_grow_memory(serve, tmp_path):
    image, motion = tiny_inputs(tmp_path)
    job = {"image": str(image), "motion": str(motion), "output": str(tmp_path / "out"), "frames": 2}

    def run(first: int, count: int) -> None:
        for rid in range(first, first + count):
            serve.send({"id": rid, "method": "animate", "params": job})
            assert "result" in serve.until_final(rid)

    run(0, 20)  # warm up: imports, caches, the allocator's pools
    before = _rss_kib(serve.proc.pid)
    run(1000, 100)
    growth = _rss_kib(serve.proc.pid) - before
    print(f"RSS of gdyn serve over 100 jobs: {before} kB -> {before + growth} kB ({growth:+d} kB)")
    assert growth < 1024, f"{growth} kB over 100 jobs"


@pytest.mark.slow
def test_sigterm_mid_job_removes_the_partial_output(tmp_path):
    image, motion = tiny_inputs(tmp_path)
    serve = Serve()
    serve.send({"id": 1, "method": "animate", "params": {
        "image": str(image), "motion": str(motion), "output": str(tmp_path / "out"), "frames": 5000}})
    while True:
        message = serve.read()
        if message.get("event") == "progress" and message["done"] >= 2:
            break
    serve.proc.send_signal(signal.SIGTERM)
    assert serve.proc.wait(timeout=60) == 128 + signal.SIGTERM
    assert "Traceback" not in serve.proc.stderr.read()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["motion.safetensors", "still.png"]
