"""Malformed and hostile input files for the bad-input batteries (CLI and `gdyn serve`), and a
way to make writes really fail (a read-only or a full file system) even when tests run as root.

`hostile_inputs(folder)` writes every file once and returns their paths by name; none of them
is larger than a few kB, except the clips. `private_mounts()` says how to run a command in a
private mount namespace (`unshare`), where a small tmpfs can be mounted read-only or filled up:
root ignores file permissions, so chmod cannot make a folder unwritable for it.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import zlib
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
from safetensors.numpy import save_file
from synthetic import (
    band_motion,
    make_clip,
    smooth_envelope,
    synthetic_still,
    tiny_inputs,
    write_frames_folder,
    write_mp4,
    write_raw_motion,
)

from gdyn_backend import spectral

W, H, BANDS = 48, 32, 4  # the tiny still and motion of `tiny_inputs`


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but holds almost no data (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _jpeg(width: int = 96, height: int = 64) -> bytes:
    noise = (np.random.default_rng(1).random((height, width, 3)) * 255).astype(np.uint8)
    return cv2.imencode(".jpg", noise)[1].tobytes()


def tiny_checkpoint(path: Path, width: int = 64, height: int = 40) -> Path:
    """A random-init tiny motion model file (VAE + denoiser) that `gdyn sample` can load."""
    import torch

    from gdyn_backend.model.checkpoint import DataInfo, MotionModel, save_model
    from gdyn_backend.model.diffusion import DiffusionConfig
    from gdyn_backend.model.unet import UNET_CONFIGS, MotionUNet
    from gdyn_backend.model.vae import VAE_CONFIGS, SpectralVAE

    torch.manual_seed(0)
    model = MotionModel(SpectralVAE(VAE_CONFIGS["tiny"]), spectral.FrequencyNormalizer(np.full(16, 0.5, np.float32)),
                        DataInfo(width, height, 30.0, 150, 16), MotionUNet(UNET_CONFIGS["tiny"]), DiffusionConfig(),
                        stage="frequency")
    return save_model(model, path)


def hostile_inputs(folder: Path) -> dict[str, Path]:
    """Good and bad inputs in `folder`, by name (see the comments for what each one is)."""
    folder.mkdir(parents=True, exist_ok=True)
    still, motion = tiny_inputs(folder, W, H, BANDS)
    good = spectral.load_volume(motion).amplitude
    p = {"still": still, "motion": motion, "missing": folder / "missing.png"}
    jpeg = _jpeg()
    (folder / "cut.jpg").write_bytes(jpeg[: len(jpeg) * 2 // 3])  # OpenCV warns only, then fills grey
    png = (folder / "still.png").read_bytes()
    (folder / "cut.png").write_bytes(png[: len(png) // 2])
    (folder / "huge.png").write_bytes(_png_claiming(100_000, 100_000))
    sof = jpeg.index(b"\xff\xc0")  # the frame header: FFC0, length, precision, height, width
    (folder / "huge.jpg").write_bytes(jpeg[:sof + 5] + struct.pack(">HH", 60_000, 60_000) + jpeg[sof + 9:])
    (folder / "text.png").write_text("not a picture")
    (folder / "empty.png").write_bytes(b"")
    (folder / "a_folder").mkdir()
    (folder / "a_file.txt").write_text("a file where a folder is expected")
    p.update({name.replace(".", "_"): folder / name for name in (
        "cut.jpg", "cut.png", "huge.png", "huge.jpg", "text.png", "empty.png", "a_folder", "a_file.txt")})
    # A mask of another aspect ratio (the still is 48x32).
    cv2.imwrite(str(folder / "square_mask.png"), np.full((20, 20), 255, np.uint8))
    p["square_mask"] = folder / "square_mask.png"
    # Motion files: wrong dtypes, broken metadata, absurd values.
    four = json.dumps([float(f) for f in spectral.band_frequencies(BANDS, 30.0, 60)])
    m = {name: write_raw_motion(folder / f"{name}.safetensors", amplitude, metadata=metadata) for name, amplitude, metadata in [
        ("m_float64", good.astype(np.float64), {}),
        ("m_int32", good.astype(np.int32), {}),
        ("m_float16", good.astype(np.float16), {}),
        ("m_negative_fps", good, {"fps": "-30"}),
        ("m_nan_fps", good, {"fps": "nan"}),
        ("m_no_fps", good, {"fps": "fast"}),
        ("m_zero_period", good, {"period_frames": "0"}),
        ("m_absurd", good * np.float32(1e30), {}),  # finite, but 3e30 px of motion
        ("m_nan", np.full_like(good, np.nan), {}),
        ("m_inf", np.full_like(good, np.inf), {}),
        ("m_three_channels", good[:, :3].copy(), {}),
        ("m_band_count", good[:2].copy(), {"frequencies_hz": four}),
        ("m_negative_freq", good, {"frequencies_hz": "[0.0, -0.5, 1.0, 1.5]"}),
        ("m_freq_not_list", good, {"frequencies_hz": "5"}),
        ("m_only_static", good[:1].copy(), {}),
    ]}
    p.update(m)
    save_file({"weights": np.zeros(3, np.float32)}, str(folder / "foreign.safetensors"), {"format": "other"})
    (folder / "text.safetensors").write_text("hello")
    p.update(foreign=folder / "foreign.safetensors", text_safetensors=folder / "text.safetensors")
    (folder / "bad.toml").write_text("[motion\nthis is = not toml")
    p["bad_toml"] = folder / "bad.toml"
    # Clips: a tiny real one (frames folder and MP4), a text file named .mp4, an empty folder.
    motion = replace(band_motion(64, 48, 30.0, 20, bands=(1, 2), amplitudes_px=(1.5, 0.8), seed=3),
                     envelope=smooth_envelope(64, 48, seed=3, floor=0.0))  # part stays still: no camera motion
    frames = make_clip(synthetic_still(64, 48, seed=5), motion, 24, 30.0)
    p["clip_folder"] = write_frames_folder(frames, folder / "videos" / "clip")
    p["videos"] = folder / "videos"
    p["clip_mp4"] = write_mp4(frames, folder / "clip.mp4", 30.0)
    (folder / "text.mp4").write_text("not a video")
    p["text_mp4"] = folder / "text.mp4"
    (folder / "no_videos").mkdir()
    p["no_videos"] = folder / "no_videos"
    p["checkpoint"] = tiny_checkpoint(folder / "tiny_model.safetensors")
    return p


def snapshot(*folders: Path) -> dict[str, int]:
    """Every file and folder under `folders` (hidden ones included) with its size: to see what a run left."""
    found = {}
    for top in folders:
        for dirpath, dirnames, filenames in os.walk(top):
            for name in dirnames + filenames:
                path = Path(dirpath) / name
                found[str(path)] = path.stat().st_size if path.is_file() else -1
    return found


def private_mounts(probe: Path) -> list[str] | None:
    """The command prefix that runs a shell in a private mount namespace where it may mount a
    tmpfs (tried on the empty folder `probe`), or None where that is not allowed: then the
    tests that need it skip. As root: `unshare -m`; otherwise a user namespace, `unshare -U -r -m`."""
    if shutil.which("unshare") is None:
        return None
    probe.mkdir(parents=True, exist_ok=True)
    for prefix in (["unshare", "-m"], ["unshare", "-U", "-r", "-m"]):
        try:
            result = subprocess.run([*prefix, "sh", "-c", f"mount -t tmpfs -o size=4k tmpfs '{probe}'"],
                                    capture_output=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if result.returncode == 0:
            return prefix
    return None
