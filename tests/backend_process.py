"""`gdyn serve` as a subprocess, driven the way the add-on drives it (the `serve` fixture's class)."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time

SERVE_TIMEOUT_S = 120.0


class Serve:
    """A `gdyn serve` process with a reader thread; `read()` waits for the next reply.

    command: how to start it (default `python -m gdyn_backend serve`), e.g. inside a shell
    that mounts a read-only folder first."""

    def __init__(self, command: list[str] | None = None):
        self.proc = subprocess.Popen(command or [sys.executable, "-m", "gdyn_backend", "serve"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, bufsize=1)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))  # every stdout line must be JSON
        self.lines.put(None)

    def send(self, obj) -> None:
        self.proc.stdin.write((obj if isinstance(obj, str) else json.dumps(obj)) + "\n")
        self.proc.stdin.flush()

    def read(self, timeout: float = SERVE_TIMEOUT_S):
        return self.lines.get(timeout=timeout)

    def until_final(self, rid, events: list | None = None, timeout: float = SERVE_TIMEOUT_S) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            message = self.read(max(deadline - time.monotonic(), 0.1))
            assert message is not None, "the server exited"
            if message.get("id") == rid and ("result" in message or "error" in message):
                return message
            if events is not None:
                events.append(message)

    def close(self):
        if self.proc.poll() is None:
            self.send({"id": 999, "method": "shutdown"})
            self.proc.wait(timeout=30)
