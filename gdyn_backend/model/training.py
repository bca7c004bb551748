"""Training loops of the two model stages: the spectral VAE and the denoiser.

One process (`gdyn train ...`) or many (`torchrun --nproc_per_node N -m
gdyn_backend train ...`): with WORLD_SIZE > 1 the process group is set up
from the environment, each rank reads its part of the data
(DistributedSampler) and gradients are averaged by DDP. On a CUDA GPU with
bf16 support the forward passes run under bf16 autocast (weights and
optimizer stay float32).

A run folder holds:
    state.safetensors   weights + AdamW state + step (resume by rerunning the command)
    model.safetensors   the model file for sampling (see `checkpoint`)
    config.json         the run's settings and the network configs
    log.csv             step, losses, samples/s, learning rate
Progress lines go to stderr every `log_every` steps.

Denoiser stages (paper §4.2): "frequency" trains the U-Net on every band as
its own map with a band embedding (no frequency attention); "attention"
loads a stage-1 model, adds the frequency attention layers (zero-initialised,
so training starts at the stage-1 model) and trains only them.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from gdyn_backend.device import torch_device
from gdyn_backend.errors import UserError
from gdyn_backend.io import atomic_path
from gdyn_backend.model.checkpoint import (MotionModel, load_model, load_training_state, save_model,
                                           save_training_state)
from gdyn_backend.model.data import SpectralPairs
from gdyn_backend.model.diffusion import DIFFUSION_CONFIGS, alphas_cumprod, q_sample, training_target
from gdyn_backend.model.unet import UNET_CONFIGS, MotionUNet, condition_image, load_stage_one
from gdyn_backend.model.vae import VAE_CONFIGS, SpectralVAE, vae_loss
from gdyn_backend.progress import Progress

STAGES = ("frequency", "attention")


@dataclass
class TrainConfig:
    """Settings of one run (saved in config.json)."""

    kind: str                      # "vae" or "ldm"
    data: str                      # a `gdyn dataset` folder
    out: str                       # run folder
    preset: str = "paper"          # network size: "tiny" or "paper"
    steps: int = 100_000
    batch_size: int = 8            # samples (each = K band maps) per process
    lr: float = 1e-4
    save_every: int = 1000
    log_every: int = 50
    seed: int = 0
    workers: int = 2
    vae: str | None = None         # ldm stage "frequency": the trained VAE's model.safetensors
    stage: str = "frequency"       # ldm: "frequency" or "attention"
    init: str | None = None        # ldm stage "attention": the stage-1 model.safetensors
    cond_dropout: float = 0.1      # probability of the null condition (classifier-free guidance)


@dataclass
class Dist:
    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed() -> Dist:
    """Process group from torchrun's environment when WORLD_SIZE > 1, else one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        import torch.distributed as dist

        local = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            torch.cuda.set_device(local)
            device = torch.device("cuda", local)
        else:
            device = torch.device("cpu")
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return Dist(dist.get_rank(), world, device)
    return Dist(0, 1, torch_device())


def autocast(device: torch.device):
    """bf16 autocast on CUDA GPUs that support it; otherwise full float32."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def _all_reduce_mean(value: torch.Tensor, dist_info: Dist) -> torch.Tensor:
    if dist_info.world > 1:
        import torch.distributed as dist

        dist.all_reduce(value)
        value = value / dist_info.world
    return value


class _Logger:
    """stderr lines and log.csv rows (main process only)."""

    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled, self.fields = path, enabled, None

    def __call__(self, row: dict) -> None:
        if not self.enabled:
            return
        new = not self.path.exists()
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)
        print("train " + " ".join(f"{k}={v}" for k, v in row.items()), file=sys.stderr, flush=True)


def _batches(dataset, cfg: TrainConfig, dist_info: Dist, start_step: int):
    """Endless batches; the shuffle of epoch e is seeded by (seed, e) on every rank."""
    from torch.utils.data import DataLoader, DistributedSampler

    sampler = DistributedSampler(dataset, num_replicas=dist_info.world, rank=dist_info.rank,
                                 shuffle=True, seed=cfg.seed, drop_last=len(dataset) >= dist_info.world)
    batch = min(cfg.batch_size, max(1, len(sampler)))
    loader = DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=cfg.workers,
                        drop_last=True, pin_memory=dist_info.device.type == "cuda",
                        persistent_workers=cfg.workers > 0)
    epoch = start_step // max(1, len(loader))
    while True:
        sampler.set_epoch(epoch)
        for images, volumes in loader:
            yield images.to(dist_info.device, non_blocking=True), volumes.to(dist_info.device, non_blocking=True)
        epoch += 1


def _wrap(module: torch.nn.Module, dist_info: Dist) -> torch.nn.Module:
    if dist_info.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        ids = [dist_info.device.index] if dist_info.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)
    return module


def _run(cfg: TrainConfig, dataset: SpectralPairs, module: torch.nn.Module, params, loss_fn, make_model, dist_info: Dist,
         progress: Progress, run_config: dict) -> Path:
    """Shared loop: resume, step, log, save. loss_fn(batch) -> dict of scalar tensors ('loss' first)."""
    out = Path(cfg.out)
    state_path = out / "state.safetensors"
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    step = 0
    saved = saved_run_config(out)
    if saved is not None:
        for key in ("kind", "preset", "stage"):
            if saved["train"].get(key) != run_config["train"].get(key):
                raise UserError(f"{out} holds a run with {key}={saved['train'].get(key)}; "
                                "use a new --out folder or the same settings to resume")
        step, saved = load_training_state(state_path, module, optimizer)
        run_config = {**saved, "train": {**saved["train"], "steps": cfg.steps}}
    if dist_info.main:
        out.mkdir(parents=True, exist_ok=True)
        with atomic_path(out / "config.json") as tmp:
            tmp.write_text(json.dumps(run_config, indent=1))
    wrapped = _wrap(module, dist_info)
    log = _Logger(out / "log.csv", dist_info.main)
    progress.start("training", max(cfg.steps - step, 0))

    def save():
        if dist_info.main:
            save_training_state(state_path, module, optimizer, step, run_config)
            save_model(make_model(step), out / "model.safetensors")

    batches = _batches(dataset, cfg, dist_info, step)
    t0, seen = time.perf_counter(), 0
    while step < cfg.steps:
        images, volumes = next(batches)
        with autocast(dist_info.device):
            parts = loss_fn(wrapped, images, volumes)
        optimizer.zero_grad(set_to_none=True)
        parts["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        step += 1
        seen += images.shape[0] * dist_info.world
        progress.advance()
        if step % cfg.log_every == 0 or step == cfg.steps:
            rate = seen / max(time.perf_counter() - t0, 1e-9)
            log({"step": step, **{k: f"{float(v.detach()):.6f}" for k, v in parts.items()},
                 "samples_per_s": f"{rate:.3f}", "lr": cfg.lr})
            t0, seen = time.perf_counter(), 0
        if step % cfg.save_every == 0 or step == cfg.steps:
            save()
    if step == 0 or not (out / "model.safetensors").exists():
        save()
    return out / "model.safetensors"


def train_vae(cfg: TrainConfig, progress: Progress | None = None) -> Path:
    """Train the spectral VAE on DATA's normalized band maps; returns the model file."""
    dist_info = setup_distributed()
    torch.manual_seed(cfg.seed + dist_info.rank)
    dataset = SpectralPairs(cfg.data)
    if cfg.preset not in VAE_CONFIGS:
        raise UserError(f"unknown --preset {cfg.preset!r}; choose from {sorted(VAE_CONFIGS)}")
    vae = SpectralVAE(VAE_CONFIGS[cfg.preset]).to(dist_info.device)

    def loss_fn(model, images, volumes):
        x = volumes.flatten(0, 1)                        # [B*K, 4, H, W]
        recon, mean, logvar = model(x)
        return vae_loss(x, recon.float(), mean.float(), logvar.float())

    def make_model(step):
        return MotionModel(vae, dataset.normalizer, dataset.info, stage="vae", step=step)

    run_config = {"train": _public(cfg), "vae_config": vae.config.to_dict(), "data": asdict(dataset.info)}
    return _run(cfg, dataset, vae, list(vae.parameters()), loss_fn, make_model, dist_info, progress or Progress(),
                run_config)


def encode_latents(vae: SpectralVAE, volumes: torch.Tensor, latent_scale: float) -> torch.Tensor:
    """Normalized volumes [B, K, 4, H, W] -> scaled latent means [B, K, 4, h, w]."""
    b, k = volumes.shape[:2]
    with torch.no_grad():
        mean, _ = vae.encode(volumes.flatten(0, 1))
    return (mean * latent_scale).reshape(b, k, *mean.shape[1:]).float()


def train_ldm(cfg: TrainConfig, progress: Progress | None = None) -> Path:
    """Train the denoiser (stage "frequency" or "attention"); returns the model file."""
    if cfg.stage not in STAGES:
        raise UserError(f"--stage must be one of {STAGES}, got {cfg.stage!r}")
    dist_info = setup_distributed()
    torch.manual_seed(cfg.seed + dist_info.rank)
    dataset = SpectralPairs(cfg.data)
    if cfg.stage == "frequency":
        if not cfg.vae:
            raise UserError("stage 'frequency' needs --vae RUN/model.safetensors from `gdyn train vae`")
        base = load_model(cfg.vae, dist_info.device)
        if cfg.preset not in UNET_CONFIGS:
            raise UserError(f"unknown --preset {cfg.preset!r}; choose from {sorted(UNET_CONFIGS)}")
        unet_config = UNET_CONFIGS[cfg.preset]
        unet_config = replace(unet_config, num_bands=dataset.info.num_bands,
                              latent_channels=base.vae.config.latent_channels)
        unet = MotionUNet(unet_config).to(dist_info.device)
        params = list(unet.parameters())
        diffusion = DIFFUSION_CONFIGS[cfg.preset]
        latent_scale = None
    else:
        if not cfg.init:
            raise UserError("stage 'attention' needs --init RUN/model.safetensors from stage 'frequency'")
        base = load_model(cfg.init, dist_info.device, require_unet=True)
        unet = MotionUNet(base.unet.config.with_frequency_attention()).to(dist_info.device)
        load_stage_one(unet, base.unet.state_dict())
        unet.requires_grad_(False)
        params = unet.frequency_attention_parameters()
        for p in params:
            p.requires_grad_(True)
        diffusion = base.diffusion
        latent_scale = base.latent_scale
    if base.data.num_bands != dataset.info.num_bands or (base.data.width, base.data.height) != (
            dataset.info.width, dataset.info.height):
        raise UserError(f"the data ({dataset.info.width}x{dataset.info.height}, K={dataset.info.num_bands}) does not "
                        f"match the VAE/model ({base.data.width}x{base.data.height}, K={base.data.num_bands})")
    vae = base.vae
    scales = torch.as_tensor(base.normalizer.scales)
    if not torch.allclose(scales, torch.as_tensor(dataset.normalizer.scales)):
        print("train: note: the data's normalization scales differ from the VAE's; using the VAE's",
              file=sys.stderr)
        dataset.normalizer = base.normalizer
    abar = alphas_cumprod(diffusion).float().to(dist_info.device)
    saved = saved_run_config(cfg.out)
    if latent_scale is None and saved is not None:
        latent_scale = float(saved["latent_scale"])
    if latent_scale is None:  # LDM: scale latents to unit variance, measured on the first batch
        images, volumes = next(iter(torch.utils.data.DataLoader(dataset, batch_size=min(len(dataset), 8))))
        std = encode_latents(vae, volumes.to(dist_info.device), 1.0).std()
        latent_scale = float(1.0 / _all_reduce_mean(std, dist_info).clamp_min(1e-6))

    def loss_fn(model, images, volumes):
        z0 = encode_latents(vae, volumes, latent_scale)
        b = z0.shape[0]
        t = torch.randint(0, diffusion.num_train_steps, (b,), device=z0.device)
        noise = torch.randn_like(z0)
        zt = q_sample(z0, noise, abar[t])
        keep = (torch.rand(b, device=z0.device) >= cfg.cond_dropout).float()
        out = model(zt, t, condition_image(images, z0.shape[-2:]), keep)
        return {"loss": F.mse_loss(out.float(), training_target(z0, noise, abar[t], diffusion.prediction))}

    def make_model(step):
        return MotionModel(vae, base.normalizer, base.data, unet, diffusion, latent_scale, cfg.stage, step)

    run_config = {"train": _public(cfg), "vae_config": vae.config.to_dict(), "unet_config": unet.config.to_dict(),
                  "diffusion_config": diffusion.to_dict(), "data": asdict(base.data), "latent_scale": latent_scale}
    return _run(cfg, dataset, unet, params, loss_fn, make_model, dist_info, progress or Progress(), run_config)


def _public(cfg: TrainConfig) -> dict:
    return asdict(cfg)


def saved_run_config(out) -> dict | None:
    """The run config stored in OUT/state.safetensors, or None when there is no state yet."""
    from safetensors import safe_open

    path = Path(out) / "state.safetensors"
    if not path.exists():
        return None
    with safe_open(str(path), framework="pt") as f:
        return json.loads((f.metadata() or {})["config"])
