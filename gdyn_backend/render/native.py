"""The native CPU kernel: built on first use, cached, optional.

One library from two C files: `splat_kernel.c`, the default renderer, and
`exr_rle.c`, the RLE chunks of the displacement maps' EXR files (`io.py`).
gdyn ships the kernel's C source (package data), not a compiled library, so
the wheel stays one file for every platform. The first process that renders
on the CPU compiles it with the machine's C compiler (`$CC`, else `cc`,
`gcc` or `clang`; 2 s on the 2-core machine) into the user cache folder,
keyed by the source, the compiler and the machine, and loads it with ctypes;
later processes load the cached library. Where no compiler works (most
Windows machines, a Mac without the command-line tools), `kernel()` returns
None and the renderer runs on the portable path (scipy.sparse and torch): the
same frames, 2-5x slower (README, "Performance"); the maps are then written by
OpenCV (three channels, B = 0, 4x slower). `GDYN_NATIVE=0` turns the
kernel off; `status()` says which path runs (`gdyn info`, `gdyn bench`).
"""

from __future__ import annotations

import ctypes
import hashlib
import itertools
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
from importlib import resources
from pathlib import Path

SOURCES = ("splat_kernel.c", "exr_rle.c")
COMPILE_SECONDS = 120  # a compiler that takes longer is treated as broken
_lock = threading.Lock()
_state: dict = {}  # "kernel": the loaded library or None; "status": one line


def cache_dir() -> Path:
    """Where built kernels live: $GDYN_CACHE_DIR, else $XDG_CACHE_HOME/gdyn, else ~/.cache/gdyn."""
    if os.environ.get("GDYN_CACHE_DIR"):
        return Path(os.environ["GDYN_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gdyn"


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _build(sources: dict[str, bytes]) -> tuple[ctypes.CDLL | None, str]:
    """Compile (or find in the cache) and load the kernel: (library or None, status line)."""
    compiler = _compiler()
    if compiler is None:
        return None, "portable (no C compiler found: set CC, or install gcc or clang, for the native kernel)"
    try:
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True,
                                 timeout=COMPILE_SECONDS).stdout.splitlines()[:1]
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"portable (the C compiler {compiler} does not run: {exc})"
    flags = ["-O3", "-std=c11", "-shared", "-fPIC"]
    key = hashlib.sha256(b"\0".join([*sources.values(), compiler.encode(), "".join(version).encode(),
                                     " ".join(flags).encode(), platform.machine().encode(),
                                     sys.platform.encode()])).hexdigest()[:16]
    suffix = ".dll" if sys.platform == "win32" else ".so"
    library = cache_dir() / f"gdyn_kernel-{key}{suffix}"
    if not library.exists():
        try:
            library.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=library.parent) as work:
                built, files = Path(work) / f"kernel{suffix}", [Path(work) / name for name in sources]
                for file, text in zip(files, sources.values()):
                    file.write_bytes(text)
                done = subprocess.run([compiler, *flags, "-o", str(built), *map(str, files), "-lm"],
                                      capture_output=True, text=True, timeout=COMPILE_SECONDS)
                if done.returncode != 0:
                    first = (done.stderr.strip().splitlines() or ["no message"])[0]
                    return None, f"portable (the native kernel did not compile with {compiler}: {first})"
                os.replace(built, library)  # whole or nothing, even with several processes building at once
        except (OSError, subprocess.SubprocessError) as exc:
            return None, f"portable (could not build the native kernel in {library.parent}: {exc})"
    try:
        kernel = ctypes.CDLL(str(library))
    except OSError as exc:
        return None, f"portable (could not load {library}: {exc})"
    pointer, size = ctypes.c_void_p, ctypes.c_int64
    kernel.gdyn_band_rows.argtypes = [pointer, size, size, size, size, pointer]
    kernel.gdyn_band_rows.restype = None
    kernel.gdyn_splat_band.argtypes = [pointer, pointer, pointer, size, size, size, size, pointer, size, size]
    kernel.gdyn_splat_band.restype = None
    kernel.gdyn_source_rows.argtypes = [pointer, pointer, size, size, ctypes.c_float, size, size, pointer, pointer]
    kernel.gdyn_source_rows.restype = None
    kernel.gdyn_stretch_sums.argtypes = [pointer, pointer, pointer, size, size, size, pointer, pointer, pointer, size,
                                         ctypes.c_float, ctypes.c_float, size, pointer]
    kernel.gdyn_stretch_sums.restype = None
    kernel.gdyn_render_strip.argtypes = [pointer, pointer, pointer, pointer, size, size, size, size, pointer, size,
                                         ctypes.c_float, ctypes.c_float, pointer, pointer, pointer, pointer, pointer]
    kernel.gdyn_render_strip.restype = size
    kernel.gdyn_halve.argtypes = [pointer, size, size, pointer, size, size, size, size, size, pointer, pointer]
    kernel.gdyn_halve.restype = None
    kernel.gdyn_push.argtypes = [pointer, size, size, pointer, size, size, pointer, size, size, size, size, size,
                                 pointer]
    kernel.gdyn_push.restype = None
    kernel.gdyn_fill_holes.argtypes = [pointer, size, size, size, pointer, size, pointer, pointer, pointer, pointer,
                                       size, size, pointer, size, size, pointer]
    kernel.gdyn_fill_holes.restype = None
    kernel.gdyn_exr_rle_chunks.argtypes = [pointer, pointer, size, size, pointer, pointer, pointer]
    kernel.gdyn_exr_rle_chunks.restype = size

    return kernel, f"native kernel ({Path(compiler).name}, {library})"


def kernel() -> ctypes.CDLL | None:
    """The loaded kernel library, or None (then the splat uses scipy.sparse); built once per process."""
    with _lock:
        if "status" not in _state:
            if os.environ.get("GDYN_NATIVE", "1") == "0":
                _state.update(kernel=None, status="portable (native kernel turned off by GDYN_NATIVE=0)")
            else:
                folder = resources.files("gdyn_backend.render")
                library, line = _build({name: folder.joinpath(name).read_bytes() for name in SOURCES})
                _state.update(kernel=library, status=line)
        return _state["kernel"]


def status() -> str:
    """One line: which CPU splat path runs, and why."""
    kernel()
    return _state["status"]


def run_parallel(calls: list, threads: int) -> list:
    """Run `calls` (no-argument functions that call into the kernel) on up to `threads` threads: this
    one and helpers of one process-wide pool (ctypes releases the GIL), each taking the next call
    not yet taken; their results in order. Working here too saves a hand-off: 5 % of a 512x288 frame."""
    if threads <= 1 or len(calls) <= 1:
        return [call() for call in calls]
    with _lock:
        pool = _state.get("pool")
        if pool is None or pool._max_workers < threads - 1:
            from concurrent.futures import ThreadPoolExecutor

            pool = _state["pool"] = ThreadPoolExecutor(threads - 1, thread_name_prefix="gdyn-native")
    results, taken = [None] * len(calls), itertools.count()  # next() on a count is atomic under the GIL

    def work() -> None:
        while (index := next(taken)) < len(calls):
            results[index] = calls[index]()

    helpers = [pool.submit(work) for _ in range(min(threads, len(calls)) - 1)]
    try:
        work()
    finally:  # nothing runs on after this returns or raises: a helper not started yet never will
        for helper in helpers:
            if not helper.cancel():
                helper.result()
    return results


def reset() -> None:
    """Forget the loaded kernel so that the next `kernel()` looks again (tests change GDYN_NATIVE and CC)."""
    with _lock:
        pool = _state.get("pool")
        _state.clear()
        if pool is not None:
            _state["pool"] = pool
