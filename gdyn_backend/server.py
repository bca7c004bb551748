"""`gdyn serve`: the stdio backend the Blender add-on talks to (README.md, "The backend process").

Protocol: one JSON object per line on stdin (requests) and stdout (replies);
stderr carries human-readable logs only.

    request   {"id": N, "method": "animate", "params": {...}}
    progress  {"id": N, "event": "progress", "stage": "render", "done": 3, "total": 48}
    result    {"id": N, "result": {...}}
    error     {"id": N, "error": "one line saying what is wrong and what to do"}
    cancel    {"id": M, "method": "cancel", "params": {"target": N}}

Quick methods (`ping`, `cancel`, `shutdown`, `presets`) are answered on the
reading thread; `info` runs on a thread of its own (it imports torch); long
jobs (`animate`, `simulate`) run one at a time on a worker thread, so a
cancel or a ping is answered while a job runs. Interactive requests (the
live sessions `live_open`, `live_step`, `live_close` of
`gdyn_backend.live_sessions`, and `mask`) run in arrival order on a thread
of their own: a live step never waits behind a long job (the two share the
CPU, so a step is slower while a job renders, but it is not queued). A
cancelled job replies with the error "cancelled" and its output folder
never appears (outputs are written through `io.atomic_output_dir`). Large
arrays travel as files named in params and results, never through the pipe
(a live step's frame too). No sockets are opened.
A malformed line or an unknown method gets an error reply and the server
keeps running; end of input or `shutdown` cancels what is running and exits.
`ping` answers `protocol`: PROTOCOL_VERSION, raised whenever a request or a
reply changes shape. Job params are read by the options' own schemas
(`AnimateOptions.from_params`, `SimulateOptions.from_params`, and the
live and mask requests' own).
"""

from __future__ import annotations

import json
import queue
import sys
import threading
import time
import traceback
from typing import Any, Callable, TextIO

from gdyn_backend import __version__
from gdyn_backend.errors import Cancelled, UserError
from gdyn_backend.params import required_path
from gdyn_backend.progress import Progress

PROTOCOL_VERSION = 3  # 2: simulate takes "pokes" (was "forces"); 3: live_open/step/close, mask
PROGRESS_INTERVAL_S = 0.05  # at most ~20 progress events per second per job


def _one_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return " ".join(lines) if lines else "unknown error"


class Server:
    """Reads requests from `stdin`, writes replies to `stdout` (both text streams)."""

    def __init__(self, stdin: TextIO, stdout: TextIO, log: TextIO | None = None):
        self._stdin, self._stdout = stdin, stdout
        self._log = log or sys.stderr
        self._write_lock = threading.Lock()
        self._jobs_lock = threading.Lock()
        self._progress: dict[Any, Progress] = {}  # queued or running jobs by request id
        self._queue: queue.Queue = queue.Queue()
        self._worker = threading.Thread(target=self._work, name="gdyn-job", daemon=True)
        self._interactive_queue: queue.Queue = queue.Queue()
        self._interactive_worker = threading.Thread(target=self._interact, name="gdyn-live", daemon=True)
        self._quick: dict[str, Callable[[dict], dict]] = {
            "ping": self._ping, "presets": self._presets}
        self._jobs: dict[str, Callable[[dict, Progress], dict]] = {
            "animate": _animate, "simulate": _simulate}
        self._interactive = ("live_open", "live_step", "live_close", "mask")

    # -- transport ---------------------------------------------------------

    def send(self, message: dict) -> None:
        line = json.dumps(message, separators=(",", ":"))
        with self._write_lock:
            try:
                self._stdout.write(line + "\n")
                self._stdout.flush()
            except (BrokenPipeError, ValueError, OSError):  # the add-on is gone: nobody to tell
                pass

    def _reply_error(self, rid, message: str) -> None:
        self.send({"id": rid, "error": _one_line(message)})

    def serve(self) -> int:
        """Answer requests until `shutdown` or end of input; returns the exit status."""
        self._worker.start()
        self._interactive_worker.start()
        print(f"gdyn serve {__version__}: ready (protocol {PROTOCOL_VERSION})", file=self._log, flush=True)
        for line in self._stdin:
            if not line.strip():
                continue
            if self._handle_line(line) == "shutdown":
                break
        self._stop()
        return 0

    def _handle_line(self, line: str) -> str | None:
        try:
            request = json.loads(line)
        except json.JSONDecodeError as exc:
            self._reply_error(None, f"malformed JSON request ({exc.msg} at column {exc.colno}); "
                                    "send one JSON object per line")
            return None
        if not isinstance(request, dict) or not isinstance(request.get("method"), str):
            rid = request.get("id") if isinstance(request, dict) else None
            self._reply_error(rid, 'a request must be a JSON object with "id", "method" and "params"')
            return None
        rid, method = request.get("id"), request["method"]
        params = request.get("params") or {}
        if not isinstance(params, dict):
            self._reply_error(rid, f'"params" of {method} must be a JSON object')
            return None
        if method == "shutdown":
            self._stop()
            self.send({"id": rid, "result": {"stopped": True}})
            return "shutdown"
        if method == "cancel":
            self.send({"id": rid, "result": {"cancelled": self._cancel(params.get("target"))}})
        elif method == "info":
            threading.Thread(target=self._answer, args=(rid, _info, params), daemon=True).start()
        elif method in self._quick:
            self._answer(rid, self._quick[method], params)
        elif method in self._jobs:
            with self._jobs_lock:
                if rid in self._progress:
                    self._reply_error(rid, f"request id {rid} is already in use by a running job")
                    return None
                progress = Progress(self._progress_sender(rid))
                self._progress[rid] = progress
            self._queue.put((rid, method, params, progress))
        elif method in self._interactive:
            self._interactive_queue.put((rid, method, params))
        else:
            known = sorted(["cancel", "shutdown", "info", *self._quick, *self._jobs, *self._interactive])
            self._reply_error(rid, f"unknown method {method!r}; known: {', '.join(known)}")
        return None

    def _answer(self, rid, fn: Callable[[dict], dict], params: dict) -> None:
        try:
            self.send({"id": rid, "result": fn(params)})
        except UserError as exc:
            self._reply_error(rid, str(exc))
        except Exception as exc:  # a bug: keep the server alive, log the traceback
            traceback.print_exc(file=self._log)
            self._reply_error(rid, f"internal error: {type(exc).__name__}: {exc} (see the backend log)")

    # -- jobs --------------------------------------------------------------

    def _progress_sender(self, rid) -> Callable[[str, int, int], None]:
        last = {"t": 0.0, "stage": None}

        def send(stage: str, done: int, total: int) -> None:
            now = time.monotonic()
            if stage == last["stage"] and done < total and now - last["t"] < PROGRESS_INTERVAL_S:
                return
            last["t"], last["stage"] = now, stage
            self.send({"id": rid, "event": "progress", "stage": stage, "done": done, "total": total})

        return send

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            rid, method, params, progress = item
            try:
                progress.check()  # cancelled while queued
                result = self._jobs[method](params, progress)  # done: a late cancel changes nothing
                reply = {"id": rid, "result": result}
            except Cancelled:
                reply = {"id": rid, "error": "cancelled"}
            except UserError as exc:
                reply = {"id": rid, "error": _one_line(str(exc))}
            except Exception as exc:
                traceback.print_exc(file=self._log)
                reply = {"id": rid, "error": f"internal error: {type(exc).__name__}: {_one_line(str(exc))} "
                                             "(see the backend log)"}
            with self._jobs_lock:  # the job is over before its reply is seen
                self._progress.pop(rid, None)
            self.send(reply)

    def _interact(self) -> None:
        """The interactive thread: live-session and mask requests, one at a time, in arrival order.

        It owns the live sessions (imported here, so numpy and OpenCV load
        after the server is ready) and closes them when the server stops.
        """
        from gdyn_backend.live_sessions import LiveSessions

        live = LiveSessions()
        handlers = {"live_open": live.open, "live_step": live.step, "live_close": live.close, "mask": _mask}
        try:
            while True:
                item = self._interactive_queue.get()
                if item is None:
                    return
                rid, method, params = item
                self._answer(rid, handlers[method], params)
        finally:
            live.close_all()

    def _cancel(self, target) -> bool:
        with self._jobs_lock:
            progress = self._progress.get(target)
        if progress is None:
            return False
        progress.cancel()
        return True

    def _stop(self) -> None:
        with self._jobs_lock:
            for progress in self._progress.values():
                progress.cancel()
        if self._worker.is_alive():
            self._queue.put(None)
            self._worker.join()
        if self._interactive_worker.is_alive():
            self._interactive_queue.put(None)
            self._interactive_worker.join()

    # -- quick methods -----------------------------------------------------

    def _ping(self, params: dict) -> dict:
        return {"pong": True, "version": __version__, "protocol": PROTOCOL_VERSION,
                "python": sys.executable, "busy": len(self._progress)}

    def _presets(self, params: dict) -> dict:
        from gdyn_backend.presets import list_presets, load_preset

        presets = [load_preset(name) for name in list_presets()]
        return {"presets": [{"name": p.name, "label": p.label, "description": p.description}
                            for p in presets]}


def _info(params: dict) -> dict:
    from gdyn_backend.cli.info import collect

    return collect()


# -- job adapters: JSON params -> pipeline calls ----------------------------


def _result(done) -> dict:
    """A `sequence.RenderResult` as JSON: output folder, frame count, motion file, video, source."""
    return {"output": str(done.outdir), "frames": done.frames, "motion": str(done.motion),
            "video": str(done.video) if done.video is not None else None, "source": done.source}


def _animate(params: dict, progress: Progress) -> dict:
    """params: image, output and the options of `gdyn animate` (`AnimateOptions.from_params`)."""
    from gdyn_backend.animate import AnimateOptions, animate

    done = animate(required_path(params, "image", "animate"), required_path(params, "output", "animate"),
                   AnimateOptions.from_params(params), progress)
    return _result(done)


def _simulate(params: dict, progress: Progress) -> dict:
    """params: image, output and the options of `gdyn simulate` (`SimulateOptions.from_params`):
    motion, pokes [{frame, x, y, dx, dy, duration}], drags [{start, end, x, y, dx, dy}]
    (still pixels, frames from 0), damping, frames, fps, integrator, mask, video, bit_depth."""
    from gdyn_backend.simulate import SimulateOptions, simulate

    done = simulate(required_path(params, "image", "simulate"), required_path(params, "output", "simulate"),
                    SimulateOptions.from_params(params), progress)
    return _result(done)


def _mask(params: dict) -> dict:
    """params: image, output (a .png) and preset (default gentle_breeze), as `gdyn mask`;
    result: {output, width, height} (the photo's size in pixels)."""
    from gdyn_backend.mask import MaskOptions, write_mask

    options = MaskOptions.from_params(params)
    output, width, height = write_mask(options.image, options.output, options.preset)
    return {"output": str(output), "width": width, "height": height}
