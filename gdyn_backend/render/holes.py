"""Filling the holes left by forward splatting, with no trained weights.

A hole opens where no source pixel landed. It has one of two causes, and
each has its own right answer:

- **Disocclusion**: a moving object uncovered what was behind it. The
  still never showed that; the best guess is a smooth continuation of the
  *background* around the hole.
- **Stretch**: parts of one moving object moved apart (the top of a leaf
  swings further than its base), so its pixels landed more than a pixel
  apart. What belongs there is the *object*, stretched.

They are told apart by the motion itself. Each 2x2 cell of source pixels
lands on a quadrilateral. Where the four corners move alike, its edges stay
about 1 px long and the splat covers it. Where the cell is stretched but
whole (every edge at most `TEAR` px), its quadrilateral is a piece of the
object: `stretch_samples` rasterizes it, and every hole pixel inside gets
the still's colour at the exact source point (inverse bilinear map). A
longer edge is a tear: its corners lie on different sides of a motion
boundary (object and background), and the quadrilateral between them is a
disocclusion, left to the fill below.

The fill is push-pull (Gortler et al. 1996, "The Lumigraph"): the splatted
image is repeatedly halved, each coarse pixel the confidence-weighted mean
of the four below it, until every pixel has data; then it is pushed back
up, each level keeping its own pixels where they are confident and taking
the bilinearly upsampled coarser level elsewhere. Holes get a smooth
continuation of their surroundings in O(pixels), on CPU or GPU. The finest
level is computed only at the pixels that need it. `source_weight` lets the
caller down-weight foreground pixels while building the coarse levels (the
default renderer passes exp(-importance)), so a disocclusion is filled from
the background, without changing any pixel that already has coverage. The
measurements behind these choices (against OpenCV inpainting and a
backward-warp fallback, and on a known stretch) are in the README.

The functions here are the torch implementation (any device, autograd). The
native CPU kernel computes the same fill (`splat_kernel.c`: the first pull
step inside the strip pass, `second_level_filled` above it, the finest level
at the holes) and the stretch fill (`gdyn_source_rows` finds the candidate
cells, `gdyn_stretch_sums` rasterizes them), each as the torch code here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from gdyn_backend.render import native
from gdyn_backend.render.splat import SplatSource

STRETCH_MIN = 1.25  # px: a cell whose target edges are all shorter is covered by the splat itself
TEAR = 4.0  # px: a target edge longer than this is a motion boundary (disocclusion), not a stretch
NEWTON_STEPS = 6  # inverse bilinear map: Newton iterations from the cell's centre
BLOCK = 8  # px: hole blocks tested before any cell is rasterized (a cell spans at most 2 * TEAR px)


FULL_COVERAGE = 0.5  # summed bilinear weight from which a splatted pixel is fully trusted


def confidence_from_coverage(coverage: torch.Tensor, full: float = FULL_COVERAGE) -> torch.Tensor:
    """Trust in a splatted pixel, [B, 1, H, W] in 0..1: coverage / `full`, clamped.

    Splatted colours are normalised, so a pixel with half the usual coverage
    (a stretched region, an edge) is already right; below that it is blended
    with the fill, and at 0 it is all fill.
    """
    return (coverage / full).clamp(0.0, 1.0)


@dataclass
class HoleSamples:
    """Known values for some output pixels, used there instead of the push-pull fill.

    pixels: [K] int64 flat index b*H*W + y*W + x, ascending and unique.
    values: [K, C], the channels of the image being filled.
    """

    pixels: torch.Tensor
    values: torch.Tensor


def _halved(colour: torch.Tensor, alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One pull step: [B, C, h, w], [B, 1, h, w] -> the alpha-weighted 2x2 means at half size
    (odd sizes padded with zero weight) and their alpha (summed weight, at most 1).

    The four pixels of each 2x2 block are summed as four strided quarter-size
    products, so no full-size temporary is made.
    """
    h, w = colour.shape[-2:]
    if h % 2 or w % 2:
        colour, alpha = (F.pad(t, (0, w % 2, 0, h % 2)) for t in (colour, alpha))
    sum_ca = sum_a = None
    for dy in (0, 1):
        for dx in (0, 1):
            a = alpha[..., dy::2, dx::2]
            ca = colour[..., dy::2, dx::2] * a
            sum_ca, sum_a = (ca, a.clone()) if sum_ca is None else (sum_ca.add_(ca), sum_a.add_(a))
    return sum_ca / sum_a.clamp_min(1e-12), sum_a.clamp(max=1.0) * (sum_a > 1e-12)


def _coarse_fill(image: torch.Tensor, feed: torch.Tensor) -> torch.Tensor:
    """Push-pull of levels 1 and coarser: the filled half-size image [B, C, ceil(H/2), ceil(W/2)]."""
    colours, alphas = [], []
    c, a = _halved(image, feed)
    while True:
        colours.append(c)
        alphas.append(a)
        h, w = c.shape[-2:]
        if (h <= 1 and w <= 1) or bool((a > 0).all()):
            break
        c, a = _halved(c, a)
    filled = colours[-1]
    for level in range(len(colours) - 2, -1, -1):
        c, a = colours[level], alphas[level]
        up = F.interpolate(filled, scale_factor=2.0, mode="bilinear", align_corners=False)
        filled = torch.lerp(up[..., :c.shape[-2], :c.shape[-1]], c, a.expand_as(c))  # a * c + (1 - a) * up
    return filled


def second_level_filled(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray | None:
    """The pull-push pyramid (`_coarse_fill`) above its first level, with the native kernel.

    colour [h, w, C] and alpha [h, w] (float32, contiguous): the first pull step.
    Returns the second level, filled [ceil(h/2), ceil(w/2), C], from which the
    first level is filled (`gdyn_push`), or None where the first level needs
    nothing from above (every alpha > 0, or one pixel).
    """
    kernel = native.kernel()
    channels, levels = colour.shape[2], [(colour, alpha)]
    while levels[-1][1].size > 1 and not bool((levels[-1][1] > 0).all()):
        colour, alpha = levels[-1]
        (h, w), half = alpha.shape, ((alpha.shape[0] + 1) // 2, (alpha.shape[1] + 1) // 2)
        out, out_alpha = np.empty(half + (channels,), np.float32), np.empty(half, np.float32)
        kernel.gdyn_halve(colour.ctypes.data, w * channels, channels, alpha.ctypes.data, w, 1, h, w, channels,
                          out.ctypes.data, out_alpha.ctypes.data)
        levels.append((out, out_alpha))
    if len(levels) == 1:
        return None
    filled = levels[-1][0]
    for colour, alpha in reversed(levels[1:-1]):
        filled = _pushed(kernel, filled, colour, alpha)
    return filled


def _pushed(kernel, coarse: np.ndarray, colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """One push step (`gdyn_push`): colour [h, w, C] where alpha [h, w] is 1, `coarse` upsampled where it is 0."""
    (h, w), channels = alpha.shape, colour.shape[2]
    out = np.empty_like(colour)
    kernel.gdyn_push(coarse.ctypes.data, coarse.shape[0], coarse.shape[1], colour.ctypes.data, w * channels, channels,
                     alpha.ctypes.data, w, 1, h, w, channels, out.ctypes.data)
    return out


def _upsampled_at(half: torch.Tensor, batch: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """`half` [B, C, h, w] bilinearly upsampled 2x (as F.interpolate, align_corners=False), read only
    at full-size pixels (batch, y, x) [K]: [K, C]."""
    h, w = half.shape[-2:]

    def source(i, size):
        s = ((i.to(half.dtype) + 0.5) * 0.5 - 0.5).clamp_min(0.0)
        i0 = s.to(torch.int64)
        return i0, (i0 + 1).clamp_max(size - 1), (s - i0)[:, None]

    y0, y1, ly = source(y, h)
    x0, x1, lx = source(x, w)
    top = torch.lerp(half[batch, :, y0, x0], half[batch, :, y0, x1], lx)
    bottom = torch.lerp(half[batch, :, y1, x0], half[batch, :, y1, x1], lx)
    return torch.lerp(top, bottom, ly)


def push_pull_fill(image: torch.Tensor, confidence: torch.Tensor, source_weight: torch.Tensor | None = None,
                   samples: HoleSamples | None = None, inplace: bool = False) -> torch.Tensor:
    """Fill low-confidence pixels of `image` from their surroundings.

    image:         [B, C, H, W], values where confidence > 0 (anything elsewhere).
    confidence:    [B, 1, H, W] in 0..1; 1 keeps a pixel unchanged, 0 replaces it.
    source_weight: [B, 1, H, W] >= 0, how much each confident pixel may feed
                   the fill of its neighbours (default 1).
    samples:       values that replace the fill at their pixels (e.g. `stretch_samples`), or None.
    inplace:       write into `image` (no autograd through it) instead of a copy.
    Returns [B, C, H, W]: a * image + (1 - a) * fill, a = confidence. When every
    pixel feeds the fill (no pixel at 0), `image` is returned unchanged.
    """
    feed = confidence if source_weight is None else confidence * source_weight
    if bool((feed > 0).all()):
        return image
    h, w = image.shape[-2:]
    half = _coarse_fill(image, feed)
    batch, _, y, x = (confidence < 1.0).nonzero(as_tuple=True)  # ascending flat order
    fill = _upsampled_at(half, batch, y, x)  # [K, C]
    if samples is not None and samples.pixels.numel():
        pixels = (batch * h + y) * w + x
        at = torch.searchsorted(pixels, samples.pixels).clamp_max(pixels.numel() - 1)
        found = pixels[at] == samples.pixels
        fill = fill.index_put((at[found],), samples.values[found].to(fill.dtype))
    a = confidence[batch, 0, y, x][:, None]
    out = image if inplace else image.clone()
    out[batch, :, y, x] = torch.lerp(fill, image[batch, :, y, x], a)
    return out


def stretch_samples(prepared: SplatSource, flow: torch.Tensor, holes: torch.Tensor) -> HoleSamples | None:
    """The object's own colours for the holes that open where it stretches (module docstring).

    prepared: the splatted source (`splat.prepare_splat`), flow [B, 2, H, W] pixels,
    holes [B, 1, H, W] bool: the pixels to fill. Every whole, stretched source cell
    (longest target edge in STRETCH_MIN..TEAR px, not folded) is rasterized; a
    hole pixel inside it gets the source's channels at the exact source point
    (bilinear, weighted by exp(Z) like the splat; where cells overlap, their
    exp(Z)-weighted mean). Returns the filled holes as `HoleSamples` with
    values [K, C], or None when no hole lies in a stretched cell.
    """
    c2 = prepared.values.shape[2]
    h, w = prepared.height, prepared.width
    if h < 2 or w < 2:
        return None
    flow = flow.to(prepared.values.dtype)
    # Cheap tests first, on the whole frame: a cell matters only if one of its
    # edges lands longer than STRETCH_MIN, and only if a hole lies near where
    # it lands (blocks of BLOCK px).
    def long_edges(along: torch.Tensor, across: torch.Tensor) -> torch.Tensor:
        """Edges (1, 0) + (along, across) (or mirrored) longer than STRETCH_MIN."""
        return along.add_(1.0).square_().add_(across.square_()) > STRETCH_MIN ** 2

    fx, fy = flow[:, 0], flow[:, 1]
    long_x = long_edges(fx[:, :, 1:] - fx[:, :, :-1], fy[:, :, 1:] - fy[:, :, :-1])  # [B, H, W-1]
    long_y = long_edges(fy[:, 1:] - fy[:, :-1], fx[:, 1:] - fx[:, :-1])  # [B, H-1, W]
    stretched = long_x[:, :-1] | long_x[:, 1:] | long_y[:, :, :-1] | long_y[:, :, 1:]  # [B, H-1, W-1] cells
    del long_x, long_y
    cb, cy, cx = stretched.nonzero(as_tuple=True)
    if cb.numel() == 0:
        return None
    near_hole = F.max_pool2d(F.max_pool2d(holes.to(flow.dtype), BLOCK, ceil_mode=True), 3, stride=1, padding=1)
    landing = flow[cb, :, cy, cx]  # [Kc, 2] displacement of each cell's corner 00
    by = ((cy + landing[:, 1]) // BLOCK).clamp(0, near_hole.shape[2] - 1).to(torch.int64)
    bx = ((cx + landing[:, 0]) // BLOCK).clamp(0, near_hole.shape[3] - 1).to(torch.int64)
    near = near_hole[cb, 0, by, bx] > 0
    cb, cy, cx = cb[near], cy[near], cx[near]
    if cb.numel() == 0:
        return None
    base = torch.stack([cx, cy], dim=1).to(flow.dtype)  # [Kc, 2] source position of corner 00
    corners = [flow[cb, :, cy + dy, cx + dx] + base + flow.new_tensor([dx, dy])
               for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1))]  # targets, [Kc, 2] each
    t00, t10, t01, t11 = corners
    edges = torch.stack([t10 - t00, t11 - t01, t01 - t00, t11 - t10], dim=1)  # [Kc, 4, 2]
    longest = edges.norm(dim=2).amax(dim=1)
    # The bilinear map P(u, v) = t00 + eu u + ev v + ec u v is one-to-one on the
    # cell (not folded) when its Jacobian determinant, linear in u and in v,
    # is positive at all four corners.
    eu, ev, ec = t10 - t00, t01 - t00, t11 - t10 - t01 + t00

    def cross(a, b2):
        return a[:, 0] * b2[:, 1] - a[:, 1] * b2[:, 0]

    unfolded = ((cross(eu, ev) > 0) & (cross(eu, ev + ec) > 0) & (cross(eu + ec, ev) > 0)
                & (cross(eu + ec, ev + ec) > 0))
    keep = (longest > STRETCH_MIN) & (longest <= TEAR) & unfolded
    if not bool(keep.any()):
        return None
    cb, cy, cx = cb[keep], cy[keep], cx[keep]
    t00, t10, t01, t11 = (t[keep] for t in corners)
    quad = torch.stack([t00, t10, t01, t11], dim=1)  # [K, 4, 2]
    low = torch.floor(quad.amin(dim=1))
    size = (torch.floor(quad.amax(dim=1)) - low).to(torch.int64) + 1  # [K, 2] pixels of each bounding box
    # Every pixel of every cell's bounding box, enumerated cell after cell: (cell, qx, qy), [P] each.
    count = size[:, 0] * size[:, 1]
    cell = torch.repeat_interleave(torch.arange(count.numel(), device=flow.device), count)
    offset = torch.arange(cell.numel(), device=flow.device) - (torch.cumsum(count, 0) - count)[cell]
    qx = low[cell, 0].to(torch.int64) + offset % size[cell, 0]
    qy = low[cell, 1].to(torch.int64) + offset // size[cell, 0]
    # Only hole pixels are solved for (most of the box is covered by the splat).
    candidate = (qx >= 0) & (qx < w) & (qy >= 0) & (qy < h)
    candidate &= holes[cb[cell], 0, qy.clamp(0, h - 1), qx.clamp(0, w - 1)]
    cell, qx, qy = cell[candidate], qx[candidate], qy[candidate]
    if cell.numel() == 0:
        return None
    q = torch.stack([qx, qy], dim=1).to(flow.dtype)  # [P, 2]
    t00, eu, ev, ec = t00[cell], eu[keep][cell], ev[keep][cell], ec[keep][cell]
    # Inverse bilinear map of each candidate, P(u, v) = q, by Newton's method.
    u = torch.full(q.shape[:1], 0.5, dtype=q.dtype, device=q.device)
    v = torch.full_like(u, 0.5)
    for _ in range(NEWTON_STEPS):
        r = t00 + eu * u[:, None] + ev * v[:, None] + ec * (u * v)[:, None] - q
        du, dv = eu + ec * v[:, None], ev + ec * u[:, None]  # columns of the Jacobian
        det = (du[:, 0] * dv[:, 1] - du[:, 1] * dv[:, 0]).clamp_min(1e-6)
        u = u - (dv[:, 1] * r[:, 0] - dv[:, 0] * r[:, 1]) / det
        v = v - (du[:, 0] * r[:, 1] - du[:, 1] * r[:, 0]) / det
    r = t00 + eu * u[:, None] + ev * v[:, None] + ec * (u * v)[:, None] - q
    inside = (u >= -1e-4) & (u <= 1 + 1e-4) & (v >= -1e-4) & (v <= 1 + 1e-4) & (r.abs().amax(dim=1) < 1e-3)
    if not bool(inside.any()):
        return None
    cell, qx, qy = cell[inside], qx[inside], qy[inside]
    u, v = u[inside].clamp(0.0, 1.0)[:, None], v[inside].clamp(0.0, 1.0)[:, None]
    src = cy[cell] * w + cx[cell]
    vb = cb[cell]
    v00 = prepared.values[vb, src]
    v10 = prepared.values[vb, src + 1]
    v01 = prepared.values[vb, src + w]
    v11 = prepared.values[vb, src + w + 1]
    sampled = torch.lerp(torch.lerp(v00, v10, u), torch.lerp(v01, v11, u), v)[:, :c2 - 1]  # exp(Z) src, exp(Z)
    pixels = (vb * h + qy) * w + qx
    unique, slot = torch.unique(pixels, sorted=True, return_inverse=True)
    sums = torch.zeros((unique.numel(), c2 - 1), dtype=sampled.dtype, device=sampled.device)
    sums.index_add_(0, slot, sampled)
    return HoleSamples(unique, sums[:, :-1] / sums[:, -1:].clamp_min(torch.finfo(sums.dtype).tiny))
