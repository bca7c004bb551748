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
Every request is checked against one schema before anything runs: its
keys (`REQUEST_KEYS`), the params of the quick methods (`NoParams`,
`CancelParams`), and the params of jobs by the options' own schemas
(`AnimateOptions.from_params`, `SimulateOptions.from_params`, through
`gdyn_backend.params`; the live and mask requests by their own). A request id may be any JSON value and is answered
as it came. A malformed line, a bad field, an unknown method or an OS error
(a read-only output, a full disk) gets a one-line error reply and the server
keeps running; end of input, `shutdown`, SIGTERM or SIGHUP cancels what is
running (its partial output is removed) and exits.
`ping` answers `protocol`: PROTOCOL_VERSION, raised whenever a request or a
reply changes shape.
"""

from __future__ import annotations

import json
import queue
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable, TextIO

from gdyn_backend import __version__
from gdyn_backend.errors import Cancelled, UserError, os_error_message
from gdyn_backend.params import option_values, required_path
from gdyn_backend.progress import Progress

PROTOCOL_VERSION = 3  # 2: simulate takes "pokes" (was "forces"); 3: live_open/step/close, mask
PROGRESS_INTERVAL_S = 0.05  # at most ~20 progress events per second per job
REQUEST_KEYS = ("id", "method", "params")


@dataclass
class NoParams:
    """The params of `ping`, `presets`, `info` and `shutdown`: none (an empty object or none at all)."""


@dataclass
class CancelParams:
    """The params of `cancel`: the id of the request to cancel (any JSON value)."""

    target: Any


QUICK_PARAMS = {"ping": NoParams, "presets": NoParams, "info": NoParams, "shutdown": NoParams,
                "cancel": CancelParams}


def _job_key(rid) -> str:
    """A request id (any JSON value: 7, "a", [1], {"a": 1}) as a key of the job table.
    Canonical JSON, so unhashable ids work and 1, 1.0 and true stay three ids."""
    return json.dumps(rid, sort_keys=True)


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _parse(line: str):
    """A request line as JSON (standard JSON: NaN and Infinity are refused); UserError if it is not."""
    try:
        return json.loads(line, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise UserError(f"malformed JSON request ({exc.msg} at column {exc.colno}); "
                        "send one JSON object per line") from None
    except ValueError as exc:
        raise UserError(f"malformed JSON request ({exc}); send one JSON object per line") from None
    except RecursionError:
        raise UserError("malformed JSON request (nested too deeply); send one JSON object per line") from None


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
        self._interactive = ("live_open", "live_step", "live_close", "mask")
        self._quick: dict[str, Callable[[dict], dict]] = {
            "ping": self._ping, "presets": self._presets}
        self._jobs: dict[str, Callable[[dict, Progress], dict]] = {
            "animate": _animate, "simulate": _simulate}

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
        """Answer requests until `shutdown` or end of input; returns the exit status.

        Whatever ends it (a signal included) cancels the running job first, so
        its partial output is removed.
        """
        self._worker.start()
        self._interactive_worker.start()
        print(f"gdyn serve {__version__}: ready (protocol {PROTOCOL_VERSION})", file=self._log, flush=True)
        try:
            for line in self._stdin:
                if line.strip() and self._handle_line(line) == "shutdown":
                    break
        finally:
            self._stop()
        return 0

    def _handle_line(self, line: str) -> str | None:
        rid = None
        try:
            request = _parse(line)
            if isinstance(request, dict):
                rid = request.get("id")
            rid, method, params = _checked_request(request)
            return self._dispatch(rid, method, params)
        except UserError as exc:
            self._reply_error(rid, str(exc))
        except Exception as exc:  # a bug: keep the server alive, log the traceback
            traceback.print_exc(file=self._log)
            self._reply_error(rid, f"internal error: {type(exc).__name__}: {exc} (see the backend log)")
        return None

    def _dispatch(self, rid, method: str, params: dict) -> str | None:
        if method in QUICK_PARAMS:
            values = option_values(QUICK_PARAMS[method], params, method)
            if method == "shutdown":
                self._stop()
                self.send({"id": rid, "result": {"stopped": True}})
                return "shutdown"
            if method == "cancel":
                self.send({"id": rid, "result": {"cancelled": self._cancel(values["target"])}})
            elif method == "info":
                threading.Thread(target=self._answer, args=(rid, _info, params), daemon=True).start()
            else:
                self._answer(rid, self._quick[method], params)
        elif method in self._jobs:
            with self._jobs_lock:
                if _job_key(rid) in self._progress:
                    raise UserError(f"request id {json.dumps(rid)} is already in use by a running job")
                progress = Progress(self._progress_sender(rid))
                self._progress[_job_key(rid)] = progress
            self._queue.put((rid, method, params, progress))
        elif method in self._interactive:
            self._interactive_queue.put((rid, method, params))
        else:
            known = sorted([*QUICK_PARAMS, *self._jobs, *self._interactive])
            raise UserError(f"unknown method {method!r}; known: {', '.join(known)}")
        return None

    def _answer(self, rid, fn: Callable[[dict], dict], params: dict) -> None:
        self.send(_outcome(rid, fn, params, log=self._log))

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
            # done: a late cancel changes nothing
            reply = _outcome(rid, self._jobs[method], params, progress, self._log)
            with self._jobs_lock:  # the job is over before its reply is seen
                self._progress.pop(_job_key(rid), None)
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
            progress = self._progress.get(_job_key(target))
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


def _checked_request(request) -> tuple[Any, str, dict]:
    """(id, method, params) of a parsed request line; UserError naming what is wrong."""
    shape = 'a request must be a JSON object with "id", "method" and "params"'
    if not isinstance(request, dict):
        raise UserError(shape)
    unknown = [key for key in request if key not in REQUEST_KEYS]
    if unknown:
        raise UserError(f"unknown request key {unknown[0]!r}; {shape}")
    method = request.get("method")
    if not isinstance(method, str):
        raise UserError(f'{shape}; "method" must be a string, got {json.dumps(method)}')
    params = request.get("params")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise UserError(f'"params" of {method} must be a JSON object, got {json.dumps(params)}')
    return request.get("id"), method, params


def _outcome(rid, fn: Callable, params: dict, progress: Progress | None = None, log: TextIO | None = None) -> dict:
    """The reply to request `rid`: {"result": fn(params[, progress])} or {"error": "one line"}.

    A user error, an OS error (`errors.os_error_message`) and a cancel are one line;
    anything else is a bug: the reply says "internal error" and the log gets the traceback.
    """
    try:
        if progress is None:
            return {"id": rid, "result": fn(params)}
        progress.check()  # cancelled while queued
        return {"id": rid, "result": fn(params, progress)}
    except Cancelled:
        return {"id": rid, "error": "cancelled"}
    except UserError as exc:
        return {"id": rid, "error": _one_line(str(exc))}
    except OSError as exc:
        return {"id": rid, "error": _one_line(os_error_message(exc))}
    except Exception as exc:  # a bug: keep the server alive, log the traceback
        traceback.print_exc(file=log or sys.stderr)
        return {"id": rid, "error": f"internal error: {type(exc).__name__}: {_one_line(str(exc))} "
                                    "(see the backend log)"}


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
