"""`gdyn train {vae,ldm,renderer}`: train the motion model stages or the learned renderer.

Single process, or many with torchrun:
    torchrun --nproc_per_node 8 -m gdyn_backend train ldm DATA -o RUN --vae VAE/model.safetensors
"""

from __future__ import annotations

import argparse

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
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="data loader processes (default 2)")


def _config(args, kind: str):
    from gdyn_backend.model.training import TrainConfig

    for name in ("steps", "batch_size", "save_every", "log_every"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    if not args.lr > 0 or args.workers < 0:
        raise UserError("--lr must be positive and --workers 0 or more")
    extra = {}
    if kind == "ldm":
        if not 0 <= args.cond_dropout < 1:
            raise UserError(f"--cond-dropout must be in [0, 1), got {args.cond_dropout}")
        extra = {"vae": args.vae, "stage": args.stage, "init": args.init, "cond_dropout": args.cond_dropout}
    return TrainConfig(kind=kind, data=args.data, out=args.out, preset=args.preset, steps=args.steps,
                       batch_size=args.batch_size, lr=args.lr, save_every=args.save_every,
                       log_every=args.log_every, seed=args.seed, workers=args.workers, **extra)


def run_vae(args) -> int:
    from gdyn_backend.model.training import train_vae

    path = train_vae(_config(args, "vae"), Progress(terminal_bar()))
    print(f"wrote {path}")
    return 0


def run_ldm(args) -> int:
    from gdyn_backend.model.training import train_ldm

    path = train_ldm(_config(args, "ldm"), Progress(terminal_bar()))
    print(f"wrote {path}")
    return 0


def run_renderer(args) -> int:
    try:
        from gdyn_backend.render.learned import train_from_args
    except ImportError as exc:
        raise UserError(f"the learned renderer is not available in this installation ({exc})") from None
    return int(train_from_args(args) or 0)


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
    renderer = stages.add_parser("renderer", help="learned image-based renderer (paper §5)")
    try:
        from gdyn_backend.render.learned import add_train_arguments
    except ImportError:
        renderer.description = "unavailable: gdyn_backend.render.learned could not be imported"
    else:
        add_train_arguments(renderer)
    renderer.set_defaults(func=run_renderer)
