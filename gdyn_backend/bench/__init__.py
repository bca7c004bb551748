"""Benchmarks behind `gdyn bench`.

Each section is a module here with `run(table: BenchTable, quick: bool)` that
adds rows. Figures are reported as ratios against a baseline measured in the
same process where the issue asks for one, and the machine is printed first.
"""

from __future__ import annotations

import importlib
import platform
import time
from dataclasses import dataclass, field

from gdyn_backend.errors import UserError

SECTIONS = ["flow", "model", "dynamics", "render", "prior"]


@dataclass
class BenchTable:
    rows: list[tuple[str, str, str, str]] = field(default_factory=list)

    def add(self, section: str, metric: str, value: str, note: str = "") -> None:
        self.rows.append((section, metric, value, note))

    def markdown(self) -> str:
        lines = ["| section | metric | value | note |", "|---|---|---|---|"]
        lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in self.rows]
        return "\n".join(lines)


def best_time(fn, repeats: int = 5, warmup: int = 1) -> float:
    """Smallest wall time of `fn()` over `repeats` runs, in seconds."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def machine_line(threads: int) -> str:
    import os

    import torch

    from gdyn_backend.render import native

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"{threads} threads used, {gpu}; torch {torch.__version__}; CPU renderer: {native.status()}")


def run_sections(only: list[str] | None, quick: bool = False, threads: int = 2) -> str:
    unknown = [name for name in only or () if name not in SECTIONS]
    if unknown:
        raise UserError(f"unknown bench section {unknown[0]!r}; choose from {', '.join(SECTIONS)}")
    if threads < 1:
        raise UserError(f"--threads must be at least 1, got {threads}")
    import cv2
    import torch

    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    table = BenchTable()
    for name in only or SECTIONS:
        importlib.import_module(f"gdyn_backend.bench.{name}").run(table, quick)
    return machine_line(threads) + "\n\n" + table.markdown()
