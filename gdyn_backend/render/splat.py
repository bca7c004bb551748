"""Softmax splatting (Niklaus & Liu 2020; paper §5): THE forward warp of gdyn.

Every source pixel p of `source` is pushed to p + flow(p) and spread over
the four output pixels around that point with bilinear weights b. Where
several sources land on one output pixel q they are mixed by softmax over
their importance Z:

    out(q) = sum_p b_pq exp(Z_p) source(p) / sum_p b_pq exp(Z_p)

so a pixel with much larger importance (the moving foreground) hides the
others. `coverage(q) = sum_p b_pq` (importance-free) counts how much source
mass reached q: about 1 where the image is covered, 0 in holes
(disocclusions, borders); `out` is 0 there and must be filled by the caller.

The same code runs on CPU and CUDA (torch `index_add_` on flattened
indices, one call per frame).
"""

from __future__ import annotations

import torch

# exp(Z - max Z) is clamped at exp(-IMPORTANCE_RANGE) so that float32 never
# underflows to exactly 0 for a pixel that has coverage.
IMPORTANCE_RANGE = 60.0


def softmax_splat(source: torch.Tensor, flow: torch.Tensor, importance: torch.Tensor | None,
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward-warp `source` by `flow`, resolving collisions by softmax of `importance`.

    source:     [B, C, H, W] float, image or features.
    flow:       [B, 2, H, W] forward displacement in pixels of this resolution
                (channel 0 = x right, 1 = y down).
    importance: [B, 1, H, W] softmax logits Z (larger wins), or None for plain
                average splatting (all Z equal). Stabilised per image by
                subtracting its maximum.
    Returns (out [B, C, H, W], coverage [B, 1, H, W]); coverage is the
    summed bilinear weight (about 0 marks a hole, where out is 0).
    """
    if source.dim() != 4 or flow.dim() != 4 or flow.shape[1] != 2:
        raise ValueError(f"source must be [B,C,H,W] and flow [B,2,H,W], got "
                         f"{tuple(source.shape)} and {tuple(flow.shape)}")
    b, c, h, w = source.shape
    if flow.shape[0] != b or flow.shape[2:] != source.shape[2:]:
        raise ValueError(f"flow {tuple(flow.shape)} does not match source {tuple(source.shape)}")
    device, dtype = source.device, source.dtype
    n = h * w
    flow = flow.to(dtype)

    xs = torch.arange(w, device=device, dtype=dtype).view(1, 1, w)
    ys = torch.arange(h, device=device, dtype=dtype).view(1, h, 1)
    tx = (xs + flow[:, 0]).reshape(b, n)  # [B, HW] target x
    ty = (ys + flow[:, 1]).reshape(b, n)
    x0f, y0f = torch.floor(tx), torch.floor(ty)
    fx, fy = tx - x0f, ty - y0f
    x0, y0 = x0f.long(), y0f.long()

    if importance is None:
        soft = torch.ones((b, n), device=device, dtype=dtype)
    else:
        z = importance.to(dtype).reshape(b, n)
        z = z - z.amax(dim=1, keepdim=True)
        soft = torch.exp(z.clamp_min(-IMPORTANCE_RANGE))

    # Values to accumulate per source pixel: exp(Z)*source (C), exp(Z) (1), 1 (1);
    # channel-first [C+2, B*HW] so each corner is one index_add_ along dim 1.
    values = torch.cat([source.reshape(b, c, n) * soft[:, None], soft[:, None],
                        torch.ones_like(soft)[:, None]], dim=1)
    values = values.permute(1, 0, 2).reshape(c + 2, b * n)

    batch_offset = (torch.arange(b, device=device) * n).view(b, 1)
    acc = torch.zeros((c + 2, b * n), device=device, dtype=dtype)
    zero = torch.zeros((), device=device, dtype=dtype)
    for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
        cx, cy = x0 + dx, y0 + dy
        bw = (fx if dx else 1 - fx) * (fy if dy else 1 - fy)  # [B, HW]
        inside = (cx >= 0) & (cx < w) & (cy >= 0) & (cy < h)
        bw = torch.where(inside, bw, zero).reshape(1, b * n)
        # Outside targets get weight 0 at a clamped (harmless) index: no compaction.
        index = (cy.clamp(0, h - 1) * w + cx.clamp(0, w - 1) + batch_offset).reshape(-1)
        acc.index_add_(1, index, values * bw)

    acc = acc.view(c + 2, b, n).permute(1, 0, 2)  # [B, C+2, HW]
    numerator, denominator, coverage = acc[:, :c], acc[:, c:c + 1], acc[:, c + 1:]
    out = torch.where(denominator > 0, numerator / denominator.clamp_min(torch.finfo(dtype).tiny), zero)
    return out.reshape(b, c, h, w), coverage.reshape(b, 1, h, w)
