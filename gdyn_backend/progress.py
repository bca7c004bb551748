"""Progress reporting and cancellation for long jobs (CLI bar, server events).

A job takes a `Progress` and calls `advance()` once per unit of work. The CLI
draws a bar on stderr; `gdyn serve` passes a callback that streams progress
events to Blender; either side cancels through `cancel()`, after which the
next `advance()`/`check()` raises `Cancelled`.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Callable

from gdyn_backend.errors import Cancelled

ProgressCallback = Callable[[str, int, int], None]  # (stage, done, total)


class Progress:
    """Counts work units of named stages; thread-safe cancellation."""

    def __init__(self, callback: ProgressCallback | None = None):
        self._callback = callback
        self._cancel = threading.Event()
        self.stage, self.done, self.total = "", 0, 0

    def start(self, stage: str, total: int) -> None:
        self.check()
        self.stage, self.done, self.total = stage, 0, max(int(total), 0)
        self._report()

    def advance(self, units: int = 1) -> None:
        self.check()
        self.done += units
        self._report()

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def check(self) -> None:
        if self._cancel.is_set():
            raise Cancelled("cancelled")

    def _report(self) -> None:
        if self._callback is not None:
            self._callback(self.stage, self.done, self.total)


def terminal_bar(stream=None, width: int = 30) -> ProgressCallback:
    """A callback that draws `stage [#####.....] done/total` on stderr.

    On a terminal it redraws in place; otherwise (CI, logs) it prints a line
    at every 10 % so logs stay short.
    """
    stream = stream or sys.stderr
    tty = stream.isatty()
    state = {"last": -1, "t": time.monotonic()}

    def draw(stage: str, done: int, total: int) -> None:
        if total <= 0:
            return
        frac = min(done / total, 1.0)
        if tty:
            now = time.monotonic()
            if done < total and now - state["t"] < 0.1:
                return
            state["t"] = now
            fill = int(frac * width)
            stream.write(f"\r{stage:<12} [{'#' * fill}{'.' * (width - fill)}] {done}/{total}")
            if done >= total:
                stream.write("\n")
        else:
            decile = int(frac * 10)
            if decile == state["last"]:
                return
            state["last"] = decile
            stream.write(f"{stage}: {done}/{total}\n")
        stream.flush()

    return draw
