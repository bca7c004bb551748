"""addon/view.py: region pixels -> photo pixels through a stand-in region whose view mapping is known
(a window's regions cannot exist in the bpy module; the mapping is what Blender's View2D does)."""

from __future__ import annotations

import pytest
from standins import Event, Photo, StandInArea, StandInRegion, known_region

pytest.importorskip("bpy")

from addon import view  # noqa: E402


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
