"""Motion source "model": a spectral volume sampled from the trained diffusion model.

`sample_volume` loads a model file (`gdyn train ldm` -> model.safetensors),
conditions on the still, runs DDIM with classifier-free guidance (and the
loop self-guidance of paper eq. 5 when `loop`), decodes the latents with the
VAE and undoes the frequency adaptive normalization. The volume is at the
model's motion resolution (256x160 for the paper's setting); consumers
resample it (`spectral.resampled`) to the still.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path

import cv2
import numpy as np
import torch

from gdyn_backend import spectral
from gdyn_backend.device import torch_device
from gdyn_backend.errors import UserError
from gdyn_backend.io import Still
from gdyn_backend.model.checkpoint import MotionModel, load_model
from gdyn_backend.model.diffusion import LoopGuidance, epsilon_fn, sample_ddim
from gdyn_backend.model.unet import condition_image
from gdyn_backend.params import check_seed
from gdyn_backend.progress import Progress

DEFAULT_STEPS, DEFAULT_LOOP_STEPS = 250, 500       # paper §7.1
DEFAULT_GUIDANCE, DEFAULT_LOOP_GUIDANCE = 1.75, 200.0
LOOP_RECURRENCES = 2
DEFAULT_LOOP_FRAMES = 60   # a 2 s loop at 30 fps; pass the animation's own frame count

_cache: dict[tuple[str, float, str], MotionModel] = {}
_cache_lock = threading.Lock()


def cached_model(path, device: torch.device) -> MotionModel:
    """Load a model file once per (path, modification time, device)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}; train one with `gdyn train ldm` (no weights ship with gdyn)")
    key = (str(path.resolve()), path.stat().st_mtime, str(device))
    with _cache_lock:
        if key not in _cache:
            _cache.clear()
            _cache[key] = load_model(path, device, require_unet=True)
        return _cache[key]


def image_tensor(rgb: np.ndarray, width: int, height: int, device) -> torch.Tensor:
    """RGB float [H, W, 3] in 0..1 -> [1, 3, height, width] in [-1, 1] (area resize)."""
    h, w = rgb.shape[:2]
    interp = cv2.INTER_AREA if width <= w and height <= h else cv2.INTER_LINEAR
    small = cv2.resize(np.ascontiguousarray(rgb[:, :, :3], np.float32), (width, height), interpolation=interp)
    return torch.from_numpy(small).permute(2, 0, 1)[None].to(device) * 2.0 - 1.0


def decoder(model: MotionModel, size: tuple[int, int]):
    """Latents [B, K, C, h, w] (scaled) -> amplitudes [B, K, 4, H, W] in pixels (differentiable)."""

    def decode(latents: torch.Tensor) -> torch.Tensor:
        b, k = latents.shape[:2]
        maps = model.vae.decode((latents / model.latent_scale).flatten(0, 1), size)
        return model.normalizer.denormalize(maps.reshape(b, k, *maps.shape[1:]))

    return decode


def sample_amplitudes(model: MotionModel, images: torch.Tensor, seed: int = 0, steps: int = DEFAULT_STEPS,
                      guidance: float = DEFAULT_GUIDANCE, loop_guidance: float = 0.0,
                      loop_frames: int = DEFAULT_LOOP_FRAMES, recurrences: int = LOOP_RECURRENCES,
                      progress: Progress | None = None) -> torch.Tensor:
    """Spectral volumes [B, K, 4, H, W] in pixels for start images [B, 3, H, W] in [-1, 1].

    loop_guidance: u of eq. 5 (0 = no loop guidance); the loop is `loop_frames`
    frames at the model's fps. Same seed, same inputs -> same result.
    """
    info = model.data
    size = (info.height, info.width)
    h, w = model.vae.latent_size(*size)
    b = images.shape[0]
    device = images.device
    generator = torch.Generator().manual_seed(int(seed))
    noise = torch.randn((b, info.num_bands, model.unet.config.latent_channels, h, w), generator=generator).to(device)
    cond = condition_image(images, (h, w))
    decode = decoder(model, size)
    loop = None
    if loop_guidance > 0:
        loop = LoopGuidance(loop_guidance, decode, info.frequencies_hz(), info.fps, int(loop_frames), recurrences)
    latents = sample_ddim(epsilon_fn(model.unet, model.diffusion), noise, cond, model.diffusion, steps, guidance, loop, generator, progress)
    with torch.no_grad():
        return decode(latents).float()


def sample_volume(still: Still, checkpoint_path, seed: int = 0, loop: bool = False, steps: int | None = None,
                  guidance: float = DEFAULT_GUIDANCE, loop_guidance: float = DEFAULT_LOOP_GUIDANCE,
                  progress: Progress | None = None, loop_frames: int | None = None,
                  loop_seconds: float | None = None) -> spectral.SpectralVolume:
    """A spectral volume [K, 4, H, W] (model resolution, pixels) for `still`, source "model".

    steps:         DDIM steps; default 250, or 500 with `loop` (paper §7.1).
    guidance:      classifier-free guidance weight w (0 = conditional model only).
    loop:          add the motion self-guidance (weight `loop_guidance`, 2
                   self-recurrences) so an N-frame loop (`loop_frames`, default 60
                   at the model's fps) closes in position and velocity;
                   `loop_seconds` gives that length in seconds instead.
    Metadata names the checkpoint (file name, stage, training step) and the settings.
    """
    steps = int(steps if steps is not None else (DEFAULT_LOOP_STEPS if loop else DEFAULT_STEPS))
    if steps < 1:
        raise UserError(f"--steps must be at least 1, got {steps}")
    for option, weight in (("--guidance", guidance), ("--loop-guidance", loop_guidance)):
        if not (math.isfinite(weight) and weight >= 0):
            raise UserError(f"{option} must be a number >= 0, got {weight}")
    if loop_frames is not None and loop_frames < 2:
        raise UserError(f"--loop-frames must be at least 2, got {loop_frames}")
    if loop_seconds is not None and not (math.isfinite(loop_seconds) and loop_seconds > 0):
        raise UserError(f"the loop must last a positive time, got {loop_seconds} s")
    seed = check_seed(seed)
    device = torch_device()
    model = cached_model(checkpoint_path, device)
    if steps > model.diffusion.num_train_steps:
        raise UserError(f"--steps must be at most {model.diffusion.num_train_steps}, got {steps}")
    info = model.data
    if loop_seconds is not None:
        loop_frames = max(2, round(float(loop_seconds) * info.fps))
    frames = int(loop_frames or DEFAULT_LOOP_FRAMES)
    if loop and frames < 2:
        raise UserError(f"a loop needs at least 2 frames, got {frames}")
    images = image_tensor(still.rgb, info.width, info.height, device)
    amplitude = sample_amplitudes(model, images, seed, steps, guidance, loop_guidance if loop else 0.0,
                                  frames, LOOP_RECURRENCES, progress)[0].cpu().numpy()
    problem = spectral.implausible(amplitude)
    if problem is not None:
        raise UserError(f"the motion model's sample for this still {problem}; lower --guidance or "
                        f"--loop-guidance, or check the checkpoint {Path(checkpoint_path).name}")
    meta = {"checkpoint": Path(checkpoint_path).name, "checkpoint_stage": model.stage,
            "checkpoint_step": str(model.step), "seed": str(seed), "ddim_steps": str(steps),
            "guidance": repr(float(guidance)), "loop": str(bool(loop)).lower()}
    if loop:
        meta.update({"loop_guidance": repr(float(loop_guidance)), "loop_frames": str(frames)})
    return spectral.SpectralVolume(amplitude, info.frequencies_hz(), info.fps,
                                   info.period_frames, "model", meta)
