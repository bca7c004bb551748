"""`gdyn train {vae,ldm,renderer}`: train the motion model stages or the learned renderer.

Single process, or many with torchrun (N processes with --batch-size B train as one with N*B):
    torchrun --standalone --nproc_per_node 8 -m gdyn_backend train ldm DATA -o RUN --vae VAE/model.safetensors
"""

from __future__ import annotations

import argparse
import math
from dataclasses import replace
from pathlib import Path

from gdyn_backend.cli.arguments import add_seed, add_videos_input, parse_size
from gdyn_backend.errors import UserError
from gdyn_backend.progress import Progress, terminal_bar


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="DATA_DIR made by `gdyn dataset`")
    p.add_argument("-o", "--out", required=True, help="run folder (rerun the same command to resume)")
    p.add_argument("--preset", default="paper", choices=["tiny", "paper"],
                   help="network size (default paper; tiny is for tests)")
    p.add_argument("--steps", type=int, default=100_000, help="total optimizer steps (default 100000)")
    p.add_argument("--batch-size", type=int, default=8, help="samples per process and step (default 8)")
    p.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate (default 1e-4)")
    p.add_argument("--save-every", type=int, default=1000, help="steps between checkpoints (default 1000)")
    p.add_argument("--log-every", type=int, default=50, help="steps between log lines (default 50)")
    add_seed(p)
    p.add_argument("--workers", type=int, default=2, help="data loader processes (default 2)")


def _check_options(args, counts: tuple[str, ...]) -> None:
    """UserError unless each option in `counts` (e.g. "batch_size") is at least 1 and --lr is a
    positive finite number; checked before any data is read."""
    for name in counts:
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise UserError(f"--lr must be a positive number, got {args.lr}")


def _config(args, kind: str):
    from gdyn_backend.model.training import TrainConfig

    _check_options(args, ("steps", "batch_size", "save_every", "log_every"))
    if args.workers < 0:
        raise UserError(f"--workers must be 0 or more, got {args.workers}")
    extra = {}
    if kind == "ldm":
        if not 0 <= args.cond_dropout < 1:
            raise UserError(f"--cond-dropout must be in [0, 1), got {args.cond_dropout}")
        extra = {"vae": args.vae, "stage": args.stage, "init": args.init, "cond_dropout": args.cond_dropout}
    return TrainConfig(kind=kind, data=args.data, out=args.out, preset=args.preset, steps=args.steps,
                       batch_size=args.batch_size, lr=args.lr, save_every=args.save_every,
                       log_every=args.log_every, seed=args.seed, workers=args.workers, **extra)


def _report(path: Path | None) -> None:
    """The 'wrote' line, from the one process that wrote (rank 0 under torchrun)."""
    if path is not None:
        print(f"wrote {path}")


def run_vae(args) -> int:
    from gdyn_backend.model.training import train_vae

    path = train_vae(_config(args, "vae"), Progress(terminal_bar()))
    _report(path)
    return 0


def run_ldm(args) -> int:
    from gdyn_backend.model.training import train_ldm

    path = train_ldm(_config(args, "ldm"), Progress(terminal_bar()))
    _report(path)
    return 0


def _renderer_arguments(p: argparse.ArgumentParser) -> None:
    add_videos_input(p)
    p.add_argument("-o", "--output", type=Path, required=True, metavar="CHECKPOINT",
                   help="renderer checkpoint to write (.safetensors)")
    p.add_argument("--steps", type=int, default=5000, help="optimizer steps (default: 5000)")
    p.add_argument("--batch-size", type=int, default=8, help="examples per step (default: 8)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default: 1e-3)")
    p.add_argument("--size", default="256x160", help="training resolution WxH (default: 256x160)")
    p.add_argument("--crop", default="128x128", help="random crop WxH per example (default: 128x128)")
    p.add_argument("--window", type=int, default=30, help="frames per flow window (default: 30)")
    p.add_argument("--tiny", action="store_true", help="a very small network (tests, smoke runs)")
    p.add_argument("--plain", action="store_true",
                   help="the paper's plain synthesis network instead of a learned correction "
                        "on top of the default renderer")
    p.add_argument("--resume", type=Path, metavar="CHECKPOINT", help="continue from a checkpoint")
    add_seed(p)
    p.add_argument("--device", default=None, help="torch device (default: cuda if present, else cpu)")


def run_renderer(args) -> int:
    import numpy as np

    from gdyn_backend.device import torch_device
    from gdyn_backend.render.learned.checkpoint import load_checkpoint, save_checkpoint
    from gdyn_backend.render.learned.data import triples_from_folder
    from gdyn_backend.render.learned.network import TINY_CONFIG, RendererConfig
    from gdyn_backend.render.learned.training import train

    width, height = parse_size(args.size, "--size")
    crop = parse_size(args.crop, "--crop")
    _check_options(args, ("steps", "batch_size"))
    if args.window < 2:
        raise UserError(f"--window must be at least 2 frames, got {args.window}")
    model = load_checkpoint(args.resume)[0] if args.resume is not None else None
    progress = Progress(terminal_bar())
    triples = triples_from_folder(args.videos, width, height, args.window, progress)
    config = replace(TINY_CONFIG if args.tiny else RendererConfig(), residual=not args.plain)
    model, losses = train(triples, config, steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr,
                          crop=crop, seed=args.seed, device=torch_device(args.device), progress=progress,
                          model=model)
    head, tail = np.mean(losses[:50]), np.mean(losses[-50:])
    save_checkpoint(model, args.output, {"steps": str(len(losses)), "final_loss": f"{tail:.6f}",
                                         "examples": str(len(triples))})
    print(f"wrote {args.output}: {len(triples)} examples, {len(losses)} steps, loss {head:.4f} -> {tail:.4f}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("train", help="train the VAE, the denoiser (ldm) or the learned renderer",
                       description="Train on one GPU/CPU, or on many with torchrun (DDP). Checkpoints are "
                                   "safetensors; rerun the same command to resume.")
    stages = p.add_subparsers(dest="stage_kind", metavar="{vae,ldm,renderer}", required=True)
    vae = stages.add_parser("vae", help="spectral VAE (L1 + 0.2 gradient + 1e-6 KL)")
    _common(vae)
    vae.set_defaults(func=run_vae)
    ldm = stages.add_parser("ldm", help="latent diffusion U-Net, stage 'frequency' then 'attention'")
    _common(ldm)
    ldm.add_argument("--stage", choices=["frequency", "attention"], default="frequency",
                     help="frequency: U-Net per band with band embedding; attention: train only the "
                          "frequency attention layers of a frozen stage-1 model (default frequency)")
    ldm.add_argument("--vae", help="stage frequency: VAE run's model.safetensors")
    ldm.add_argument("--init", help="stage attention: stage-1 run's model.safetensors")
    ldm.add_argument("--cond-dropout", type=float, default=0.1,
                     help="probability of training on the null image, for guidance (default 0.1)")
    ldm.set_defaults(func=run_ldm)
    renderer = stages.add_parser("renderer", help="learned image-based renderer (paper §5)",
                                 description="Train on (start frame, target frame, flow) triples measured "
                                             "in the clips of VIDEOS; writes a safetensors checkpoint for "
                                             "gdyn animate --renderer-checkpoint.")
    _renderer_arguments(renderer)
    renderer.set_defaults(func=run_renderer)
