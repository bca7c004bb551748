"""The one rule for where torch work runs: the device asked for, else CUDA when present, else CPU.

MPS (Apple) is reported by `gdyn info` but not chosen by default: some
operators the renderer and the model use fall back to the CPU there.
"""

from __future__ import annotations

import torch


def torch_device(requested: str | torch.device | None = None) -> torch.device:
    """`requested` ("cpu", "cuda", "cuda:1", a torch.device) or, when None, CUDA if available else CPU."""
    if requested is not None:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def reuse_freed_memory() -> bool:
    """Ask glibc to keep freed frame-sized blocks for reuse instead of returning them to the system.

    A frame loop allocates and frees the same large buffers every frame (a
    3840x2160 splat sums ~200 MB). Above 32 MB glibc maps each allocation
    fresh and unmaps it on free, so every frame pays the page faults of
    touching new memory again: measured on the 2-core CI-class machine, 25 %
    of a 1920x1080 frame and 24 % of a 3840x2160 one. With blocks up to
    1 GiB served from the heap, and up to 1 GiB of freed heap kept, the next
    frame reuses mapped pages. Process-wide; called once by the `gdyn`
    command (CLI and backend server). Returns False where the C library is
    not glibc (macOS, Windows), which keep their own policies.
    """
    import ctypes
    import ctypes.util

    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mmap_threshold, trim_threshold = -3, -1  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD (malloc.h)
    return bool(mallopt(mmap_threshold, 1 << 30)) and bool(mallopt(trim_threshold, 1 << 30))
