"""Stand-ins for what cannot exist in the bpy module, for driving the add-on's UI code: a region
whose View2D mapping is known, an area, mouse events, and an executable that takes a python's place."""

from __future__ import annotations

import math
import stat
from dataclasses import dataclass, field
from pathlib import Path


def stand_in_python(folder: Path, script: str) -> str:
    """An executable `folder/python` that takes the place of a python and runs `script` (sh)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "python"
    path.write_text("#!/bin/sh\n" + script + "\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


@dataclass
class StandInView2D:
    """View2D of a region showing a photo `scale` region pixels per photo pixel, the photo's
    bottom-left corner at region pixel `origin`: u = (x - ox) / (scale * width)."""

    width: int
    height: int
    scale: float
    origin: tuple[float, float]

    def region_to_view(self, x: float, y: float) -> tuple[float, float]:
        span_x, span_y = self.scale * self.width, self.scale * self.height
        if span_x == 0:
            return math.nan, math.nan
        return (x - self.origin[0]) / span_x, (y - self.origin[1]) / span_y


@dataclass
class StandInRegion:
    """A region at window pixel (x, y) of width x height pixels."""

    type: str
    x: int
    y: int
    width: int
    height: int
    view2d: StandInView2D | None = None


@dataclass
class StandInArea:
    regions: list = field(default_factory=list)


@dataclass
class Photo:
    size: tuple[int, int]


@dataclass
class Event:
    mouse_x: int
    mouse_y: int


def known_region(width=64, height=48, scale=4.0, origin=(100.0, 50.0)) -> StandInRegion:
    """The main region of an Image Editor at window (300, 20), 600x400 pixels, showing a
    width x height photo at `scale` with its bottom-left corner at region pixel `origin`."""
    return StandInRegion("WINDOW", 300, 20, 600, 400, StandInView2D(width, height, scale, origin))
