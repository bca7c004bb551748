"""Bench section `model`: DDIM sampling time and training throughput of the motion model.

Full mode uses the paper-size networks (U-Net 224 channels with frequency
attention, KL-f4 VAE) at 256x160 motion, K = 16, one sample with
classifier-free guidance (two U-Net passes per step). On a GPU it times
several steps; on a CPU one step is timed and 250 steps are extrapolated
(said in the note). Quick mode uses the tiny CI networks at 32x20.
"""

from __future__ import annotations

import time

import torch

from gdyn_backend.bench import best_time
from gdyn_backend.device import torch_device
from gdyn_backend.model.diffusion import DiffusionConfig, alphas_cumprod, cfg_eps, ddim_step, q_sample
from gdyn_backend.model.training import autocast
from gdyn_backend.model.unet import UNET_CONFIGS, MotionUNet
from gdyn_backend.model.vae import VAE_CONFIGS, SpectralVAE

SECTION = "model"
BANDS = 16


def run(table, quick: bool) -> None:
    device = torch_device()
    preset = "tiny" if quick else "paper"
    width, height = (32, 20) if quick else (256, 160)
    vae = SpectralVAE(VAE_CONFIGS[preset]).to(device).eval()
    unet = MotionUNet(UNET_CONFIGS[preset].with_frequency_attention()).to(device).eval()
    h, w = vae.latent_size(height, width)
    params = sum(p.numel() for p in unet.parameters()) / 1e6
    where = torch.cuda.get_device_name(0) if device.type == "cuda" else "CPU (no GPU in this run)"
    label = f"{preset} U-Net ({params:.1f}M params), {width}x{height}, K={BANDS}, {where}"
    gpu = device.type == "cuda"
    repeats, warmup = (3, 1) if gpu else (2, 1) if quick else (1, 0)

    z = torch.randn(1, BANDS, 4, h, w, device=device)
    image = torch.rand(1, 3, h, w, device=device) * 2 - 1
    t = torch.full((1,), 500, device=device, dtype=torch.long)
    abar = alphas_cumprod(DiffusionConfig())

    def step():
        with torch.no_grad(), autocast(device):
            eps = cfg_eps(unet, z, t, image, 1.75)
            ddim_step(z, eps.float(), float(abar[500]), float(abar[499]))
        if gpu:
            torch.cuda.synchronize()

    per_step = best_time(step, repeats, warmup)
    table.add(SECTION, "DDIM step with CFG (s)", f"{per_step:.3f}", label)
    extrap = "" if gpu else "; extrapolated from the timed step (CPU)"
    table.add(SECTION, "250 DDIM steps (s)", f"{250 * per_step:.1f}", f"{label}{extrap}")

    def decode():
        with torch.no_grad(), autocast(device):
            vae.decode(z.flatten(0, 1), (height, width))
        if gpu:
            torch.cuda.synchronize()

    vae_params = sum(p.numel() for p in vae.parameters()) / 1e6
    table.add(SECTION, "VAE decode of K bands (s)", f"{best_time(decode, repeats, warmup):.3f}",
              f"{preset} VAE ({vae_params:.1f}M params), {width}x{height}, K={BANDS}, {where}")

    # Training throughput, stage 1 (no frequency attention, all weights trained).
    train_unet = MotionUNet(UNET_CONFIGS[preset]).to(device).train()
    opt = torch.optim.AdamW(train_unet.parameters(), lr=1e-4)
    batch = 4 if gpu else 1
    x0 = torch.randn(batch, BANDS, 4, h, w, device=device)
    img = torch.rand(batch, 3, h, w, device=device) * 2 - 1
    abar_dev = abar.float().to(device)

    def train_step():
        tt = torch.randint(0, 1000, (batch,), device=device)
        noise = torch.randn_like(x0)
        with autocast(device):
            eps = train_unet(q_sample(x0, noise, abar_dev[tt]), tt, img, torch.ones(batch, device=device))
        loss = (eps.float() - noise).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if gpu:
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    train_time = best_time(train_step, repeats, warmup)
    table.add(SECTION, "LDM training throughput (samples/s)", f"{batch / train_time:.3f}",
              f"stage 1, batch {batch} x {BANDS} bands, {label}; "
              f"{'bf16 autocast' if gpu and torch.cuda.is_bf16_supported() else 'float32'}; "
              f"bench wall {time.perf_counter() - t0:.0f}s")
