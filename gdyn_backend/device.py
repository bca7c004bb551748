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
