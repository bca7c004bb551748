"""Filling disocclusion holes left by forward splatting, with no trained weights.

Push-pull (Gortler et al. 1996, "The Lumigraph"): the splatted image is
repeatedly halved, each coarse pixel the confidence-weighted mean of the
four below it, until every pixel has data; then it is pushed back up, each
level keeping its own pixels where they are confident and taking the
bilinearly upsampled coarser level elsewhere. Holes get a smooth
continuation of their surroundings in O(pixels), on CPU or GPU.

A hole left where a moving petal uncovered the background should be filled
from the *background*, not smeared foreground: `source_weight` lets the
caller down-weight foreground pixels while building the coarse levels
(the default renderer passes exp(-importance)), without changing any pixel
that already has coverage. The measurements behind this choice (against
OpenCV inpainting and a backward-warp fallback) are in the README.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def confidence_from_coverage(coverage: torch.Tensor, full: float = 0.5) -> torch.Tensor:
    """Trust in a splatted pixel, [B, 1, H, W] in 0..1: coverage / `full`, clamped.

    Splatted colours are normalised, so a pixel with half the usual coverage
    (a stretched region, an edge) is already right; below that it is blended
    with the fill, and at 0 it is all fill.
    """
    return (coverage / full).clamp(0.0, 1.0)


def push_pull_fill(image: torch.Tensor, confidence: torch.Tensor,
                   source_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Fill low-confidence pixels of `image` from their surroundings.

    image:         [B, C, H, W], values where confidence > 0 (anything elsewhere).
    confidence:    [B, 1, H, W] in 0..1; 1 keeps a pixel unchanged, 0 replaces it.
    source_weight: [B, 1, H, W] >= 0, how much each confident pixel may feed
                   the fill of its neighbours (default 1).
    Returns [B, C, H, W]: a * image + (1 - a) * fill, a = confidence.
    """
    feed = confidence if source_weight is None else confidence * source_weight
    colours, alphas = [], []
    c, a = image, feed
    while True:
        colours.append(c)
        alphas.append(a)
        h, w = c.shape[-2:]
        if (h <= 1 and w <= 1) or bool((a > 0).all()):
            break
        pad = (0, w % 2, 0, h % 2)  # odd sizes: pad with zero weight
        cw = F.pad(c * a, pad)
        aw = F.pad(a, pad)
        sum_a = F.avg_pool2d(aw, 2) * 4.0
        c = F.avg_pool2d(cw, 2) * 4.0 / sum_a.clamp_min(1e-12)
        a = sum_a.clamp(max=1.0)
        a = torch.where(sum_a > 1e-12, a, torch.zeros_like(a))
    filled = colours[-1]
    for level in range(len(colours) - 2, -1, -1):
        c, a = colours[level], alphas[level]
        if level == 0:
            a = confidence
        up = F.interpolate(filled, scale_factor=2.0, mode="bilinear", align_corners=False)
        up = up[..., :c.shape[-2], :c.shape[-1]]
        filled = torch.lerp(up, c, a.expand_as(c))  # a * c + (1 - a) * up
    return filled
