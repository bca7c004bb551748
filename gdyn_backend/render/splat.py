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

The sums are one sparse matrix product: S [output pixels, source pixels]
holds the four bilinear weights of each source pixel (a column), and
S @ V accumulates V [source pixels, C+2] = (exp(Z) source, exp(Z), 1).
Three ways compute the same sums:

- on the CPU without autograd, the native kernel (`splat_kernel.c`, built
  on first use by `native.py`): one pass over the sources, the 8 channels
  of V (padded) in SIMD lanes, bands of rows on several threads;
- the same where no C compiler works: scipy.sparse multiplies S @ V (a CSC
  product: one loop over the 4 entries of each column, GIL released);
- on CUDA, and wherever gradients are needed (the learned renderer trains
  through this), torch `index_add_`.
"""

from __future__ import annotations

import ctypes
from collections import deque
from dataclasses import dataclass

import numpy as np
import torch

from gdyn_backend.render import native

# exp(Z - max Z) is clamped at exp(-IMPORTANCE_RANGE) so that float32 never
# underflows to exactly 0 for a pixel that has coverage.
IMPORTANCE_RANGE = 60.0
CHUNK_PIXELS = 1 << 20  # source pixels whose corners are computed per pass (bounds temporaries)
PARALLEL_PIXELS = 1 << 19  # frames from this size up are multiplied by scipy on several threads
NATIVE_PARALLEL_PIXELS = 1 << 16  # ... and splatted by the native kernel on several threads
BORDER = 2  # output border, in pixels, that catches everything landing outside (3 on the far sides)
PACKED_CHANNELS = 8  # V's channels as the native kernel reads them (C+2 <= 8: RGB, alpha, Z, exp(Z), 1)


@dataclass
class SplatSource:
    """What softmax splatting needs of a source, independent of the flow.

    values: [B, H*W, C+2] channel-last: exp(Z)*source (C), exp(Z), 1; with
            Z shifted by its per-image maximum (numerically stable).
    packed: [B, H*W, 8] contiguous, `values` zero-padded to 8 channels, for the
            native kernel (then `values` is a view of it); None where the
            kernel does not apply (GPU, autograd, float64, more channels, no compiler).
    """

    values: torch.Tensor
    height: int
    width: int
    packed: torch.Tensor | None = None

    @property
    def channels(self) -> int:
        return self.values.shape[2] - 2


def prepare_splat(source: torch.Tensor, importance: torch.Tensor | None, native_kernel: bool = True,
                  ) -> SplatSource:
    """Precompute the flow-independent part of `softmax_splat` (reuse across frames).

    source [B, C, H, W]; importance [B, 1, H, W] logits or None (all equal).
    native_kernel: pack the source for the native kernel where it applies (False:
    the portable path, scipy.sparse and torch, as where no compiler works).
    """
    if source.dim() != 4:
        raise ValueError(f"source must be [B, C, H, W], got {tuple(source.shape)}")
    b, c, h, w = source.shape
    if importance is not None and importance.shape != (b, 1, h, w):
        raise ValueError(f"importance must be {(b, 1, h, w)}, got {tuple(importance.shape)}")
    channels_last = source.reshape(b, c, h * w).transpose(1, 2)  # [B, H*W, C]
    differentiable = torch.is_grad_enabled() and (
        source.requires_grad or (importance is not None and importance.requires_grad))
    soft = None
    if importance is not None:
        z = importance.to(source.dtype).reshape(b, h * w, 1)
        soft = torch.exp((z - z.amax(dim=1, keepdim=True)).clamp_min(-IMPORTANCE_RANGE))
    if differentiable:
        ones = torch.ones((b, h * w, 1), device=source.device, dtype=source.dtype)
        scaled = channels_last if soft is None else channels_last * soft
        return SplatSource(torch.cat([scaled, ones if soft is None else soft, ones], dim=2), h, w)
    packed = (native_kernel and source.device.type == "cpu" and source.dtype == torch.float32
              and c + 2 <= PACKED_CHANNELS and native.kernel() is not None)
    # Written channel by channel into one buffer: no full-size temporaries (a 4K source is 265 MB packed).
    values = torch.zeros((b, h * w, PACKED_CHANNELS if packed else c + 2), device=source.device,
                         dtype=source.dtype)
    values[:, :, c:c + 2] = 1.0
    if soft is None:
        values[:, :, :c] = channels_last
    else:
        values[:, :, c:c + 1] = soft
        torch.mul(channels_last, soft, out=values[:, :, :c])
    if packed:
        return SplatSource(values[:, :, :c + 2], h, w, values)
    return SplatSource(values, h, w)


def _landing(flow: torch.Tensor, r0: int, r1: int, index_dtype: torch.dtype,
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where source rows r0..r1 of `flow` [B, 2, H, W] (pixels) land: (cell, fx, fy), each [B, (r1-r0)*W].

    cell: the padded output cell holding the landing point's top-left corner,
    counted from batch item b's first cell; fx, fy: the point's fraction
    within it. The 4 corners (cell, +1, +PW, +PW+1) get the bilinear weights
    (1-fx)(1-fy), fx(1-fy), (1-fx)fy, fx fy. Targets are clamped to
    [-2, W+1] x [-2, H+1]: a clamped point has zero fraction, so everything
    landing outside falls into the border, which is cut off.
    """
    b, _, h, w = flow.shape
    xs = torch.arange(w, device=flow.device, dtype=flow.dtype).view(1, 1, w)
    ys = torch.arange(r0, r1, device=flow.device, dtype=flow.dtype).view(1, r1 - r0, 1)
    tx = (flow[:, 0, r0:r1] + xs).clamp_(-BORDER, w + BORDER - 1.0)  # [B, rows, W]
    ty = (flow[:, 1, r0:r1] + ys).clamp_(-BORDER, h + BORDER - 1.0)
    x0, y0 = torch.floor(tx), torch.floor(ty)
    cell = y0.to(index_dtype).mul_(w + 2 * BORDER + 1).add_(x0.to(index_dtype)).add_(BORDER * (w + 2 * BORDER + 2))
    return cell.view(b, -1), tx.sub_(x0).view(b, -1), ty.sub_(y0).view(b, -1)


def _product_band(cell: np.ndarray, fx: np.ndarray, fy: np.ndarray, values: np.ndarray,
                  row_step: int) -> tuple[int, np.ndarray]:
    """S @ V for one band of sources with scipy.sparse: (first output cell, sums [cells, C+2] from it).

    cell, fx, fy [m] as `_landing` gives them; values [m, C+2]; row_step: cells
    per padded output row. Only the output rows the band reaches are made.
    """
    from scipy.sparse import csc_array

    first, m = int(cell.min()), cell.shape[0]
    count = int(cell.max()) - first + row_step + 2
    index = np.empty((m, 4), cell.dtype)  # column j of S: its 4 rows ...
    weight = np.empty((m, 4), values.dtype)  # ... and their weights
    gx, gy = 1.0 - fx, 1.0 - fy
    for corner, (offset, wx, wy) in enumerate(((0, gx, gy), (1, fx, gy), (row_step, gx, fy),
                                               (row_step + 1, fx, fy))):
        np.subtract(cell, first - offset, out=index[:, corner])
        np.multiply(wx, wy, out=weight[:, corner])
    column_starts = np.arange(0, 4 * m + 1, 4, dtype=cell.dtype)
    matrix = csc_array((weight.reshape(-1), index.reshape(-1), column_starts), shape=(count, m))
    return first, matrix @ values


def _accumulate_scipy(prepared: SplatSource, flow: torch.Tensor, cells: int) -> torch.Tensor:
    """S @ V with scipy.sparse (CPU, no autograd): [B, cells, C+2].

    The sources are cut into bands of rows whose products run on up to
    `torch.get_num_threads()` threads (scipy and numpy release the GIL), at
    most that many at a time (bounded memory), and are summed into the output
    in order, so the result does not depend on timing.
    """
    from concurrent.futures import ThreadPoolExecutor

    values = prepared.values
    b, n, c2 = values.shape
    h, w = prepared.height, prepared.width
    index_dtype = torch.int32 if b * cells < 2 ** 31 else torch.int64
    acc = np.zeros((b * cells, c2), values.numpy().dtype)
    # Small frames run inline: handing a few milliseconds of work to a thread costs more than it saves.
    threads = max(1, torch.get_num_threads()) if b * n >= PARALLEL_PIXELS else 1
    rows = max(1, min(CHUNK_PIXELS, -(-h * w // threads)) // w)
    batch_base = (torch.arange(b, dtype=index_dtype) * cells).view(b, 1)
    pending: deque = deque()

    def add(first: int, sums: np.ndarray) -> None:
        target = acc[first:first + sums.shape[0]]
        target += sums[:target.shape[0]]

    def band(r0: int, r1: int) -> tuple:
        cell, fx, fy = _landing(flow, r0, r1, index_dtype)
        cell += batch_base
        return (cell.view(-1).numpy(), fx.reshape(-1).numpy(), fy.reshape(-1).numpy(),
                values[:, r0 * w:r1 * w].reshape(-1, c2).numpy(), w + 2 * BORDER + 1)

    if threads == 1:
        for r0 in range(0, h, rows):
            add(*_product_band(*band(r0, min(h, r0 + rows))))
        return torch.from_numpy(acc).view(b, cells, c2)
    with ThreadPoolExecutor(threads) as pool:
        for r0 in range(0, h, rows):
            pending.append(pool.submit(_product_band, *band(r0, min(h, r0 + rows))))
            if len(pending) >= threads:
                add(*pending.popleft().result())
        while pending:
            add(*pending.popleft().result())
    return torch.from_numpy(acc).view(b, cells, c2)


def _accumulate_native(prepared: SplatSource, flow: torch.Tensor, cells: int) -> torch.Tensor:
    """S @ V with the native kernel: [B, cells, 8] (the packed channels).

    Each image's source rows are cut into 2 x `torch.get_num_threads()` bands,
    run in two phases (even bands, then odd ones), each phase on up to that
    many threads (ctypes releases the GIL). Bands of one phase reach disjoint
    output rows (checked first; where a motion is so tall that they do not,
    the bands run one after the other), so every band adds straight into the
    output with no buffer and no lock, and the order of the additions into
    any output cell does not depend on timing.
    """
    kernel = native.kernel()
    b, n, channels = prepared.packed.shape
    h, w = prepared.height, prepared.width
    pw = w + 2 * BORDER + 1
    acc = np.empty((b, cells // pw, pw, channels), np.float32)
    threads = max(1, torch.get_num_threads()) if b * n >= NATIVE_PARALLEL_PIXELS else 1
    flow = flow.contiguous()
    edges = np.linspace(0, h, min(h, 2 * threads) + 1).astype(np.int64)
    bands = list(zip(edges[:-1], edges[1:]))

    rows_per_part = -(-acc.shape[1] // threads)
    for item in range(b):
        out = acc[item]
        native.run_parallel([lambda r0=r0: ctypes.memset(out[r0:r0 + rows_per_part].ctypes.data, 0,
                                                         out[r0:r0 + rows_per_part].nbytes)
                             for r0 in range(0, out.shape[0], rows_per_part)], threads)
        fx, fy = flow[item, 0].numpy(), flow[item, 1].numpy()
        values = prepared.packed[item].numpy()

        def splat_rows(r0: int, r1: int) -> None:
            kernel.gdyn_splat_band(fx.ctypes.data, fy.ctypes.data, values.ctypes.data, h, w, int(r0), int(r1),
                                   out.ctypes.data, 0, out.shape[0])

        reach = np.empty((len(bands), 2), np.int64)
        for i, (r0, r1) in enumerate(bands):
            kernel.gdyn_band_rows(fy.ctypes.data, h, w, int(r0), int(r1), reach[i].ctypes.data)
        disjoint = all(reach[i, 1] <= reach[i + 2, 0] for i in range(len(bands) - 2))
        if threads == 1 or not disjoint:
            splat_rows(0, h)
            continue
        for phase in (0, 1):
            native.run_parallel([lambda r0=r0, r1=r1: splat_rows(r0, r1) for r0, r1 in bands[phase::2]], threads)
    return torch.from_numpy(acc).view(b, cells, channels)


def _accumulate_torch(prepared: SplatSource, flow: torch.Tensor, cells: int) -> torch.Tensor:
    """The same sums with torch `index_add_` (any device, differentiable): [B, cells, C+2].

    Channel-first per corner, as index_add_ is fastest: sums [C+2, B*cells],
    returned transposed (a view).
    """
    values = prepared.values
    b, _, c2 = values.shape
    w = prepared.width
    acc = torch.zeros((c2, b * cells), device=values.device, dtype=values.dtype)
    batch_base = (torch.arange(b, device=values.device) * cells).view(b, 1)
    rows = max(1, CHUNK_PIXELS // w)
    for r0 in range(0, prepared.height, rows):
        r1 = min(prepared.height, r0 + rows)
        cell, fx, fy = _landing(flow, r0, r1, torch.int64)
        cell = (cell + batch_base).view(-1)
        gx, gy = (1.0 - fx).view(-1), (1.0 - fy).view(-1)
        fx, fy = fx.reshape(-1), fy.reshape(-1)
        chunk = values[:, r0 * w:r1 * w].permute(2, 0, 1).reshape(c2, -1)  # [C+2, B*m]
        for offset, wx, wy in ((0, gx, gy), (1, fx, gy), (w + 5, gx, fy), (w + 6, fx, fy)):
            acc.index_add_(1, cell + offset, chunk * (wx * wy))
    return acc.t().view(b, cells, c2)


def splat_prepared(prepared: SplatSource, flow: torch.Tensor,
                   sparse: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """`softmax_splat` of a prepared source by `flow` [B, 2, H, W] (pixels).

    sparse: True sums on the CPU without autograd (the native kernel where the
    source is packed for it, else scipy.sparse), False with torch index_add_;
    None (default) chooses True on the CPU when no gradient is needed.
    """
    values, h, w = prepared.values, prepared.height, prepared.width
    b, _, c2 = values.shape
    if flow.dim() != 4 or tuple(flow.shape) != (b, 2, h, w):
        raise ValueError(f"flow must be {(b, 2, h, w)}, got {tuple(flow.shape)}")
    flow = flow.to(values.dtype)
    pw, ph = w + 2 * BORDER + 1, h + 2 * BORDER + 1
    if sparse is None:
        needs_grad = torch.is_grad_enabled() and (values.requires_grad or flow.requires_grad)
        sparse = values.device.type == "cpu" and values.dtype in (torch.float32, torch.float64) and not needs_grad
    if sparse and prepared.packed is not None and not flow.requires_grad:
        acc = _accumulate_native(prepared, flow, ph * pw)
    else:
        acc = (_accumulate_scipy if sparse else _accumulate_torch)(prepared, flow, ph * pw)
    # [B, C+2, H, W], a view (channel-last in memory on the CPU)
    acc = acc.view(b, ph, pw, -1)[:, BORDER:h + BORDER, BORDER:w + BORDER, :c2].permute(0, 3, 1, 2)
    c = c2 - 2
    numerator, denominator, coverage = acc[:, :c], acc[:, c:c + 1], acc[:, c + 1:]
    # Where nothing landed both sums are exactly 0, so the quotient is 0 there.
    denominator = denominator.clamp_min(torch.finfo(values.dtype).tiny)
    if torch.is_grad_enabled() and acc.requires_grad:
        return numerator / denominator, coverage
    return numerator.div_(denominator), coverage  # in the sums' own buffer


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
    summed bilinear weight (about 0 marks a hole, where out is 0). Both are
    channel-last in memory.
    Callers warping one source by many flows use `prepare_splat` once and
    `splat_prepared` per flow (same result).
    """
    if source.dim() != 4 or flow.dim() != 4 or flow.shape[1] != 2:
        raise ValueError(f"source must be [B,C,H,W] and flow [B,2,H,W], got "
                         f"{tuple(source.shape)} and {tuple(flow.shape)}")
    if flow.shape[0] != source.shape[0] or flow.shape[2:] != source.shape[2:]:
        raise ValueError(f"flow {tuple(flow.shape)} does not match source {tuple(source.shape)}")
    return splat_prepared(prepare_splat(source, importance), flow)
