"""The default renderer: motion-weighted softmax splatting + push-pull hole fill.

Needs no trained weights (README.md, "How frames are rendered"). For each frame:

1. importance Z(p) = sharpness * W(p) / W_ref, with W(p) = mean_t |F_t(p)|
   (`spectral.mean_displacement_magnitude`, paper §5) and W_ref its 99th
   percentile, so the most-moving pixels get Z ~ sharpness and static
   background Z = 0: where a moving petal lands on the wall behind it, the
   petal wins by a factor exp(sharpness);
2. RGB (and alpha) are forward-warped by the frame's displacement with
   `splat.softmax_splat`;
3. holes (coverage ~ 0) that open where a moving object stretches get the
   object's own colours (`holes.stretch_samples`); disocclusions are filled
   by `holes.push_pull_fill`, fed preferentially by low-importance
   (background) pixels, because what a moving object uncovers is what was
   behind it.

The still, its importance and the fill weights are prepared once and reused
while the caller passes the same arrays for every frame.
"""

from __future__ import annotations

import numpy as np
import torch

from gdyn_backend.device import torch_device
from gdyn_backend.render import native
from gdyn_backend.render.holes import (FULL_COVERAGE, NEWTON_STEPS, STRETCH_MIN, TEAR, HoleSamples,
                                       confidence_from_coverage, push_pull_fill, second_level_filled, stretch_samples)
from gdyn_backend.render.splat import (BORDER, NATIVE_PARALLEL_PIXELS, PACKED_CHANNELS, SplatSource, prepare_splat,
                                       splat_prepared)

STRIP_ROWS = 64  # image rows the native kernel makes at a time: their sums (64 x W x 32 bytes) stay in the cache


def importance_from_weights(weights: np.ndarray, sharpness: float) -> np.ndarray:
    """Softmax logits Z [H, W] from motion weights W [H, W] in pixels.

    Z = sharpness * W / W_ref, W_ref = 99th percentile of W (at least
    0.05 px, so a still image with no motion gets Z ~ 0 everywhere).
    """
    weights = np.asarray(weights, np.float32)
    reference = max(float(np.percentile(weights, 99.0)), 0.05)
    return (np.float32(sharpness / reference) * weights).astype(np.float32)


def splat_and_fill(prepared: SplatSource, flow: torch.Tensor, background_bias: float,
                   inplace: bool = False) -> torch.Tensor:
    """Steps 2 and 3 of the default renderer on a prepared source whose last channel is Z / sharpness.

    prepared: `prepare_splat` of [B, C+1, H, W] (C image channels, then Z /
    sharpness) with importance Z; flow [B, 2, H, W] pixels. Returns [B, C, H, W]
    (channel-last in memory): the splat, its stretch holes filled from the
    object (`holes.stretch_samples`), the rest by push-pull, where pixels that
    were moving foreground (Z / sharpness near 1) feed the fill with weight
    exp(-background_bias), static background with weight 1. inplace: reuse the
    splat's buffer (no autograd). Where the source is packed for the native
    kernel (CPU, no autograd) that kernel computes the same picture, clamped to
    0..1 already (splatted and filled colours are mixes of the source's, so
    clamping changes the portable path's picture by float rounding only).
    """
    if prepared.packed is not None and not flow.requires_grad:
        return torch.from_numpy(_splat_and_fill_native(prepared, flow, background_bias)).permute(0, 3, 1, 2)
    warped, coverage = splat_prepared(prepared, flow)
    confidence = confidence_from_coverage(coverage)
    stretched = stretch_samples(prepared, flow, confidence < 1.0)
    if stretched is not None:
        stretched = HoleSamples(stretched.pixels, stretched.values[:, :-1])
    background = torch.exp(-background_bias * warped[:, -1:].clamp_min(0.0))
    return push_pull_fill(warped[:, :-1], confidence, background, stretched, inplace)


def _splat_and_fill_native(prepared: SplatSource, flow: torch.Tensor, background_bias: float) -> np.ndarray:
    """`splat_and_fill` with the native kernel, to a new picture [B, H, W, C] clamped to 0..1.

    The same steps, arranged so that the splat's sums never leave the cache:
    one pass over the flow finds which output rows each source row reaches and
    the stretch candidates (`gdyn_source_rows`); the picture is made in strips
    of STRIP_ROWS rows (`gdyn_render_strip`, on several threads), each summing
    the sources that reach it, then dividing, finding the confidence, the
    fill's feed and the holes, writing its pixels and the fill's first pull
    step. Then, at the hole pixels only, the stretch samples
    (`gdyn_stretch_sums`, as `holes.stretch_samples`) while the coarser
    pull-push levels are made (`holes.second_level_filled`), and the fill
    (`gdyn_fill_holes`, the hole pixels shared among the threads).
    """
    kernel = native.kernel()
    b, _, h, w = flow.shape
    colours = prepared.values.shape[2] - 3
    pw = w + 2 * BORDER + 1
    flow = flow.to(prepared.values.dtype).contiguous()
    picture, holes = np.empty((b, h, w, colours), np.float32), np.empty((b, h, w), np.uint8)
    confidence = np.empty((b, h, w), np.float32)
    cells = np.empty((b, max(h - 1, 0), max(w - 1, 0)), np.uint8)  # stretch candidates
    half_h, half_w = (h + 1) // 2, (w + 1) // 2
    threads = max(1, torch.get_num_threads()) if b * h * w >= NATIVE_PARALLEL_PIXELS else 1
    strips = [(y0, min(h, y0 + STRIP_ROWS)) for y0 in range(0, h, STRIP_ROWS)]
    threads = min(threads, len(strips))
    scratch = [np.empty(STRIP_ROWS * pw * PACKED_CHANNELS, np.float32) for _ in range(threads)]
    items, starved = [], 0
    for item in range(b):
        fx, fy, values = flow[item, 0].numpy(), flow[item, 1].numpy(), prepared.packed[item].numpy()
        reach = np.empty((h, 2), np.int64)
        edges = np.linspace(0, h, threads + 1).astype(np.int64)
        native.run_parallel([lambda r0=r0, r1=r1: kernel.gdyn_source_rows(
            fx.ctypes.data, fy.ctypes.data, h, w, STRETCH_MIN, int(r0), int(r1), reach.ctypes.data,
            cells[item].ctypes.data) for r0, r1 in zip(edges[:-1], edges[1:])], threads)
        half, half_alpha = np.empty((half_h, half_w, colours), np.float32), np.empty((half_h, half_w), np.float32)
        pointers = (picture[item].ctypes.data, confidence[item].ctypes.data, holes[item].ctypes.data,
                    half.ctypes.data, half_alpha.ctypes.data)

        def strips_of(thread: int) -> int:
            return sum(kernel.gdyn_render_strip(fx.ctypes.data, fy.ctypes.data, values.ctypes.data, reach.ctypes.data,
                                                h, w, y0, y1, scratch[thread].ctypes.data, colours, FULL_COVERAGE,
                                                background_bias, *pointers)
                       for y0, y1 in strips[thread::threads])

        starved += sum(native.run_parallel([lambda t=t: strips_of(t) for t in range(threads)], threads))
        items.append((fx, fy, values, half, half_alpha))
    if starved == 0:  # every pixel feeds the fill: nothing to fill (as push_pull_fill)
        return picture
    for item, (fx, fy, values, half, half_alpha) in enumerate(items):
        pixels = np.flatnonzero(holes[item].view(np.bool_))  # (bool: several times faster than uint8)
        sums = np.zeros((pixels.size, colours + 1), np.float32)  # stretch samples: exp(Z) colour, exp(Z)
        _, second = native.run_parallel([  # the stretch samples and the coarse levels at once
            lambda: kernel.gdyn_stretch_sums(fx.ctypes.data, fy.ctypes.data, values.ctypes.data, h, w, colours,
                                             cells[item].ctypes.data, holes[item].ctypes.data, pixels.ctypes.data,
                                             pixels.size, STRETCH_MIN, TEAR, NEWTON_STEPS, sums.ctypes.data),
            lambda: second_level_filled(half, half_alpha)], threads)
        has_sample = (sums[:, colours] > 0).astype(np.uint8)
        samples = sums[:, :colours] / np.maximum(sums[:, colours:], np.finfo(np.float32).tiny)
        second_shape = (0, 0) if second is None else second.shape[:2]
        bounds = np.linspace(0, pixels.size, threads + 1).astype(np.int64)  # the hole pixels, in parts
        native.run_parallel([lambda k0=int(k0), k1=int(k1): kernel.gdyn_fill_holes(
            confidence[item].ctypes.data, h, w, colours, pixels.ctypes.data + k0 * pixels.itemsize, k1 - k0,
            has_sample.ctypes.data + k0, samples.ctypes.data + k0 * colours * samples.itemsize,
            half.ctypes.data, half_alpha.ctypes.data, half_h, half_w, None if second is None else second.ctypes.data,
            *second_shape, picture[item].ctypes.data) for k0, k1 in zip(bounds[:-1], bounds[1:])], threads)
    return picture


def render_batch(source: torch.Tensor, flow: torch.Tensor, importance: torch.Tensor,
                 sharpness: float, background_bias: float) -> torch.Tensor:
    """The default renderer on a batch (training, tests): differentiable, unclamped.

    source [B, C, H, W] 0..1; flow [B, 2, H, W] pixels; importance [B, 1, H, W]
    = `importance_from_weights(W, sharpness)`. Returns [B, C, H, W].
    """
    prepared = prepare_splat(torch.cat([source, importance / max(sharpness, 1e-6)], dim=1), importance)
    return splat_and_fill(prepared, flow, background_bias)


class DefaultRenderer:
    """Forward-warps a still by displacement fields; see the module docstring.

    sharpness:       Z of the fastest-moving pixels (static ones get 0).
    background_bias: how strongly hole filling prefers background: a pixel
                     feeds the fill with weight exp(-background_bias * Z / sharpness).
    device:          torch device ("cpu", "cuda", ...); default CUDA when present.
    native_kernel:   on the CPU, use the native kernel where it is built (`native.py`);
                     False runs the portable path (the same frames to float rounding).
    """

    def __init__(self, sharpness: float = 5.0, background_bias: float = 10.0,
                 device: str | torch.device | None = None, native_kernel: bool = True):
        self.sharpness = float(sharpness)
        self.background_bias = float(background_bias)
        self.device = torch_device(device)
        self.native_kernel = native_kernel
        self._inputs: tuple = ()
        self._prepared = None
        self._has_alpha = False

    def _prepare(self, rgb: np.ndarray, alpha: np.ndarray | None, weights: np.ndarray) -> None:
        if len(self._inputs) == 3 and all(a is b for a, b in zip(self._inputs, (rgb, alpha, weights))):
            return  # the same arrays as the last frame (held here, so ids stay unique)
        h, w = rgb.shape[:2]
        if weights.shape != (h, w):
            raise ValueError(f"weights {weights.shape} must match the image {(h, w)}")
        z = importance_from_weights(weights, self.sharpness)
        # Channels: RGB, alpha (if any), Z/sharpness (to know what landed where).
        planes = [np.moveaxis(rgb, 2, 0)]
        if alpha is not None:
            planes.append(alpha[None])
        planes.append(z[None] / np.float32(max(self.sharpness, 1e-6)))
        source = np.concatenate(planes, axis=0).astype(np.float32)
        self._prepared = prepare_splat(torch.from_numpy(source).to(self.device)[None],
                                       torch.from_numpy(z).to(self.device)[None, None], self.native_kernel)
        self._has_alpha = alpha is not None
        self._inputs = (rgb, alpha, weights)

    def render(self, rgb: np.ndarray, alpha: np.ndarray | None, displacement: np.ndarray,
               weights: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """One frame.

        rgb:          float32 [H, W, 3] in 0..1, the still.
        alpha:        float32 [H, W] in 0..1, or None.
        displacement: float32 [2, H, W], forward, pixels of this resolution.
        weights:      float32 [H, W], W(p) = mean_t |F_t(p)| in pixels of this
                      resolution.
        Returns (rgb [H, W, 3], alpha [H, W] or None), float32 0..1.
        """
        self._prepare(rgb, alpha, weights)
        flow = torch.from_numpy(np.ascontiguousarray(displacement, np.float32)).to(self.device)[None]
        with torch.no_grad():
            frame = splat_and_fill(self._prepared, flow, self.background_bias, inplace=True)
        out = frame[0].permute(1, 2, 0).cpu()  # [H, W, C], a view when on the CPU
        if self._prepared.packed is not None:  # the native kernel's new picture, clamped already
            picture = out.numpy()
            if not self._has_alpha:
                return picture, None
            return np.ascontiguousarray(picture[:, :, :3]), np.ascontiguousarray(picture[:, :, 3])
        rgb_out = torch.clamp(out[:, :, :3], 0.0, 1.0, out=torch.empty(out.shape[:2] + (3,))).numpy()
        return rgb_out, (out[:, :, 3].clamp(0.0, 1.0).numpy() if self._has_alpha else None)
