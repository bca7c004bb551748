"""Where a mouse event falls on the photo shown in an Image Editor.

An Image Editor draws its image in its main region (type 'WINDOW'), whatever
region an operator was started from (the sidebar's Drag Point button runs in
the 'UI' region). That region's View2D maps region pixels to view
coordinates (u, v): u = 0..1 from the image's left edge to its right edge,
v = 0..1 from its bottom edge to its top edge.

Photo pixels are those of `gdyn simulate`: x right, y down, pixel centres at
integers, so a point on the photo has 0 <= x <= width - 1 and
0 <= y <= height - 1 (a press on the outer half of an edge pixel counts as
that pixel's centre).
"""

from __future__ import annotations

import math


def main_region(area):
    """The region of `area` that draws the image (type 'WINDOW'), or None."""
    if area is None:
        return None
    return next((region for region in area.regions if region.type == "WINDOW"), None)


def region_point(region, event) -> tuple[int, int] | None:
    """The event's mouse position in `region`'s pixels (origin bottom-left), or None when the
    mouse is outside the region (over a sidebar, a header or another area)."""
    x, y = event.mouse_x - region.x, event.mouse_y - region.y
    if 0 <= x < region.width and 0 <= y < region.height:
        return x, y
    return None


def view_pixel(region, x: float, y: float, size: tuple[int, int]) -> tuple[float, float]:
    """Region pixel (x, y) -> photo pixel (x right, y down, centres at integers), not bounded:
    a point beside the photo maps to a pixel beyond its edges. May be NaN for a degenerate view."""
    u, v = region.view2d.region_to_view(x, y)
    width, height = size
    return u * width - 0.5, (1.0 - v) * height - 0.5


def photo_pixel(region, x: float, y: float, image) -> tuple[float, float] | None:
    """The photo pixel under region pixel (x, y) of an Image Editor showing `image` (anything with
    `size` = (width, height) in pixels), or None when that point is not on the photo (outside it,
    an image with no pixels, or a view that maps to no number)."""
    width, height = image.size
    if width < 1 or height < 1:
        return None
    px, py = view_pixel(region, x, y, (width, height))
    if not (math.isfinite(px) and math.isfinite(py)):
        return None
    if not (-0.5 <= px <= width - 0.5 and -0.5 <= py <= height - 0.5):
        return None
    return min(max(px, 0.0), width - 1.0), min(max(py, 0.0), height - 1.0)
