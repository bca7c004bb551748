"""`gdyn info`: versions, compute device, threads, model files."""

from __future__ import annotations

import os
import platform
from importlib import metadata

from gdyn_backend import __version__


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def describe_device() -> dict[str, str]:
    """The compute device gdyn will use and how many CPU threads it has."""
    import torch

    if torch.cuda.is_available():
        device = f"cuda ({torch.cuda.get_device_name(0)})"
    elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        device = "mps"
    else:
        device = "cpu"
    from gdyn_backend.render import native

    return {"device": device, "torch threads": str(torch.get_num_threads()),
            "cpu cores": str(os.cpu_count()), "cpu renderer": native.status()}


def collect() -> dict[str, str]:
    info = {"gdyn": __version__, "python": platform.python_version(),
            "platform": platform.platform()}
    for dist in ("torch", "numpy", "opencv-python", "safetensors", "imageio", "scipy", "bpy"):
        info[dist] = _version(dist)
    info.update(describe_device())
    info["motion model"] = ("no trained weights ship with gdyn; train one (gdyn dataset, gdyn train) "
                            "and pass --checkpoint FILE")
    from gdyn_backend.presets import list_presets, presets_dir

    info["presets"] = f"{', '.join(list_presets())} ({presets_dir()})"
    return info


def run(args) -> int:
    for key, value in collect().items():
        print(f"{key:>18}: {value}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("info", help="versions, device, model files")
    p.set_defaults(func=run)
