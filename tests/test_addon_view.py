"""addon/view.py: region pixels -> photo pixels through a stand-in region whose view mapping is known
(a window's regions cannot exist in the bpy module; the mapping is what Blender's View2D does)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest

pytest.importorskip("bpy")

from addon import view  # noqa: E402


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


def test_main_region_is_the_one_that_draws_the_image():
    sidebar, main = StandInRegion("UI", 820, 20, 80, 400), known_region()
    assert view.main_region(StandInArea([StandInRegion("HEADER", 300, 420, 600, 20), sidebar, main])) is main
    assert view.main_region(None) is None and view.main_region(StandInArea([sidebar])) is None


def test_region_point_is_relative_to_the_region_and_none_outside_it():
    region = known_region()
    assert view.region_point(region, Event(300 + 10, 20 + 7)) == (10, 7)
    assert view.region_point(region, Event(300 + 600, 30)) is None  # right of it (the sidebar)
    assert view.region_point(region, Event(299, 30)) is None


def test_photo_pixel_maps_pixel_centres_and_refuses_points_off_the_photo():
    region, photo = known_region(), Photo((64, 48))
    # Photo pixel (i, j) (x right, y down) covers region x in 100 + 4i .. 100 + 4(i + 1),
    # y from 50 + 4 * (48 - j - 1) up; its centre maps to exactly (i, j).
    for i, j in ((0, 0), (10, 5), (63, 47)):
        x, y = 100 + 4 * (i + 0.5), 50 + 4 * (48 - j - 0.5)
        assert view.photo_pixel(region, x, y, photo) == pytest.approx((i, j), abs=1e-9)
    assert view.photo_pixel(region, 100.5, 50 + 4 * 48 - 0.5, photo) == (0.0, 0.0)  # edge pixel's outer half
    for x, y in ((99, 60), (100 + 4 * 64 + 1, 60), (150, 49), (150, 50 + 4 * 48 + 1)):
        assert view.photo_pixel(region, x, y, photo) is None
    assert view.photo_pixel(known_region(scale=0.0), 150, 60, photo) is None  # NaN view
    assert view.photo_pixel(region, 150, 60, Photo((0, 0))) is None  # image without pixels
    # Beside the photo the unbounded mapping goes on linearly (a drag may end there).
    assert view.view_pixel(region, 100 + 4 * 70.5, 50 + 4 * 48.5, (64, 48)) == pytest.approx((70, -1))
