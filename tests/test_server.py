"""`gdyn serve`: the JSON-lines protocol, as a subprocess, the way the add-on uses it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from synthetic import tiny_inputs

from gdyn_backend import io, spectral


def test_ping_presets_info(serve):
    serve.send({"id": 1, "method": "ping", "params": {}})
    reply = serve.until_final(1)
    assert reply["result"]["pong"] is True and reply["result"]["protocol"] == 3
    serve.send({"id": 2, "method": "presets", "params": {}})
    names = {p["name"] for p in serve.until_final(2)["result"]["presets"]}
    assert {"gentle_breeze", "candle_flame"} <= names
    serve.send({"id": 3, "method": "info"})
    assert serve.until_final(3)["result"]["gdyn"]


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


def test_end_of_input_stops_the_server(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "gdyn_backend", "serve"],
                          input='{"id": 1, "method": "ping"}\n', capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert json.loads(proc.stdout.splitlines()[0])["result"]["pong"] is True
    assert "ready" in proc.stderr


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
