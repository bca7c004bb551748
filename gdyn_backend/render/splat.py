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

from dataclasses import dataclass

import torch

# exp(Z - max Z) is clamped at exp(-IMPORTANCE_RANGE) so that float32 never
# underflows to exactly 0 for a pixel that has coverage.
IMPORTANCE_RANGE = 60.0
CHUNK_PIXELS = 1 << 20  # source pixels splatted per pass (bounds temporary memory)


@dataclass
class SplatSource:
    """What softmax splatting needs of a source, independent of the flow.

    values: [C+2, B, H*W] channel-first: exp(Z)*source (C), exp(Z), 1; with
            Z shifted by its per-image maximum (numerically stable).
    """

    values: torch.Tensor
    height: int
    width: int

    @property
    def channels(self) -> int:
        return self.values.shape[0] - 2


def prepare_splat(source: torch.Tensor, importance: torch.Tensor | None) -> SplatSource:
    """Precompute the flow-independent part of `softmax_splat` (reuse across frames).

    source [B, C, H, W]; importance [B, 1, H, W] logits or None (all equal).
    """
    if source.dim() != 4:
        raise ValueError(f"source must be [B, C, H, W], got {tuple(source.shape)}")
    b, c, h, w = source.shape
    if importance is None:
        soft = torch.ones((1, b, h * w), device=source.device, dtype=source.dtype)
    else:
        if importance.shape != (b, 1, h, w):
            raise ValueError(f"importance must be {(b, 1, h, w)}, got {tuple(importance.shape)}")
        z = importance.to(source.dtype).reshape(b, h * w)
        z = z - z.amax(dim=1, keepdim=True)
        soft = torch.exp(z.clamp_min(-IMPORTANCE_RANGE))[None]
    values = torch.cat([source.reshape(b, c, h * w).transpose(0, 1) * soft, soft, torch.ones_like(soft)])
    return SplatSource(values, h, w)


def splat_prepared(prepared: SplatSource, flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`softmax_splat` of a prepared source by `flow` [B, 2, H, W] (pixels)."""
    values, h, w = prepared.values, prepared.height, prepared.width
    c2, b, n = values.shape
    if flow.dim() != 4 or tuple(flow.shape) != (b, 2, h, w):
        raise ValueError(f"flow must be {(b, 2, h, w)}, got {tuple(flow.shape)}")
    device, dtype = values.device, values.dtype
    flow = flow.to(dtype)
    # Targets are clamped to [-2, W+1] x [-2, H+1] and accumulated into a frame
    # with a 2-pixel border (3 on the far sides): a clamped point has zero
    # fraction, so everything landing outside falls only into the border,
    # which is cut off. No masks or compaction are needed.
    pw, ph = w + 5, h + 5
    xs = torch.arange(w, device=device, dtype=dtype).view(1, 1, w)
    batch_base = (torch.arange(b, device=device) * (pw * ph)).view(b, 1, 1)
    acc = torch.zeros((c2, b * ph * pw), device=device, dtype=dtype)
    rows = max(1, CHUNK_PIXELS // w)  # source rows per pass: temporaries stay small at 4K
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        m = (r1 - r0) * w
        ys = torch.arange(r0, r1, device=device, dtype=dtype).view(1, r1 - r0, 1)
        tx = (flow[:, 0, r0:r1] + xs).clamp_(-2.0, w + 1.0)  # [B, rows, W]
        ty = (flow[:, 1, r0:r1] + ys).clamp_(-2.0, h + 1.0)
        x0f, y0f = torch.floor(tx), torch.floor(ty)
        base = ((y0f.long() + 2) * pw + (x0f.long() + 2) + batch_base).view(-1)
        fx, fy = tx.sub_(x0f).view(1, b * m), ty.sub_(y0f).view(1, b * m)
        del x0f, y0f
        chunk = values[:, :, r0 * w:r1 * w].reshape(c2, b * m)
        gx, gy = 1.0 - fx, 1.0 - fy
        # in-place index_add_ on a plain buffer: differentiable, so the learned
        # renderer trains through it.
        for offset, bw in ((0, gx * gy), (1, fx * gy), (pw, gx * fy), (pw + 1, fx * fy)):
            acc.index_add_(1, base + offset, chunk * bw)
        del base, chunk

    acc = acc.view(c2, b, ph, pw)[:, :, 2:h + 2, 2:w + 2].permute(1, 0, 2, 3)  # [B, C+2, H, W]
    c = c2 - 2
    numerator, denominator, coverage = acc[:, :c], acc[:, c:c + 1], acc[:, c + 1:]
    # Where nothing landed both sums are exactly 0, so the quotient is 0 there.
    out = numerator / denominator.clamp_min(torch.finfo(dtype).tiny)
    return out, coverage.contiguous()


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
    Callers warping one source by many flows use `prepare_splat` once and
    `splat_prepared` per flow (same result).
    """
    if source.dim() != 4 or flow.dim() != 4 or flow.shape[1] != 2:
        raise ValueError(f"source must be [B,C,H,W] and flow [B,2,H,W], got "
                         f"{tuple(source.shape)} and {tuple(flow.shape)}")
    if flow.shape[0] != source.shape[0] or flow.shape[2:] != source.shape[2:]:
        raise ValueError(f"flow {tuple(flow.shape)} does not match source {tuple(source.shape)}")
    return splat_prepared(prepare_splat(source, importance), flow)
