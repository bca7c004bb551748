"""Diffusion of spectral-volume latents: noise schedule, DDIM, guidance (paper §4.2, §6.2).

Samplers are small pure functions in the style of k-diffusion. A denoiser is
any callable `eps_fn(z, t, image, conditioned) -> eps` on latents
[B, K, C, h, w]; `epsilon_fn` turns the U-Net (`unet.MotionUNet.forward`),
whatever it was trained to predict, into one.

Parameterization (`DiffusionConfig.prediction`): "epsilon" is the paper's
(LDM's) noise prediction with the eps-MSE loss. "v" (Salimans & Ho 2022,
v = sqrt(abar) eps - sqrt(1 - abar) x0, v-MSE loss) is a documented deviation
used by the tiny CPU preset: with eps prediction the x0 estimate
(z - sqrt(1 - abar) eps) / sqrt(abar) multiplies the eps error by
sqrt((1 - abar) / abar), 2.3 at n = 600 and 14.6 at n = 999 of this
schedule, so sampling from pure noise needs an eps error below ~1 % at the
highest noise levels. The tiny model overfitting one pair for 600 CPU steps
stays near 17 % eps error (x0 error 2.4x the latent at n = 999; DDIM from
noise misses by 100-200 %); with v the x0 error at n = 999 is at most the v
error (there ~12 %, DDIM from noise within 10 %). The paper preset keeps eps.

Classifier-free guidance uses eq. 5's form
    eps_hat = (1 + w) eps(z, c) - w eps(z, null) + u sigma_n grad_z L_g
so w = 0 is the plain conditional model. The motion self-guidance for loops
L_g = |F_end - F_start|_1 + |dF_end - dF_start|_1 is evaluated on the
predicted spectral volume (x0 prediction -> VAE decoder -> denormalization
-> inverse FFT), with self-recurrence (re-noise and repeat a step).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch

from gdyn_backend import spectral
from gdyn_backend.progress import Progress

EpsFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class DiffusionConfig:
    """The LDM noise schedule ("scaled linear" betas over 1000 steps) and what the U-Net predicts."""

    num_train_steps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    prediction: str = "epsilon"    # what the U-Net predicts: "epsilon" (paper) or "v"

    def __post_init__(self):
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {self.prediction!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DiffusionConfig":
        return cls(**d)


PREDICTIONS = ("epsilon", "v")
DIFFUSION_CONFIGS = {
    "tiny": DiffusionConfig(prediction="v"),   # CI overfit tests on a CPU (see the module docstring)
    "paper": DiffusionConfig(),                # LDM / the paper: eps prediction
}


def alphas_cumprod(cfg: DiffusionConfig) -> torch.Tensor:
    """alpha-bar_n for n = 0..N-1, float64 [N]."""
    betas = torch.linspace(math.sqrt(cfg.beta_start), math.sqrt(cfg.beta_end), cfg.num_train_steps,
                           dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


def q_sample(x0: torch.Tensor, noise: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
    """Noisy latents z_n = sqrt(abar) x0 + sqrt(1 - abar) eps; abar [B] broadcast over the rest."""
    a = abar.to(x0.dtype).reshape(-1, *([1] * (x0.ndim - 1)))
    return a.sqrt() * x0 + (1.0 - a).sqrt() * noise


def _per_sample(abar: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return abar.to(like).reshape(-1, *([1] * (like.ndim - 1)))


def training_target(x0: torch.Tensor, noise: torch.Tensor, abar: torch.Tensor, prediction: str) -> torch.Tensor:
    """What the U-Net learns to output for z_n = q_sample(x0, noise, abar): eps, or
    v = sqrt(abar) eps - sqrt(1 - abar) x0. abar [B]; x0, noise [B, ...]."""
    if prediction == "epsilon":
        return noise
    a = _per_sample(abar, x0)
    return a.sqrt() * noise - (1.0 - a).sqrt() * x0


def epsilon_fn(net: EpsFn, cfg: DiffusionConfig) -> EpsFn:
    """The denoiser `net` (output per `cfg.prediction`) as an eps predictor:
    eps = sqrt(abar) v + sqrt(1 - abar) z for v prediction."""
    if cfg.prediction == "epsilon":
        return net
    abar = alphas_cumprod(cfg).float()

    def eps_fn(z, t, image, conditioned):
        a = _per_sample(abar[t.cpu()], z)
        return a.sqrt() * net(z, t, image, conditioned) + (1.0 - a).sqrt() * z

    return eps_fn


def ddim_timesteps(num_train_steps: int, steps: int) -> list[int]:
    """`steps` diffusion steps from N-1 down to 0, evenly spaced (descending)."""
    if not 1 <= steps <= num_train_steps:
        raise ValueError(f"steps must be in 1..{num_train_steps}, got {steps}")
    return [int(round(x)) for x in np.linspace(num_train_steps - 1, 0, steps)]


def predict_x0(z: torch.Tensor, eps: torch.Tensor, abar: float) -> torch.Tensor:
    return (z - math.sqrt(1.0 - abar) * eps) / math.sqrt(abar)


def ddim_step(z: torch.Tensor, eps: torch.Tensor, abar: float, abar_prev: float) -> torch.Tensor:
    """Deterministic DDIM (eta = 0) update z_n -> z_{n-1}."""
    x0 = predict_x0(z, eps, abar)
    return math.sqrt(abar_prev) * x0 + math.sqrt(1.0 - abar_prev) * eps


def renoise(z_prev: torch.Tensor, abar: float, abar_prev: float, noise: torch.Tensor) -> torch.Tensor:
    """Self-recurrence: diffuse z_{n-1} forward again to z_n (universal guidance)."""
    ratio = abar / abar_prev
    return math.sqrt(ratio) * z_prev + math.sqrt(1.0 - ratio) * noise


def cfg_eps(eps_fn: EpsFn, z: torch.Tensor, t: torch.Tensor, image: torch.Tensor, w: float) -> torch.Tensor:
    """(1 + w) eps(z, c) - w eps(z, null); w = 0 runs (and returns) only the conditional model."""
    b = z.shape[0]
    if w == 0:
        return eps_fn(z, t, image, torch.ones(b, device=z.device))
    flags = torch.cat([torch.ones(b, device=z.device), torch.zeros(b, device=z.device)])
    both = eps_fn(torch.cat([z, z]), torch.cat([t, t]), torch.cat([image, image]), flags)
    cond, uncond = both[:b], both[b:]
    return (1.0 + w) * cond - w * uncond


# ---------------------------------------------------------------------------
# Motion textures in torch (for the loop guidance)


@dataclass(frozen=True)
class LoopGuidance:
    """Motion self-guidance for seamless loops of `loop_frames` frames at `fps`.

    The loop shows frames 0..N-1 and then frame 0 again, so "F_T" of eq. 5 is
    F at frame N (N / fps seconds) and "F_1" is F at frame 0; velocities are
    one-frame differences. `decode` maps x0 latents [B, K, C, h, w] to
    amplitudes [B, K, 4, H, W] in pixels (decoder + denormalization).
    """

    weight: float                      # u
    decode: Callable[[torch.Tensor], torch.Tensor]
    frequencies_hz: np.ndarray         # [K] Hz
    fps: float
    loop_frames: int
    recurrences: int = 2

    def loss(self, amplitude: torch.Tensor) -> torch.Tensor:
        """Per-sample eq. 5 loss summed over the batch; means over pixels, in pixels."""
        return loop_seam(amplitude, self.frequencies_hz, self.fps, self.loop_frames).sum()


def loop_seam(amplitude: torch.Tensor, frequencies_hz, fps: float, loop_frames: int) -> torch.Tensor:
    """Seam of an N-frame loop, [B]: mean |F_N - F_0| + mean |(F_N - F_{N-1}) - (F_1 - F_0)|, pixels.

    amplitude: [B, K, 4, H, W] in pixels.
    """
    n = int(loop_frames)
    times = np.array([0, 1, n - 1, n], np.float64) / float(fps)
    f = spectral.texture_from_amplitudes(amplitude, frequencies_hz, times)        # [B, 4, 2, H, W]
    position = (f[:, 3] - f[:, 0]).abs().flatten(1).mean(1)
    velocity = ((f[:, 3] - f[:, 2]) - (f[:, 1] - f[:, 0])).abs().flatten(1).mean(1)
    return position + velocity


def sample_ddim(eps_fn: EpsFn, noise: torch.Tensor, image: torch.Tensor, cfg: DiffusionConfig,
                steps: int = 250, guidance: float = 1.75, loop: LoopGuidance | None = None,
                generator: torch.Generator | None = None, progress: Progress | None = None) -> torch.Tensor:
    """DDIM from z_N = `noise` [B, K, C, h, w] to clean latents z_0 (same shape).

    image: conditioning image at latent size [B, 3, h, w] in [-1, 1].
    guidance: classifier-free weight w. loop: motion self-guidance or None.
    generator: source of the self-recurrence noise (seeded for repeatability).
    """
    abar = alphas_cumprod(cfg)
    timesteps = ddim_timesteps(cfg.num_train_steps, steps)
    progress = progress or Progress()
    progress.start("sampling", len(timesteps))
    z = noise
    for i, n in enumerate(timesteps):
        a = float(abar[n])
        a_prev = float(abar[timesteps[i + 1]]) if i + 1 < len(timesteps) else 1.0
        t = torch.full((z.shape[0],), n, device=z.device, dtype=torch.long)
        repeats = 1 + (loop.recurrences if loop is not None and loop.weight > 0 else 0)
        for r in range(repeats):
            if loop is not None and loop.weight > 0:
                with torch.enable_grad():
                    zg = z.detach().requires_grad_(True)
                    eps = cfg_eps(eps_fn, zg, t, image, guidance)
                    loss = loop.loss(loop.decode(predict_x0(zg, eps, a)))
                    grad, = torch.autograd.grad(loss, zg)
                eps = eps.detach() + loop.weight * math.sqrt(1.0 - a) * grad
            else:
                with torch.no_grad():
                    eps = cfg_eps(eps_fn, z, t, image, guidance)
            z_prev = ddim_step(z.detach(), eps, a, a_prev)
            if r + 1 < repeats:
                z = renoise(z_prev, a, a_prev, torch.randn(z.shape, generator=generator, device="cpu").to(z))
        z = z_prev
        progress.advance()
    return z.detach()
