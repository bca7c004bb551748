"""`gdyn bench` section `render`: default renderer speed and streaming memory.

Rows:
- frames per second of the default renderer (softmax splat + push-pull fill,
  numpy in and out, as `gdyn animate` calls it) at 512x288 and 1920x1080 on
  the bench's CPU threads, and of a naive scatter-add splat measured in the
  same run (`numpy.add.at` per corner and channel, weights recomputed each
  frame, no hole filling) with the ratio;
- on CUDA, when present: the default renderer at 1920x1080 and 3840x2160;
- peak resident memory of `sequence.render_sequence` writing frames, maps
  of a 3840x2160 still for 300 frames (2 in quick mode), in a fresh process.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from gdyn_backend.bench import best_time

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


def naive_splat(rgb: np.ndarray, displacement: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Baseline: softmax splatting written directly with numpy scatter-adds.

    rgb [H, W, 3], displacement [2, H, W] pixels, weights [H, W]. No fill.
    """
    h, w = weights.shape
    ys, xs = np.mgrid[0:h, 0:w]
    tx, ty = xs + displacement[0], ys + displacement[1]
    x0, y0 = np.floor(tx).astype(np.int64), np.floor(ty).astype(np.int64)
    z = np.exp(weights - weights.max())
    num = np.zeros((h, w, 3))
    den = np.zeros((h, w))
    for dx in (0, 1):
        for dy in (0, 1):
            cx, cy = x0 + dx, y0 + dy
            bw = (1 - np.abs(tx - cx)) * (1 - np.abs(ty - cy)) * z
            ok = (cx >= 0) & (cx < w) & (cy >= 0) & (cy < h)
            for c in range(3):
                np.add.at(num[:, :, c], (cy[ok], cx[ok]), (bw * rgb[:, :, c])[ok])
            np.add.at(den, (cy[ok], cx[ok]), bw[ok])
    return (num / np.maximum(den, 1e-12)[..., None]).astype(np.float32)


def _renderer_fps(renderer, width: int, height: int, repeats: int) -> float:
    rgb, disp, weights = _scene(width, height)
    return 1.0 / best_time(lambda: renderer.render(rgb, None, disp, weights), repeats)


_MEMORY_SCRIPT = r"""
import json, resource, sys, tempfile
import numpy as np
from gdyn_backend import io
from gdyn_backend.sequence import render_sequence
from gdyn_backend.bench.render import _scene
import torch, cv2
torch.set_num_threads({threads}); cv2.setNumThreads({threads})
w, h, n = 3840, 2160, {frames}
rgb, disp, weights = _scene(w // 4, h // 4)  # motion at a quarter of the resolution
still = io.Still(cv2.resize(rgb, (w, h)), None, 8)
def rss():
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
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
marks = {{}}
def frames():
    for i in range(n):
        if i == min(2, n - 1):  # frames 0 and 1 are done
            marks["early"] = rss()
        yield disp * np.float32(np.sin(i / 10.0))
with tempfile.TemporaryDirectory() as tmp:
    import time
    t0 = time.perf_counter()
    count = render_sequence(still, frames(), weights, tmp, fps=30.0)
    marks["seconds"] = time.perf_counter() - t0
marks["peak"] = rss()
marks["frames"] = count
print(json.dumps(marks))
"""


def _memory(frames: int, threads: int) -> dict:
    script = _MEMORY_SCRIPT.format(frames=frames, threads=threads)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(table, quick: bool) -> None:
    import torch

    from gdyn_backend.render.default import DefaultRenderer

    threads = torch.get_num_threads()
    cpu = DefaultRenderer(device="cpu")
    sizes = SIZES[:1] if quick else SIZES
    for width, height in sizes:
        fps = _renderer_fps(cpu, width, height, 2 if quick else 5)
        rgb, disp, weights = _scene(width, height)
        naive = 1.0 / best_time(lambda: naive_splat(rgb, disp, weights), 1, warmup=0 if quick else 1)
        table.add("render", f"default renderer {width}x{height} CPU", f"{fps:.1f} fps",
                  f"{threads} threads; target 25 fps at 512x288")
        table.add("render", f"naive scatter-add splat {width}x{height} CPU", f"{naive:.2f} fps",
                  "numpy add.at, no hole fill (baseline)")
        table.add("render", f"speed-up over naive {width}x{height}", f"{fps / naive:.1f}x", "target 3x")
    if torch.cuda.is_available():
        gpu = DefaultRenderer(device="cuda")
        for width, height in ((1920, 1080), (3840, 2160)):
            fps = _renderer_fps(gpu, width, height, 3 if quick else 10)
            table.add("render", f"default renderer {width}x{height} CUDA", f"{fps:.1f} fps",
                      torch.cuda.get_device_name(0) + ", numpy in/out included")
    frames = 2 if quick else 300
    mem = _memory(frames, threads)
    table.add("render", f"peak RSS, 3840x2160 still, {mem['frames']} frames streamed",
              f"{mem['peak']:.0f} MiB",
              f"after 2 frames {mem['early']:.0f} MiB; {mem['seconds'] / mem['frames']:.2f} s/frame "
              "incl. PNG+EXR; target < 2048 MiB")
