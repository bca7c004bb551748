"""`gdyn bench` section `render`: the default renderer's speed, a 4K plate streamed to disk, huge stills.

Every speed has its baseline measured in the same run: `ReferenceRenderer`,
the default renderer as it was before the sparse-product splat (torch
`index_add_` per corner, channel-first; push-pull computed densely at full
size; no stretch fill), with frames written one after the other.

The default renderer is also timed on its portable path (`native_kernel=False`:
scipy.sparse splat and torch fill, what runs where no C compiler works).

Rows:
- frames per second of the default renderer (numpy in and out, as `gdyn
  animate` calls it) at 512x288 and 1920x1080, of its portable path and of
  the reference, with the ratios;
- on CUDA, when present: the default renderer at 1920x1080 and 3840x2160;
- a 3840x2160 still animated from quarter-resolution motion and written to
  PNG + EXR (`sequence.render_sequence`, frames encoded while the next
  renders), seconds per frame and peak memory, each in a fresh process,
  against the portable path (GDYN_NATIVE=0) and the reference rendering
  and writing in turn;
- a 16384x16384 still given to `animate.animate`: what happens (the refusal
  line, or the frames written) and the peak memory.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import torch
import torch.nn.functional as F

from gdyn_backend.bench import best_time
from gdyn_backend.render import native

SIZES = [(512, 288), (1920, 1080)]


def _scene(width: int, height: int, seed: int = 0):
    """A textured still, a smooth displacement (~2 % of the width) and its weights."""
    import cv2

    rng = np.random.default_rng(seed)
    rgb = cv2.resize(rng.random((height // 8, width // 8, 3)).astype(np.float32), (width, height))
    coarse = rng.standard_normal((2, 6, 8)).astype(np.float32)
    disp = np.stack([cv2.resize(c, (width, height), interpolation=cv2.INTER_CUBIC) for c in coarse])
    disp *= 0.02 * width / max(float(np.abs(disp).max()), 1e-6)
    weights = np.sqrt((disp ** 2).sum(axis=0)).astype(np.float32)
    return rgb, disp, weights


class ReferenceRenderer:
    """The baseline: the default renderer before this version, with `DefaultRenderer.render`'s contract.

    The same splat sums through torch `index_add_` (`splat_prepared(..., sparse=False)`), and the
    push-pull fill's finest level computed densely at full size; no stretch fill.
    """

    def __init__(self, sharpness: float = 5.0, background_bias: float = 10.0):
        from gdyn_backend.render.default import DefaultRenderer

        self._default = DefaultRenderer(sharpness, background_bias, device="cpu", native_kernel=False)

    @torch.no_grad()
    def render(self, rgb, alpha, displacement, weights):
        from gdyn_backend.render.holes import _coarse_fill, confidence_from_coverage
        from gdyn_backend.render.splat import splat_prepared

        default = self._default
        default._prepare(rgb, alpha, weights)
        flow = torch.from_numpy(np.ascontiguousarray(displacement, np.float32))[None]
        warped, coverage = splat_prepared(default._prepared, flow, sparse=False)
        confidence = confidence_from_coverage(coverage)
        feed = confidence * torch.exp(-default.background_bias * warped[:, -1:].clamp_min(0.0))
        image = warped[:, :-1]
        if not bool((feed > 0).all()):
            up = F.interpolate(_coarse_fill(image, feed), scale_factor=2.0, mode="bilinear", align_corners=False)
            image = torch.lerp(up[..., :image.shape[-2], :image.shape[-1]], image, confidence)
        out = np.moveaxis(image.clamp_(0.0, 1.0)[0].numpy(), 0, 2)
        return np.ascontiguousarray(out[:, :, :3]), (np.ascontiguousarray(out[:, :, 3]) if alpha is not None else None)


def _fps(renderer, width: int, height: int, repeats: int) -> float:
    rgb, disp, weights = _scene(width, height)
    return 1.0 / best_time(lambda: renderer.render(rgb, None, disp, weights), repeats)


_PEAK = r"""
def peak_mib():
    # Peak of this process's own memory (MiB). VmHWM starts fresh at exec;
    # ru_maxrss would carry the parent's peak across fork+exec on Linux (the
    # model section before this one holds ~16 GiB).
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
"""

_STREAM_SCRIPT = _PEAK + r"""
import json, sys, tempfile, time
import cv2, numpy as np, torch
from gdyn_backend import io
from gdyn_backend.device import reuse_freed_memory
from gdyn_backend.bench.render import ReferenceRenderer, _scene
from gdyn_backend.sequence import full_resolution_displacement, full_resolution_weights, render_sequence
reuse_freed_memory()  # as the gdyn command does
torch.set_num_threads({threads}); cv2.setNumThreads({threads})
w, h, n, reference = 3840, 2160, {frames}, {reference}
rgb, disp, weights = _scene(w // 4, h // 4)  # motion at a quarter of the resolution
still = io.Still(cv2.resize(rgb, (w, h)), None, 8)
motion = (disp * np.float32(np.sin(i / 10.0)) for i in range(n))  # streamed, as animate makes them
with tempfile.TemporaryDirectory() as tmp:
    t0 = time.perf_counter()
    if reference:  # the baseline: render, then write, one frame after the other
        renderer, full_weights = ReferenceRenderer(), full_resolution_weights(weights, w, h)
        for i, d in enumerate(motion):
            full = full_resolution_displacement(d, w, h)
            out, _ = renderer.render(still.rgb, None, full, full_weights)
            io.write_displacement_exr(f"{{tmp}}/{{i:04d}}.exr", full)
            io.write_png(f"{{tmp}}/{{i:04d}}.png", out)
    else:
        render_sequence(still, motion, weights, tmp, fps=30.0)
    seconds = time.perf_counter() - t0
print(json.dumps({{"seconds": seconds / n, "peak": peak_mib(), "frames": n}}))
"""

_HUGE_SCRIPT = _PEAK + r"""
import json, sys, tempfile, time
from pathlib import Path
from gdyn_backend.animate import AnimateOptions, animate
from gdyn_backend.bench.render import write_blank_png
from gdyn_backend.errors import UserError
with tempfile.TemporaryDirectory() as tmp:
    image = write_blank_png(Path(tmp) / "huge.png", {side}, {side})
    try:
        done = animate(image, Path(tmp) / "out", AnimateOptions(frames=2))
        outcome = f"{{done.frames}} frames written"
    except UserError as exc:
        outcome = "refused: " + str(exc)
print(json.dumps({{"outcome": outcome, "peak": peak_mib()}}))
"""


def write_blank_png(path, width: int, height: int):
    """A valid 8-bit grey PNG of any size, streamed row by row (a 16384x16384 one is ~1 MB)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer, row = zlib.compressobj(9), b"\x00" + b"\x80" * (3 * width)  # filter byte + RGB
    data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


def _subprocess(script: str, env: dict | None = None) -> dict:
    import os

    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                          env={**os.environ, **(env or {})})
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(table, quick: bool) -> None:
    from gdyn_backend.render.default import DefaultRenderer

    threads = torch.get_num_threads()
    default, reference = DefaultRenderer(device="cpu"), ReferenceRenderer()
    portable = DefaultRenderer(device="cpu", native_kernel=False)
    for (width, height), target in zip(SIZES[:1] if quick else SIZES, ("150 fps", "15 fps")):
        repeats = 2 if quick else 10
        fps, base = _fps(default, width, height, repeats), _fps(reference, width, height, repeats)
        plain = _fps(portable, width, height, repeats)
        table.add("render", f"default renderer {width}x{height} CPU", f"{fps:.1f} fps",
                  f"{threads} threads; {native.status().split(' (')[0]}; portable path (scipy.sparse + torch) "
                  f"{plain:.1f} fps: {fps / plain:.2f}x; reference (before) {base:.1f} fps: {fps / base:.2f}x; "
                  f"target {target}")
    if torch.cuda.is_available():
        gpu = DefaultRenderer(device="cuda")
        for width, height in ((1920, 1080), (3840, 2160)):
            fps = _fps(gpu, width, height, 3 if quick else 10)
            table.add("render", f"default renderer {width}x{height} CUDA", f"{fps:.1f} fps",
                      torch.cuda.get_device_name(0) + ", numpy in/out included")
    frames = 2 if quick else 60
    new = _subprocess(_STREAM_SCRIPT.format(threads=threads, frames=frames, reference=False))
    old = _subprocess(_STREAM_SCRIPT.format(threads=threads, frames=min(frames, 10), reference=True))
    plain = _subprocess(_STREAM_SCRIPT.format(threads=threads, frames=min(frames, 10), reference=False),
                        {"GDYN_NATIVE": "0"})
    table.add("render", f"3840x2160 still, {new['frames']} frames rendered + written (PNG + EXR)",
              f"{new['seconds']:.2f} s/frame, peak {new['peak']:.0f} MiB",
              f"portable path ({plain['frames']} frames): {plain['seconds']:.2f} s/frame "
              f"({plain['seconds'] / new['seconds']:.2f}x), peak {plain['peak']:.0f} MiB; "
              f"reference rendering then writing ({old['frames']} frames): {old['seconds']:.2f} s/frame "
              f"({old['seconds'] / new['seconds']:.2f}x), peak {old['peak']:.0f} MiB; "
              "target <= 0.8 s/frame, < 2048 MiB")
    if not quick:
        huge = _subprocess(_HUGE_SCRIPT.format(side=16384))
        table.add("render", "16384x16384 still, gdyn animate", huge["outcome"],
                  f"peak {huge['peak']:.0f} MiB; target < 4096 MiB")
