"""Training loops of the two model stages: the spectral VAE and the denoiser.

One process (`gdyn train ...`) or many (`torchrun --standalone
--nproc_per_node N -m gdyn_backend train ...`): with WORLD_SIZE > 1 the
process group is set up from the environment (NCCL on CUDA, gloo on CPU),
each rank reads its part of every global batch (DistributedSampler's
shuffle, split by rank) and gradients are averaged by DDP. N processes with
`batch_size` B compute what one process with batch N*B does (tested to
float rounding, tests/test_distributed_training.py): every random draw of a
step is a function of (seed, step, sample index) only (`StepNoise`), the
networks have no batch statistics (GroupNorm) and every loss is a mean over
equal per-process batches. Only rank 0 writes the run folder. On a CUDA GPU
with bf16 support the forward passes run under bf16 autocast (weights and
optimizer stay float32).

A rerun of the same command resumes from state.safetensors at the very
batch and random draws the uninterrupted run would have used next.

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

import numpy as np
import torch
import torch.nn.functional as F

from gdyn_backend.device import torch_device
from gdyn_backend.errors import UserError
from gdyn_backend.model.checkpoint import (MotionModel, load_model, load_training_state, save_model,
                                           save_training_state)
from gdyn_backend.model.data import SpectralPairs, write_json
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


class StepNoise:
    """The random draws of one training step, per sample of this process's batch.

    Sample i's draws at step s come from a generator seeded by (seed, s, i),
    i its index in the dataset, so they do not depend on which process holds
    the sample or on how the global batch is split, and a resumed run draws
    what the uninterrupted run would have. Each loss draws in a fixed order.
    """

    def __init__(self, seed: int, step: int, indices: torch.Tensor, device: torch.device):
        self._generators = [torch.Generator().manual_seed(_sample_seed(seed, step, int(i))) for i in indices]
        self.device = device

    def normal(self, *shape: int) -> torch.Tensor:
        """Standard normal draws [B, *shape]."""
        return self._stack([torch.randn(shape, generator=g) for g in self._generators])

    def uniform(self) -> torch.Tensor:
        """One draw in [0, 1) per sample, [B]."""
        return self._stack([torch.rand((), generator=g) for g in self._generators])

    def integers(self, high: int) -> torch.Tensor:
        """One integer in [0, high) per sample, [B] int64."""
        return self._stack([torch.randint(high, (), generator=g) for g in self._generators])

    def _stack(self, draws: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(draws).to(self.device)


def _sample_seed(seed: int, step: int, index: int) -> int:
    """A 64-bit generator seed mixed from (seed, step, sample index) (numpy's SeedSequence hash)."""
    low, high = np.random.SeedSequence((seed, step, index)).generate_state(2, np.uint32)
    return int(high) << 32 | int(low)


class _Indexed(torch.utils.data.Dataset):
    """A dataset whose items carry their index first: (index, *item)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        return (i, *self.dataset[i])


class _StepBatches(torch.utils.data.Sampler):
    """This process's batches of dataset indices from step `start_step` on, without end.

    Epoch e is `sampler`'s (seed, e) shuffle (a DistributedSampler: the same
    permutation on every rank, rank r taking every world-th index from r);
    step s is batch s mod n of epoch s div n, n = batches per epoch, so a
    resumed run continues inside the epoch where it stopped.
    """

    def __init__(self, sampler, batch_size: int, start_step: int):
        self.sampler, self.batch_size, self.start_step = sampler, batch_size, start_step

    def __iter__(self):
        per_epoch = max(1, len(self.sampler) // self.batch_size)
        epoch, position = divmod(self.start_step, per_epoch)
        while True:
            self.sampler.set_epoch(epoch)
            order = list(self.sampler)
            for b in range(position, per_epoch):
                yield order[b * self.batch_size:(b + 1) * self.batch_size]
            epoch, position = epoch + 1, 0


def _batches(dataset, cfg: TrainConfig, dist_info: Dist, start_step: int):
    """Endless (indices [B], images, volumes) of this process from `start_step` on (`_StepBatches`)."""
    from torch.utils.data import DataLoader, DistributedSampler

    sampler = DistributedSampler(dataset, num_replicas=dist_info.world, rank=dist_info.rank,
                                 shuffle=True, seed=cfg.seed, drop_last=len(dataset) >= dist_info.world)
    batch = min(cfg.batch_size, max(1, len(sampler)))
    loader = DataLoader(_Indexed(dataset), batch_sampler=_StepBatches(sampler, batch, start_step),
                        num_workers=cfg.workers, pin_memory=dist_info.device.type == "cuda",
                        persistent_workers=cfg.workers > 0)
    for indices, images, volumes in loader:
        yield indices, images.to(dist_info.device, non_blocking=True), volumes.to(dist_info.device, non_blocking=True)


def _wrap(module: torch.nn.Module, dist_info: Dist) -> torch.nn.Module:
    if dist_info.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        ids = [dist_info.device.index] if dist_info.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)
    return module


def _run(cfg: TrainConfig, dataset: SpectralPairs, module: torch.nn.Module, params, loss_fn, make_model, dist_info: Dist,
         progress: Progress, run_config: dict) -> Path | None:
    """Shared loop: resume, step, log, save; returns the model file (None on ranks other than 0).

    loss_fn(model, images, volumes, noise: StepNoise) -> dict of scalar tensors ('loss' first).
    """
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
        write_json(out / "config.json", run_config)
    else:
        progress = Progress()  # one progress bar: rank 0's
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
        indices, images, volumes = next(batches)
        with autocast(dist_info.device):
            parts = loss_fn(wrapped, images, volumes, StepNoise(cfg.seed, step, indices, dist_info.device))
        optimizer.zero_grad(set_to_none=True)
        parts["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        step += 1
        seen += images.shape[0] * dist_info.world
        progress.advance()
        if step % cfg.log_every == 0 or step == cfg.steps:
            rate = seen / max(time.perf_counter() - t0, 1e-9)
            means = _all_reduce_mean(torch.stack([v.detach().float() for v in parts.values()]), dist_info)
            log({"step": step, **{k: f"{float(v):.6f}" for k, v in zip(parts, means)},
                 "samples_per_s": f"{rate:.3f}", "lr": cfg.lr})
            t0, seen = time.perf_counter(), 0
        if step % cfg.save_every == 0 or step == cfg.steps:
            save()
    if step == 0 or not (out / "model.safetensors").exists():
        save()
    _finish_distributed(dist_info)
    return out / "model.safetensors" if dist_info.main else None


def _finish_distributed(dist_info: Dist) -> None:
    """Wait until rank 0 has written the run folder, then leave the process group."""
    if dist_info.world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()


def train_vae(cfg: TrainConfig, progress: Progress | None = None) -> Path | None:
    """Train the spectral VAE on DATA's normalized band maps; returns the model file (None on ranks > 0)."""
    dist_info = setup_distributed()
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    dataset = SpectralPairs(cfg.data)
    if cfg.preset not in VAE_CONFIGS:
        raise UserError(f"unknown --preset {cfg.preset!r}; choose from {sorted(VAE_CONFIGS)}")
    vae = SpectralVAE(VAE_CONFIGS[cfg.preset]).to(dist_info.device)
    latent_shape = (vae.config.latent_channels, *vae.latent_size(dataset.info.height, dataset.info.width))

    def loss_fn(model, images, volumes, noise: StepNoise):
        x = volumes.flatten(0, 1)                        # [B*K, 4, H, W]
        eps = noise.normal(volumes.shape[1], *latent_shape).flatten(0, 1)
        recon, mean, logvar = model(x, noise=eps)
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


def train_ldm(cfg: TrainConfig, progress: Progress | None = None) -> Path | None:
    """Train the denoiser (stage "frequency" or "attention"); returns the model file (None on ranks > 0)."""
    if cfg.stage not in STAGES:
        raise UserError(f"--stage must be one of {STAGES}, got {cfg.stage!r}")
    dist_info = setup_distributed()
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
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

    def loss_fn(model, images, volumes, noise: StepNoise):
        z0 = encode_latents(vae, volumes, latent_scale)
        t = noise.integers(diffusion.num_train_steps)
        eps = noise.normal(*z0.shape[1:])
        zt = q_sample(z0, eps, abar[t])
        keep = (noise.uniform() >= cfg.cond_dropout).float()
        out = model(zt, t, condition_image(images, z0.shape[-2:]), keep)
        return {"loss": F.mse_loss(out.float(), training_target(z0, eps, abar[t], diffusion.prediction))}

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
